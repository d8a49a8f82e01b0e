"""mIoU of each component's segmentation, from areas summed like MMSeg's IoUMetric sums them."""
import math
from typing import Dict

import torch


def miou_from_areas(area_intersect, area_union, area_pred, area_label) -> Dict:
    """mIoU / aAcc (percent) and per-class IoU from summed areas, as MMSeg's IoUMetric.

    Classes absent from both prediction and labels (union 0) are NaN and left
    out of the mean, as in MMSeg.

    Args:
        area_intersect, area_union, area_pred, area_label: (num_classes,) sums.

    Returns:
        ``mIoU``, ``aAcc`` (floats, percent; None when undefined) and ``IoU``
        (list, percent, None for NaN).
    """
    import numpy as np
    inter = np.asarray(area_intersect, np.float64)
    union = np.asarray(area_union, np.float64)
    label = np.asarray(area_label, np.float64)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = inter / union
        aacc = inter.sum() / label.sum()

    def pct(v):
        v = float(v)
        return None if math.isnan(v) else 100.0 * v

    miou = np.nanmean(iou) if np.isfinite(iou).any() else float('nan')
    return dict(mIoU=pct(miou), aAcc=pct(aacc), IoU=[pct(v) for v in iou])


class AreaAccumulator:
    """Sums MMSeg's ``intersect_and_union`` areas per key (e.g. (mode, source)).

    Args:
        num_classes: number of classes.
        ignore_index: label value left out of the metric (255).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.areas: Dict = {}

    def add(self, key, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add one image's (H, W) prediction against its (H, W) labels."""
        from mmseg.evaluation.metrics import IoUMetric
        areas = IoUMetric.intersect_and_union(pred.reshape(label.shape).to(label.device), label,
                                              self.num_classes, self.ignore_index)
        areas = [a.double() for a in areas]
        if key in self.areas:
            self.areas[key] = [s + a for s, a in zip(self.areas[key], areas)]
        else:
            self.areas[key] = areas

    def metrics(self, key) -> Dict:
        """``miou_from_areas`` of one key's sums."""
        return miou_from_areas(*[a.numpy() for a in self.areas[key]])
