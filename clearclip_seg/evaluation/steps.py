"""The steps of an evaluation: prepare (config and checks) -> build (data, model) -> record.

``passes.run_pass`` runs them for one run (``clearclip_seg.apis.evaluate``) or
many (a shared pass of the benchmark runner), so both write the same record.
Every step that can fail on the user's input fails with a ``ConfigError`` (one
line naming the file or key) before any weights or images are loaded when it
can be checked that early.
"""
import datetime
import os
import os.path as osp
from typing import Optional

from .. import records
from ..checks import check_data_hint, check_split_file, check_writable, resolve_data_root
from ..config import load_config
from ..errors import ConfigError
from ..protocol.benchmarks import BENCHMARKS
from .identity import run_identity
from .run import Run


# -- prepare ----------------------------------------------------------------------
def check_data_root(cfg) -> None:
    """Refuse to start on a missing or empty data root, or a missing or empty split file, naming the fix."""
    ds = cfg.test_dataloader.dataset
    root = ds.get('data_root') or ''
    img_dir = osp.join(root, ds.get('data_prefix', {}).get('img_path', ''))
    bench = BENCHMARKS.get(cfg.get('benchmark', ''))
    how = (f"prepare it with '{bench.prepare}' (see data/README.md)" if bench
           else 'see data/README.md for the expected layout')
    if not osp.isdir(img_dir) or not os.listdir(img_dir):
        raise ConfigError(f"data root '{root}' has no images at '{img_dir}': {how}, "
                          'or point test_dataloader.dataset.data_root at it with --cfg-options')
    check_split_file(cfg)


def prepare_runtime(cfg, launcher: str = 'none', work_dir: Optional[str] = None, config_path: str = '') -> None:
    """Device- and launcher-dependent settings of a test run (in place)."""
    import torch  # lazy: this module is imported by the light API
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config_path or 'run'))[0])
    if not torch.cuda.is_available():
        cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    else:
        cfg.test_dataloader.setdefault('pin_memory', True)


def default_record_path(cfg) -> str:
    return osp.join(cfg.work_dir, 'record.json')


def prepare(run: Run, launcher: str = 'none', show_dir: Optional[str] = None, show_n: Optional[int] = None,
            write: bool = True):
    """The run's resolved config, its identity, and every check that needs no model or image.

    Sets ``run.cfg``, ``run.identity`` and (when empty) ``run.record``.
    """
    cfg = load_config(run.config, run.options)
    # bad inputs fail here, in one line, before any weights or images are loaded
    resolve_data_root(cfg, run.options)
    run.identity = run_identity(cfg)
    prepare_runtime(cfg, launcher, run.work_dir, str(run.config))
    run.record = run.record or default_record_path(cfg)
    if write:
        check_writable(cfg.work_dir, run.record)
    if show_dir:
        from ..visualization import add_show_hook  # lazy: it imports MMSeg
        add_show_hook(cfg, show_dir, show_n)
    check_data_root(cfg)
    check_format_only(cfg, run)
    run.cfg = cfg
    return cfg


def check_format_only(cfg, run: Run) -> None:
    """Saving predictions without scoring them needs a folder to save them in."""
    ev = cfg.get('test_evaluator') or {}
    if (run.format_only or ev.get('format_only')) and not (run.predictions or ev.get('output_dir')):
        raise ConfigError('format_only saves the predictions without scoring them and needs a folder for them: '
                          'give tools/test.py --out DIR (or test_evaluator.output_dir=DIR)')


# -- build ------------------------------------------------------------------------
def check_built_dataset(dataset, cfg) -> None:
    """A built test dataset lists images and the files it lists exist; its loading failures will name
    their file (once per dataset object: shared passes call it once for runs that share a dataset)."""
    data_root = cfg.test_dataloader.dataset.get('data_root')
    if len(dataset) == 0:
        raise ConfigError(f"dataset at '{data_root}' lists no images")
    from ..datasets.guards import guard_dataset  # lazy: clearclip_seg.datasets registers into MMSeg on import
    guard_dataset(dataset, cfg.get('benchmark'), data_root)


def build_dataloader(cfg):
    """The test data loader, built by MMEngine's own rule (sharded by rank when distributed)."""
    import copy

    from mmengine.runner import Runner
    seed = (cfg.get('randomness') or {}).get('seed')
    loader = Runner.build_dataloader(copy.deepcopy(cfg.test_dataloader), seed=seed, diff_rank_seed=False)
    check_built_dataset(loader.dataset, cfg)
    return loader


def build_model(cfg, device: str):
    """The segmentor of a config, after the config's seed, as MMEngine's ``Runner`` builds it.

    Raises:
        ConfigError: a config mistake (unknown arch/tag/mode, missing vocabulary or
            weights) named in its last line; anything else is a bug and is raised as it is.
    """
    import copy

    from mmengine.runner import set_random_seed
    from mmseg.registry import MODELS
    randomness = dict(cfg.get('randomness') or {})
    set_random_seed(**{k: v for k, v in randomness.items() if k in ('seed', 'deterministic', 'diff_rank_seed')})
    try:
        model = MODELS.build(copy.deepcopy(cfg.model))
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        if isinstance(e, RuntimeError) and 'model.' not in msg:
            raise
        raise ConfigError(msg) from e
    return model.to(device).eval()


def check_vocabulary(model, dataset, cfg) -> None:
    classes = dataset.metainfo['classes']
    if model.num_classes != len(classes):
        raise ConfigError(
            f"vocabulary '{model.vocabulary.name}' (model.vocabulary) has {model.num_classes} classes "
            f"but dataset {type(dataset).__name__} has {len(classes)}: use the benchmark's vocabulary "
            f"('{cfg.get('benchmark', '?')}') or a file with {len(classes)} lines")


def build_evaluator(cfg, dataset, run: Optional[Run] = None):
    """The run's evaluator (MMEngine's rule for ``test_evaluator``); label errors name check_data.

    ``run.predictions`` / ``run.format_only`` (``tools/test.py --out`` / ``--format-only``)
    are set on the metric here, outside the config, so they leave the record unchanged.
    """
    import copy

    from mmengine.runner import Runner

    evaluator = Runner.build_evaluator(None, copy.deepcopy(cfg.test_evaluator))  # uses no runner instance
    evaluator.dataset_meta = dataset.metainfo
    hint = check_data_hint(cfg.get('benchmark'), cfg.test_dataloader.dataset.get('data_root'))
    for metric in evaluator.metrics:
        metric.data_hint = hint
        if run is not None and run.predictions:
            metric.output_dir = osp.abspath(run.predictions)
            os.makedirs(metric.output_dir, exist_ok=True)
        if run is not None and run.format_only:
            metric.format_only = True
    return evaluator


def build_show_hooks(cfg):
    """The config's ``custom_hooks`` (``--show-dir`` panels), called after each scored batch."""
    from mmengine.registry import HOOKS
    hooks = []
    for h in cfg.get('custom_hooks', None) or []:
        h = dict(h)
        h.pop('priority', None)  # an order among hooks: these are called in the config's order
        hooks.append(HOOKS.build(h))
    return hooks


# -- record -----------------------------------------------------------------------
def failure_path(record_path: str) -> str:
    """The marker a failed run leaves next to its record (never a ``.json``: tables do not read it)."""
    return record_path + '.failed'


def check_finite(record: dict, run: Run) -> None:
    """A record whose summary metrics are not numbers is not a result (no valid pixel, NaN logits)."""
    import math
    bad = [k for k in ('mIoU', 'aAcc', 'mAcc') if not isinstance(record['metrics'].get(k), (int, float))
           or not math.isfinite(record['metrics'][k])]
    if bad:
        values = ', '.join(f"{k}={record['metrics'].get(k)}" for k in bad)
        raise ConfigError(f"run {run.name}: {values} on "
                          f"benchmark {record.get('benchmark')!r}: not a result, not recorded as complete "
                          '(no valid label pixel, or non-finite scores)')


def write_record(record: dict, run: Run) -> None:
    """Write the run's record and drop a failure marker of an earlier try.

    Raises:
        ConfigError: the record cannot be written (full disk, read-only folder), naming the file.
    """
    try:
        records.write_record(record, run.record)
    except OSError as e:
        raise ConfigError(f"cannot write the record '{run.record}': {e.strerror or e}") from None
    try:
        os.remove(failure_path(run.record))
    except FileNotFoundError:
        pass
    record['_path'] = run.record


def write_failure(run: Run, error: BaseException) -> Optional[str]:
    """Leave ``<record>.failed`` (run name, error) where the record would be; None when it cannot be written."""
    if not run.record or not osp.isdir(osp.dirname(osp.abspath(run.record))):
        return None  # no folder made just for the marker (e.g. a config that failed to load)
    path = failure_path(run.record)
    msg = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
    info = dict(complete=False, run=run.name, error=msg, type=type(error).__name__, record=run.record,
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))
    try:
        records.atomic_write_json(info, path)
    except OSError:
        return None
    return path


def read_failure(record_path: str) -> Optional[dict]:
    """The failure marker of a record path, or None."""
    import json
    try:
        with open(failure_path(record_path)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
