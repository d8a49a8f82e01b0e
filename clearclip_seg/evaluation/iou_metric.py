"""IoU metric that keeps the full-precision per-class numbers for records."""
from collections import OrderedDict
from typing import Dict, List

import numpy as np
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class ClearCLIPIoUMetric(IoUMetric):
    """MMSeg's ``IoUMetric`` (same numbers, same table), plus ``details``.

    After ``compute_metrics`` (rank 0), ``self.details`` holds the per-class
    IoU and accuracy in percent at full precision, and the summed areas
    (intersection, union, prediction, label) that every figure derives from,
    so a record can be re-checked and runs can be compared exactly.
    """

    details: Dict = None

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
