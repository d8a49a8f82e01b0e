"""The shared-pass engine: one evaluation over an image set scores many runs.

Each run of a pass keeps everything its own ``tools/test.py`` run has: its
config (loaded, checked and prepared by the same functions as
``clearclip_seg.apis.evaluate``), its segmentor (built from its config after
the same seed, on one shared copy of the CLIP weights), its benchmark's
dataset and labels, its metric and its record (``records.build_record`` with
its own resolved config). What the runs share: the image batches and the
frozen blocks 0..L-2 of every window (``trunk.SharedTrunk``), computed for the
first run and replayed to the others on equal windows. So each record is
identical to the record of a separate run but for ``created`` and ``timing``:
``wall_s`` is the run's share of the pass (the pass's time / its runs) and
``shared_pass`` holds the number of runs, the pass's ``wall_s`` and the trunk
calls computed, reused and missed.

The loop mirrors MMEngine's ``TestLoop``: per batch, ``model.test_step`` then
``evaluator.process``; at the end ``evaluator.evaluate(len(dataset))``.
"""
import copy
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from ..runner.identity import as_plain
from .plan import ShareError, share_key
from .trunk import SharedTrunk, sharing_trunk


@dataclass
class RunSpec:
    """One run of a shared pass, as the runner would hand it to ``tools/test.py``.

    Attributes:
        config: config file.
        cfg_options: parsed ``--cfg-options`` (``{'a.b': value}``), stored in the record.
        record: where the record goes.
        work_dir: the run's work dir (default: the record's folder).
        run_info: stored as the record's ``run``.
        name: for messages (default: the config's stem).
    """
    config: str
    cfg_options: Dict = field(default_factory=dict)
    record: str = ''
    work_dir: Optional[str] = None
    run_info: Optional[Dict] = None
    name: str = ''

    def __post_init__(self):
        self.name = self.name or (self.run_info or {}).get('name') or osp.splitext(osp.basename(self.config))[0]
        self.work_dir = self.work_dir or (osp.dirname(osp.abspath(self.record)) if self.record else None)


@dataclass
class _Run:
    spec: RunSpec
    cfg: object
    identity: dict
    key: dict
    data_key: str = ''
    model: object = None
    dataset: object = None
    evaluator: object = None


def _prepare(spec: RunSpec) -> _Run:
    """Config, identity and checks of one run, exactly as ``evaluate`` does them before building."""
    from ..apis.config import load_config
    from ..apis.evaluate import check_data_root, prepare_runtime
    from ..checks import check_writable, resolve_data_root
    from ..runner.identity import run_identity
    cfg = load_config(spec.config, spec.cfg_options)
    resolve_data_root(cfg, spec.cfg_options)
    identity = run_identity(cfg)
    prepare_runtime(cfg, 'none', spec.work_dir, str(spec.config))
    if spec.record:
        check_writable(cfg.work_dir, spec.record)
    check_data_root(cfg)
    key, why = share_key(cfg, identity['precision'])
    if key is None:
        raise ShareError(f'run {spec.name} cannot share a pass: {why}')
    return _Run(spec, cfg, identity, key)


def _check_same_key(runs: Sequence[_Run]) -> None:
    from ..runner.identity import identity_diff
    first = runs[0]
    for r in runs[1:]:
        if r.key != first.key:
            diff = '; '.join(identity_diff(first.key, r.key))
            raise ShareError(f'runs {first.spec.name} and {r.spec.name} cannot share a pass: they differ '
                             f'before the last block ({diff})')


def _image_paths(dataset) -> List[str]:
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def _check_same_images(groups: Dict[str, List[_Run]]) -> None:
    """The datasets of a pass list the same images in the same order, or the pass is refused."""
    ref_paths, ref_name = None, None
    for runs in groups.values():
        paths = _image_paths(runs[0].dataset)
        name = runs[0].cfg.get('benchmark') or runs[0].spec.name
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


def _build_evaluator(cfg_evaluator):
    from mmengine.runner import Runner
    # MMEngine's own rule for the test_evaluator config (it does not use the runner instance)
    return Runner.build_evaluator(None, copy.deepcopy(cfg_evaluator))


def run_shared_pass(specs: Sequence[RunSpec], log: Callable[[str], None] = print, log_interval: int = 10,
                    write: bool = True) -> List[dict]:
    """Evaluate several runs that share an image set and the frozen blocks in one pass.

    Args:
        specs: the runs; all must have the same share key (``plan.share_key``).
        log: progress and summary lines (``Iter(test) [i/n]``, as MMEngine prints them).
        log_interval: images between progress lines.
        write: write each run's record to ``spec.record``.

    Returns:
        The records, in the order of ``specs``.

    Raises:
        ShareError: the runs cannot share a pass (one line naming them).
        ConfigError: a run's config mistake (one line), as ``evaluate`` raises it.
    """
    from .. import register_all_modules
    register_all_modules()
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.utils.dl_utils import set_multi_processing

    from ..apis.evaluate import check_built_dataset
    from ..models.clip_loader import reuse_clip_models

    if not specs:
        return []
    runs = [_prepare(s) for s in specs]
    _check_same_key(runs)
    cfg0 = runs[0].cfg
    init_default_scope(cfg0.get('default_scope', 'mmseg'))
    env = cfg0.get('env_cfg') or {}
    set_multi_processing(**(env.get('mp_cfg') or {}), distributed=False)
    torch.backends.cudnn.benchmark = bool(env.get('cudnn_benchmark', False))
    randomness = dict(cfg0.get('randomness') or {})

    # one data loader per distinct dataset (VOC21 and VOC20 read the same images with other labels)
    groups: Dict[str, List[_Run]] = {}
    loaders = {}
    for r in runs:
        r.data_key = repr(sorted(as_plain(r.cfg.test_dataloader).items()))
        if r.data_key not in loaders:
            loaders[r.data_key] = Runner.build_dataloader(copy.deepcopy(r.cfg.test_dataloader),
                                                          seed=randomness.get('seed'), diff_rank_seed=False)
            check_built_dataset(loaders[r.data_key].dataset, r.cfg)
        r.dataset = loaders[r.data_key].dataset
        groups.setdefault(r.data_key, []).append(r)
    _check_same_images(groups)

    # one copy of the weights (and of their digest) for all runs, for the whole pass
    with reuse_clip_models():
        _build_models(runs, randomness)
        return _score(runs, loaders, log, log_interval, write)


def _build_models(runs: Sequence[_Run], randomness: dict) -> None:
    """Each run's segmentor and evaluator, built as the Runner builds them (after the config's seed)."""
    from mmengine.device import get_device
    from mmengine.runner import set_random_seed
    from mmseg.registry import MODELS

    from ..apis.evaluate import check_vocabulary, name_check_data
    device = get_device()
    seed = {k: v for k, v in randomness.items() if k in ('seed', 'deterministic', 'diff_rank_seed')}
    for r in runs:
        set_random_seed(**seed)
        r.model = MODELS.build(copy.deepcopy(r.cfg.model)).to(device).eval()
        check_vocabulary(r.model, r.dataset, r.cfg)
        r.evaluator = _build_evaluator(r.cfg.test_evaluator)
        r.evaluator.dataset_meta = r.dataset.metainfo
        name_check_data(r.evaluator, r.cfg)


def _score(runs: Sequence[_Run], loaders: dict, log, log_interval: int, write: bool) -> List[dict]:
    """The loop over image batches (run after run on each, the trunk shared), then the records."""
    import torch

    from ..checks import DataError, one_line
    from ..records import build_record, write_record
    keys = list(loaders)
    n = len(runs[0].dataset)
    trunk = SharedTrunk()
    log(f'shared pass: {len(runs)} runs on {n} images ({len(keys)} dataset(s)): '
        + ', '.join(r.spec.name for r in runs))
    t0 = time.perf_counter()
    try:
        with sharing_trunk([r.model.encoder for r in runs], trunk):
            for idx, batches in enumerate(zip(*(loaders[k] for k in keys))):
                batch_of = dict(zip(keys, batches))
                _check_batch_images(batch_of, idx)
                for j, r in enumerate(runs):
                    trunk.start_run(j)
                    batch = batch_of[r.data_key]
                    data = dict(batch, data_samples=[s.clone() for s in batch['data_samples']])
                    with torch.no_grad():
                        outputs = r.model.test_step(data)
                    r.evaluator.process(data_samples=outputs, data_batch=batch)
                trunk.end_batch()
                if (idx + 1) % max(1, log_interval) == 0 or idx + 1 == n:
                    log(f'Iter(test) [{idx + 1:>{len(str(n))}}/{n}]')
    except DataError as e:  # raised in a DataLoader worker: its message without the worker's traceback
        raise DataError(one_line(e)) from None
    wall = time.perf_counter() - t0

    records = []
    for r in runs:
        metrics = r.evaluator.evaluate(len(r.dataset))
        details = r.evaluator.metrics[0].details
        # a run's time is its share of the pass (the pass's own time is under shared_pass), so
        # images/s summed over a table's rows stays the machine's throughput
        rec = build_record(r.cfg, str(r.spec.config), dict(r.spec.cfg_options), r.model, r.dataset, metrics,
                           details, wall / len(runs), 1, run_info=r.spec.run_info)
        rec['config']['identity'] = r.identity
        rec['timing']['shared_pass'] = dict(runs=len(runs), wall_s=wall, trunk_calls=trunk.stats())
        if write and r.spec.record:
            write_record(rec, r.spec.record)
            rec['_path'] = r.spec.record
        records.append(rec)
        log(f"{r.spec.name}: mIoU {rec['metrics']['mIoU']:.2f}")
    stats = trunk.stats()
    log(f'shared pass done in {wall:.1f}s: trunk computed {stats["computed"]}x, reused {stats["reused"]}x, '
        f'missed {stats["misses"]}x')
    return records


def _check_batch_images(batch_of: Dict[str, dict], idx: int) -> None:
    paths = None
    for batch in batch_of.values():
        these = [s.metainfo.get('img_path') for s in batch['data_samples']]
        if paths is None:
            paths = these
        elif these != paths:
            raise ShareError(f'batch {idx}: the grouped datasets loaded different images ({paths} vs {these})')

