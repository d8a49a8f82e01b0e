"""Evaluate a config on its benchmark: MMEngine's ``Runner`` plus our checks and one record.

``tools/test.py`` is a thin command line over ``evaluate``; the benchmark
runner calls ``tools/test.py`` once per run (one process per run).
"""
import os
import os.path as osp
import time
from typing import Optional

from .config import ConfigError, load_config


def _unwrap(model):
    return getattr(model, 'module', model)


def check_data_root(cfg) -> None:
    """Refuse to start on a missing or empty data root, or a missing or empty split file, naming the fix."""
    from ..checks import check_split_file
    from ..protocol.benchmarks import BENCHMARKS
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


def check_built_dataset(dataset, cfg) -> None:
    """A built test dataset lists images and the files it lists exist; its loading failures will name
    their file (once per dataset object: shared passes call it once for runs that share a dataset)."""
    from ..checks import guard_dataset
    data_root = cfg.test_dataloader.dataset.get('data_root')
    if len(dataset) == 0:
        raise ConfigError(f"dataset at '{data_root}' lists no images")
    guard_dataset(dataset, cfg.get('benchmark'), data_root)


def name_check_data(evaluator, cfg) -> None:
    """Label errors raised by the evaluator's metrics name the benchmark's check_data command."""
    from ..checks import check_data_hint
    hint = check_data_hint(cfg.get('benchmark'), cfg.test_dataloader.dataset.get('data_root'))
    for metric in evaluator.metrics:
        metric.data_hint = hint


def check_vocabulary(model, dataset, cfg) -> None:
    classes = dataset.metainfo['classes']
    if model.num_classes != len(classes):
        raise ConfigError(
            f"vocabulary '{model.vocabulary.name}' (model.vocabulary) has {model.num_classes} classes "
            f"but dataset {type(dataset).__name__} has {len(classes)}: use the benchmark's vocabulary "
            f"('{cfg.get('benchmark', '?')}') or a file with {len(classes)} lines")


def prepare_runtime(cfg, launcher: str = 'none', work_dir: Optional[str] = None, config_path: str = '') -> None:
    """Device- and launcher-dependent settings of a test run (in place)."""
    import torch
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config_path or 'run'))[0])
    if not torch.cuda.is_available():
        cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    else:
        cfg.test_dataloader.setdefault('pin_memory', True)
    if launcher != 'none':
        # evaluation needs no DDP; see clearclip_seg/models/wrapper.py
        cfg.model_wrapper_cfg = dict(type='ClearCLIPTestWrapper')
        if launcher == 'pytorch' and not torch.cuda.is_available():
            import torch.distributed as dist
            if not dist.is_initialized():  # MMEngine's init calls torch.cuda.set_device
                dist.init_process_group('gloo')


def evaluate(config, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
             record_path: Optional[str] = None, launcher: str = 'none', show_dir: Optional[str] = None,
             show_n: Optional[int] = None, run_info: Optional[dict] = None,
             write: bool = True) -> Optional[dict]:
    """Evaluate one config and return (and write) its run record.

    Args:
        config: config path.
        cfg_options: ``{'a.b': value}`` overrides, stored in the record.
        work_dir: logs and the default record location (``work_dirs/<config name>``).
        record_path: where the record goes (default ``<work_dir>/record.json``).
        launcher: ``'none'`` or ``'pytorch'`` (torchrun), as MMEngine.
        show_dir, show_n: save image | ground truth | prediction panels.
        run_info: stored as the record's ``run`` (the benchmark runner's matrix entry).
        write: write the record file (rank 0 only).

    Returns:
        The record on rank 0, None on other ranks.

    Raises:
        ConfigError: a config mistake, named in one line.
    """
    from .. import register_all_modules
    register_all_modules()
    from mmengine.dist import get_rank, get_world_size
    from mmengine.runner import Runner

    from ..checks import DataError, check_launcher, check_show, check_writable, one_line, resolve_data_root
    from ..records import build_record, write_record
    from ..runner.identity import run_identity

    cfg = load_config(config, cfg_options)
    # bad inputs fail here, in one line, before any weights or images are loaded
    resolve_data_root(cfg, cfg_options)
    identity = run_identity(cfg)
    check_launcher(launcher)
    check_show(show_dir, show_n)
    prepare_runtime(cfg, launcher, work_dir, str(config))
    record_path = record_path or osp.join(cfg.work_dir, 'record.json')
    if write:
        check_writable(cfg.work_dir, record_path)
    if show_dir:
        from ..visualization import add_show_hook
        add_show_hook(cfg, show_dir, show_n)
    check_data_root(cfg)
    try:
        runner = Runner.from_cfg(cfg)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        # config mistakes (unknown arch/tag/mode, missing vocabulary or weights) name the
        # key in their message: show that line, not a traceback; anything else is a bug
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        if isinstance(e, RuntimeError) and 'model.' not in msg:
            raise
        raise ConfigError(msg) from e
    model = _unwrap(runner.model)
    loop = runner.test_loop
    dataset = loop.dataloader.dataset
    check_built_dataset(dataset, cfg)
    check_vocabulary(model, dataset, cfg)
    name_check_data(loop.evaluator, cfg)

    t0 = time.perf_counter()
    try:
        metrics = runner.test()
    except DataError as e:  # raised in a DataLoader worker: its message without the worker's traceback
        raise DataError(one_line(e)) from None
    wall = time.perf_counter() - t0
    if get_rank() != 0:
        return None
    details = loop.evaluator.metrics[0].details
    record = build_record(cfg, str(config), dict(cfg_options or {}), model, dataset, metrics, details, wall,
                          get_world_size(), run_info=run_info)
    record['config']['identity'] = identity  # what the benchmark runner compares before skipping a run
    if write:
        write_record(record, record_path)
        record['_path'] = record_path
    return record
