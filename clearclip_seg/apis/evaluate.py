"""Evaluate a config on its benchmark and write its record: a pass of one run.

``tools/test.py`` is a thin command line over ``evaluate``. The evaluation
itself is ``clearclip_seg.evaluation.passes.run_pass``, the same pass that
scores the benchmark runner's shared passes, so a run's record is the same
whether it ran alone or with others.
"""
from typing import Optional

from ..evaluation.run import Run


def evaluate(config, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
             record_path: Optional[str] = None, launcher: str = 'none', show_dir: Optional[str] = None,
             show_n: Optional[int] = None, run_info: Optional[dict] = None,
             write: bool = True, predictions: Optional[str] = None, format_only: bool = False) -> Optional[dict]:
    """Evaluate one config and return (and write) its run record.

    Args:
        config: config path.
        cfg_options: ``{'a.b': value}`` overrides, stored in the record.
        work_dir: the default record location (``work_dirs/<config name>``).
        record_path: where the record goes (default ``<work_dir>/record.json``).
        launcher: ``'none'`` or ``'pytorch'`` (torchrun): the images are split between the processes.
        show_dir, show_n: save image | ground truth | prediction panels.
        run_info: stored as the record's ``run`` (the benchmark runner's matrix entry).
        write: write the record file (rank 0 only).
        predictions: save the predicted label maps here (``clearclip_seg.predictions``: one PNG per
            image, MMSeg's convention); ``tools/score.py`` scores them later. The record is the same.
        format_only: save the predictions (``predictions`` is then required) without scoring them:
            nothing is scored, no record is written.

    Returns:
        The record on rank 0, None on other ranks; with ``format_only``,
        ``{'format_only': True, 'predictions': folder, 'benchmark', 'num_images', 'wall_s'}``.

    Raises:
        ConfigError: a config mistake, named in one line (``DataError``: a data file).
    """
    from ..evaluation.passes import run_pass  # lazy: importing the API does not import torch
    run = Run(name='', config=str(config), options=dict(cfg_options or {}), record=record_path or '',
              work_dir=work_dir, run_info=run_info, predictions=predictions, format_only=format_only)
    [record] = run_pass([run], launcher=launcher, show_dir=show_dir, show_n=show_n, write=write)
    if run.error is not None:
        raise run.error
    return record
