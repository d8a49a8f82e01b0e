"""One pass over an image set scores one run or many: the evaluation itself.

``clearclip_seg.apis.evaluate`` is a pass of one run; the benchmark runner's
shared passes are passes of many. Each run of a pass keeps everything its own
evaluation has: its config (``steps.prepare``), its segmentor (built from its
config after the same seed, on one shared copy of the CLIP weights), its
benchmark's dataset and labels, its metric and its record (``steps`` and
``records.build_record``). What the runs of a pass share: the image batches and
the frozen blocks 0..L-2 of every window (``trunk.SharedTrunk``), computed for
the first run and replayed to the others on equal windows. So a run's record is
the same whether it ran alone or in a pass, but for ``created`` and ``timing``:
in a pass of several, ``wall_s`` is the run's share of the pass (the pass's
time / its runs) and ``shared_pass`` holds the number of runs, the pass's
``wall_s`` and the trunk calls computed, reused and missed.

One run's failure (its config, its model, an error while scoring it, its
record) does not stop the others: it is kept in ``run.error`` and left as a
failure marker next to where its record would be (``steps.write_failure``),
never as a complete record. What all runs share (the image loading, the image
lists) fails the whole pass.

The loop mirrors MMEngine's ``TestLoop``: per batch, ``model.test_step`` then
``evaluator.process`` (then the config's ``custom_hooks``, e.g. the
``--show-dir`` panels); at the end ``evaluator.evaluate(len(dataset))``, which
gathers the ranks' results when the pass runs under torchrun
(``launcher='pytorch'``, a pass of one run).
"""
import contextlib
import time
import types
from typing import Callable, Dict, List, Optional, Sequence

from .. import register_all_modules
from ..checks import DataError, check_launcher, check_show, one_line
from ..errors import ConfigError
from ..models.clip_loader import reuse_clip_models
from ..records import build_record
from . import steps
from .identity import as_plain, identity_diff
from .run import Run
from .share import ShareError, share_key
from .trunk import SharedTrunk, sharing_trunk


def run_pass(runs: Sequence[Run], launcher: str = 'none', show_dir: Optional[str] = None,
             show_n: Optional[int] = None, write: bool = True, log: Optional[Callable[[str], None]] = print,
             log_interval: Optional[int] = None) -> List[Optional[dict]]:
    """Evaluate runs that read the same images (and, when several, share the frozen blocks) in one pass.

    Args:
        runs: the runs; several must have the same share key (``share.share_key``).
        launcher: ``'none'``, or ``'pytorch'`` (torchrun) for a pass of one run.
        show_dir, show_n: save image | ground truth | prediction panels.
        write: write each record (and failure marker) to ``run.record`` (rank 0 only).
        log: progress (``Iter(test) [i/n]``, as MMEngine prints it) and summary lines; None: quiet.
        log_interval: batches between progress lines (default: the config's logger interval).

    Returns:
        The records, in the order of ``runs``: None for a failed run (its error in
        ``run.error``), and for every run on ranks other than 0.

    Raises:
        ShareError: the runs cannot share a pass (one line naming them).
        DataError: the shared image loading failed (every run of the pass is marked failed).
        ConfigError: a bad launcher or ``--show-n``.
    """
    register_all_modules()
    import torch
    from mmengine.device import get_device
    from mmengine.dist import get_rank, is_distributed
    from mmengine.registry import init_default_scope
    from mmengine.utils.dl_utils import set_multi_processing

    runs = list(runs)
    if not runs:
        return []
    check_launcher(launcher)
    check_show(show_dir, show_n)
    if launcher != 'none' and len(runs) > 1:
        raise ConfigError(f'--launcher {launcher}: a distributed pass scores one run, got {len(runs)}')
    log = log or (lambda line: None)
    for r in runs:
        r.error = None
        _guard(r, write, lambda r=r: steps.prepare(r, launcher, show_dir, show_n, write))
    alive = [r for r in runs if r.error is None]
    if len(runs) > 1:
        _check_same_key(alive)
    if not alive:
        return [None] * len(runs)

    cfg0 = alive[0].cfg
    if launcher != 'none':
        _init_dist(launcher, cfg0)
    rank0 = get_rank() == 0
    init_default_scope(cfg0.get('default_scope', 'mmseg'))
    env = cfg0.get('env_cfg') or {}
    set_multi_processing(**(env.get('mp_cfg') or {}), distributed=is_distributed())
    torch.backends.cudnn.benchmark = bool(env.get('cudnn_benchmark', False))

    # one data loader per distinct dataset (VOC21 and VOC20 read the same images with other labels)
    loaders: Dict[str, object] = {}
    data_key: Dict[int, str] = {}
    for r in alive:
        key = repr(sorted(as_plain(r.cfg.test_dataloader).items()))
        if key not in loaders:
            loaders[key] = _guard(r, write and rank0, lambda r=r: steps.build_dataloader(r.cfg))
        elif loaders[key] is None:  # its loader failed for an earlier run
            _guard(r, write and rank0, lambda: _raise(ConfigError(f'run {r.name}: its dataset failed to build')))
        data_key[id(r)] = key
    alive = [r for r in alive if r.error is None]
    _check_same_images(alive, {id(r): loaders[data_key[id(r)]].dataset for r in alive})

    built: Dict[int, tuple] = {}
    device = get_device()
    with reuse_clip_models():  # one copy of the weights (and of their digest) for all runs, for the whole pass
        for r in alive:
            dataset = loaders[data_key[id(r)]].dataset
            built[id(r)] = _guard(r, write and rank0, lambda r=r, dataset=dataset: _build(r, dataset, device))
        alive = [r for r in alive if r.error is None]
        if alive:
            _score(alive, loaders, data_key, built, log if rank0 else (lambda line: None),
                   log_interval, len(runs) > 1, write and rank0, runs)
    if not rank0:
        return [None] * len(runs)
    return [built.get(id(r), (None, None, None, None))[3] if r.error is None else None for r in runs]


def _raise(e):
    raise e


def _guard(run: Run, write: bool, step: Callable):
    """``step()``; an exception becomes the run's error and its failure marker (None is returned)."""
    if run.error is not None:
        return None
    try:
        return step()
    except Exception as e:  # one run's failure, whatever it is, must not stop the others
        run.error = e
        if write:
            steps.write_failure(run, e)
        return None


def _init_dist(launcher: str, cfg) -> None:
    import torch
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if launcher == 'pytorch' and not torch.cuda.is_available():
        dist.init_process_group('gloo')  # MMEngine's init calls torch.cuda.set_device
    else:  # as MMEngine's Runner starts it (the backend: gloo without a GPU, see steps.prepare_runtime)
        from mmengine.dist import init_dist
        init_dist(launcher, **dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {}))


def _check_same_key(runs: Sequence[Run]) -> None:
    keys = []
    for r in runs:
        key, why = share_key(r.cfg, r.identity['precision'])
        if key is None:
            raise ShareError(f'run {r.name} cannot share a pass: {why}')
        keys.append(key)
    for r, key in zip(runs[1:], keys[1:]):
        if key != keys[0]:
            diff = '; '.join(identity_diff(keys[0], key))
            raise ShareError(f'runs {runs[0].name} and {r.name} cannot share a pass: they differ '
                             f'before the last block ({diff})')


def image_paths(dataset) -> List[str]:
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def _check_same_images(runs: Sequence[Run], datasets: Dict[int, object]) -> None:
    """The datasets of a pass list the same images in the same order, or the pass is refused."""
    ref_paths, ref_name, seen = None, None, set()
    for r in runs:
        dataset = datasets[id(r)]
        if id(dataset) in seen:
            continue
        seen.add(id(dataset))
        paths = image_paths(dataset)
        name = r.cfg.get('benchmark') or r.name
        if ref_paths is None:
            ref_paths, ref_name = paths, name
            continue
        if paths != ref_paths:
            if len(paths) != len(ref_paths):
                what = f'{len(ref_paths)} vs {len(paths)} images'
            else:
                i = next(i for i, (a, b) in enumerate(zip(ref_paths, paths)) if a != b)
                what = f"image #{i}: '{ref_paths[i]}' vs '{paths[i]}'"
            raise ShareError(f'benchmarks {ref_name} and {name} were grouped as one image set but their '
                             f'datasets list different images ({what}); run them with --no-share')


def _build(run: Run, dataset, device: str) -> list:
    """[model, evaluator, hooks, record (filled once scored)] of one run."""
    model = steps.build_model(run.cfg, device)
    steps.check_vocabulary(model, dataset, run.cfg)
    return [model, steps.build_evaluator(run.cfg, dataset, run), steps.build_show_hooks(run.cfg), None]


def _score(runs: List[Run], loaders: dict, data_key: Dict[int, str], built: Dict[int, list], log,
           log_interval: Optional[int], shared: bool, write: bool, everyone: Sequence[Run]) -> None:
    """The loop over image batches (run after run on each, the trunk shared), then the records
    (``everyone``: all runs of the pass, for the summary line)."""
    from mmengine.dist import get_world_size

    keys = list(dict.fromkeys(data_key[id(r)] for r in runs))
    n = len(loaders[keys[0]])
    interval = log_interval or ((runs[0].cfg.get('default_hooks') or {}).get('logger') or {}).get('interval', 50)
    trunk = SharedTrunk()
    if shared:
        log(f'shared pass: {len(runs)} runs on {len(loaders[keys[0]].dataset)} images ({len(keys)} dataset(s)): '
            + ', '.join(r.name for r in runs))
    scored = list(runs)
    context = sharing_trunk([built[id(r)][0].encoder for r in runs], trunk) if shared else contextlib.nullcontext()
    t0 = time.perf_counter()
    try:
        with context:
            for idx, batches in enumerate(zip(*(loaders[k] for k in keys))):
                batch_of = dict(zip(keys, batches))
                _check_batch_images(batch_of, idx)
                for j, r in enumerate([r for r in runs if r.error is None]):
                    trunk.start_run(j)  # the first run still going records, the others replay
                    _guard(r, write, lambda r=r: _score_batch(r, built[id(r)], batch_of[data_key[id(r)]],
                                                               loaders[data_key[id(r)]], idx))
                trunk.end_batch()
                if all(r.error is not None for r in runs):
                    break
                if (idx + 1) % max(1, interval) == 0 or idx + 1 == n:
                    log(f'Iter(test) [{idx + 1:>{len(str(n))}}/{n}]')
    except Exception as e:  # the shared image loading failed: every run still going fails with it
        # a DataError raised in a DataLoader worker: its message without the worker's traceback
        error = DataError(one_line(e)) if isinstance(e, DataError) else e
        for r in runs:
            _guard(r, write, lambda: _raise(error))
        if error is e:
            raise
        raise error from None
    wall = time.perf_counter() - t0

    done = [r for r in runs if r.error is None]
    for r in done:
        model, evaluator, _, _ = built[id(r)]
        dataset = loaders[data_key[id(r)]].dataset

        def record(r=r, model=model, evaluator=evaluator, dataset=dataset):
            metrics = evaluator.evaluate(len(dataset))  # every rank calls it: it gathers the ranks' results
            if evaluator.metrics[0].format_only:  # predictions saved, nothing scored: no record
                return dict(format_only=True, predictions=evaluator.metrics[0].output_dir,
                            benchmark=r.cfg.get('benchmark'), num_images=len(dataset), wall_s=wall / len(scored))
            details = evaluator.metrics[0].details
            # a run's time is its share of the pass (the pass's own time is under shared_pass), so
            # images/s summed over a table's rows stays the machine's throughput
            rec = build_record(r.cfg, str(r.config), dict(r.options), model, dataset, metrics, details,
                               wall / len(scored), get_world_size(), run_info=r.info())
            rec['config']['identity'] = r.identity  # what the benchmark runner compares before skipping a run
            if shared:
                rec['timing']['shared_pass'] = dict(runs=len(scored), wall_s=wall, trunk_calls=trunk.stats())
            steps.check_finite(rec, r)
            if write:
                steps.write_record(rec, r)
            return rec
        if not _is_rank0():
            evaluator.evaluate(len(dataset))
            continue
        built[id(r)][3] = _guard(r, write, record)
        if r.error is None and shared and 'metrics' in built[id(r)][3]:
            log(f"{r.name}: mIoU {built[id(r)][3]['metrics']['mIoU']:.2f}")
    if shared:
        stats = trunk.stats()
        failed = [r.name for r in everyone if r.error is not None]
        log(f'shared pass done in {wall:.1f}s: trunk computed {stats["computed"]}x, reused {stats["reused"]}x, '
            f'missed {stats["misses"]}x' + (f'; failed: {", ".join(failed)}' if failed else ''))


def _is_rank0() -> bool:
    from mmengine.dist import get_rank
    return get_rank() == 0


def _score_batch(run: Run, built: list, batch: dict, loader, idx: int) -> None:
    import torch
    model, evaluator, hooks, _ = built
    data = dict(batch, data_samples=[s.clone() for s in batch['data_samples']])
    with torch.no_grad():
        outputs = model.test_step(data)
    evaluator.process(data_samples=outputs, data_batch=batch)
    for hook in hooks:  # the hooks read only the runner's test_dataloader
        hook.after_test_iter(types.SimpleNamespace(test_dataloader=loader), idx, batch, outputs)


def _check_batch_images(batch_of: Dict[str, dict], idx: int) -> None:
    paths = None
    for batch in batch_of.values():
        these = [s.metainfo.get('img_path') for s in batch['data_samples']]
        if paths is None:
            paths = these
        elif these != paths:
            raise ShareError(f'batch {idx}: the grouped datasets loaded different images ({paths} vs {these})')
