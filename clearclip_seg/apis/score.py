"""Score saved predictions (``tools/test.py --out DIR``) later, with the live run's metric and record.

``score_predictions`` reads the config's benchmark exactly as ``evaluate`` does
(same data root rule, same test pipeline and labels, same checks), replaces the
model's output by the saved label maps (``clearclip_seg.predictions``) and feeds
them to the same metric, so its record equals the live run's record but for
``created``, ``timing`` and ``predictions`` (the folder it scored). The model
is built only to describe itself in the record (weights, method, vocabulary);
no image goes through it.
"""
import os.path as osp
import time
from typing import Optional

from .. import register_all_modules
from ..errors import ConfigError
from ..evaluation import steps
from ..evaluation.run import Run
from ..predictions import load_prediction, prediction_name
from ..records import build_record


def score_predictions(predictions: str, config, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                      record_path: Optional[str] = None, write: bool = True) -> dict:
    """Score the saved predictions of ``config``'s benchmark and return (and write) the run record.

    Args:
        predictions: the folder ``tools/test.py --out`` wrote (one ``<image stem>.png`` per image).
        config: the config the predictions were made with.
        cfg_options: the same ``{'a.b': value}`` overrides as the live run (stored in the record).
        work_dir: the default record location (``work_dirs/<config name>``).
        record_path: where the record goes (default ``<work_dir>/record.json``).
        write: write the record file.

    Returns:
        The record (``records.build_record``'s schema) plus ``predictions``: the folder scored.

    Raises:
        ConfigError: a config mistake, a missing folder or prediction file, or a prediction
            whose size is not its image's (one line naming the file).
    """
    if not osp.isdir(predictions):
        raise ConfigError(f"predictions folder '{predictions}' not found: give the folder tools/test.py --out wrote")
    import torch  # importing the API does not import torch or MMEngine
    from mmengine.device import get_device
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData

    register_all_modules()
    run = Run(name='', config=str(config), options=dict(cfg_options or {}), record=record_path or '',
              work_dir=work_dir)
    cfg = steps.prepare(run, write=write)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    loader = steps.build_dataloader(cfg)
    dataset = loader.dataset
    model = steps.build_model(cfg, get_device())
    steps.check_vocabulary(model, dataset, cfg)
    evaluator = steps.build_evaluator(cfg, dataset)
    if evaluator.metrics[0].format_only:
        raise ConfigError('test_evaluator.format_only=True: scoring needs the metric on, drop the override')

    t0 = time.perf_counter()
    for batch in loader:
        samples = [s.clone() for s in batch['data_samples']]
        for s in samples:
            path = osp.join(predictions, prediction_name(s.img_path))
            pred = load_prediction(path, bool(s.metainfo.get('reduce_zero_label', False)))
            if pred.shape != tuple(s.ori_shape):
                raise ConfigError(f"prediction '{path}' is {pred.shape[0]}x{pred.shape[1]} but its image "
                                  f"'{s.img_path}' is {s.ori_shape[0]}x{s.ori_shape[1]}: predictions of another "
                                  'dataset or config?')
            s.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
        evaluator.process(data_samples=samples, data_batch=batch)
    metrics = evaluator.evaluate(len(dataset))
    wall = time.perf_counter() - t0
    record = build_record(cfg, str(run.config), dict(run.options), model, dataset, metrics,
                          evaluator.metrics[0].details, wall, 1)
    record['config']['identity'] = run.identity  # as a live run's record (evaluation.passes)
    record['predictions'] = osp.abspath(predictions)
    steps.check_finite(record, run)
    if write:
        steps.write_record(record, run)
    return record
