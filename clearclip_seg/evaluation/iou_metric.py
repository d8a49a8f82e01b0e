"""IoU metric that keeps the full-precision per-class numbers for records."""
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Sequence

import numpy as np
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

from ..checks import check_label_map
from ..predictions import prediction_name, save_prediction


@METRICS.register_module()
class ClearCLIPIoUMetric(IoUMetric):
    """MMSeg's ``IoUMetric`` (same numbers, same table), plus ``details``.

    After ``compute_metrics`` (rank 0), ``self.details`` holds the per-class
    IoU and accuracy in percent at full precision, and the summed areas
    (intersection, union, prediction, label) that every figure derives from,
    so a record can be re-checked and runs can be compared exactly.
    """

    # the metric's names stay MMSeg's own ('mIoU', not 'prefix/mIoU': the record's metrics.mmseg); an
    # empty prefix says so, where None makes MMEngine warn that no prefix was set
    default_prefix = ''
    details: Dict = None
    data_hint: str = None  # the check_data command naming the benchmark (set by apis.evaluate)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Check every label map before MMSeg scores it (see ``checks.check_label_map``).

        A label of the wrong size or with a value outside the classes and the ignore
        index is an error naming the file and the value, never a silently changed score.
        """
        if not self.format_only:
            num_classes = len(self.dataset_meta['classes'])
            for sample in data_samples:
                if 'gt_sem_seg' not in sample:
                    continue
                check_label_map(sample['gt_sem_seg']['data'], tuple(sample['pred_sem_seg']['data'].shape[-2:]),
                                num_classes, self.ignore_index, sample.get('seg_map_path'),
                                bool(sample.get('reduce_zero_label', False)), self.data_hint,
                                img_path=sample.get('img_path'))
        if self.output_dir is None:
            super().process(data_batch, data_samples)
            return
        # score as MMSeg does, then save every prediction in MMSeg's format through one writer
        # (clearclip_seg.predictions): 16-bit past 255 classes, kept 2-D for a 1-pixel-thin image, atomic
        output_dir, self.output_dir = self.output_dir, None
        try:
            super().process(data_batch, data_samples)
        finally:
            self.output_dir = output_dir
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            path = osp.join(output_dir, prediction_name(sample['img_path']))
            save_prediction(sample['pred_sem_seg']['data'][0], path, num_classes,
                            bool(sample.get('reduce_zero_label', False)))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        if self.format_only:
            return metrics
        areas = [sum(r).cpu().numpy().astype(np.float64) for r in zip(*results)]
        inter, union, pred, label = areas
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = inter / union
            acc = inter / label
        classes: List[str] = list(self.dataset_meta['classes'])
        self.details = OrderedDict(
            classes=classes,
            IoU={c: _pct(v) for c, v in zip(classes, iou)},
            Acc={c: _pct(v) for c, v in zip(classes, acc)},
            mIoU=_pct(np.nanmean(iou)), mAcc=_pct(np.nanmean(acc)), aAcc=_pct(inter.sum() / label.sum()),
            area_intersect=inter.tolist(), area_union=union.tolist(),
            area_pred=pred.tolist(), area_label=label.tolist(),
            num_images=len(results))
        return metrics


def _pct(v) -> float:
    v = float(v)
    return None if np.isnan(v) else v * 100.0
