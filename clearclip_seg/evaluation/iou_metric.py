"""IoU metric that keeps the full-precision per-class numbers for records."""
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

from ..checks import check_label_map
from ..options import check_number
from ..predictions import prediction_name, save_prediction

# test_evaluator.mean_over: which classes the means run over
MEAN_OVER = ('union', 'label')


@METRICS.register_module()
class ClearCLIPIoUMetric(IoUMetric):
    """MMSeg's ``IoUMetric`` (same numbers, same table), plus ``details``.

    After ``compute_metrics`` (rank 0), ``self.details`` holds the per-class
    IoU and accuracy in percent at full precision, and the summed areas
    (intersection, union, prediction, label) that every figure derives from,
    so a record can be re-checked and runs can be compared exactly.

    With its defaults every number is MMSeg's. Three options score another
    evaluation's way (CLIPtrase's ``configs/metric.py::scores``; the method
    cards set them, ``protocol/methods.py``):

    Args:
        iou_eps: added to every IoU and accuracy denominator (0; CLIPtrase 0.01).
        mean_over: the classes mIoU runs over: ``'union'`` (MMSeg: classes
            predicted or labelled; a class predicted but never labelled counts 0)
            or ``'label'`` (only classes present in the labels). mAcc runs over
            the classes with a nonzero denominator (with ``iou_eps`` > 0 every
            class, an unlabelled one counting 0, as CLIPtrase's does).
        ignore_as: score label pixels of ``ignore_index`` as this class instead
            of ignoring them (CLIPtrase's VOC21: void boundaries as background);
            an image whose labels are all ``ignore_index`` is then skipped, as
            that evaluation does. None = ignored (MMSeg).
    """

    # the metric's names stay MMSeg's own ('mIoU', not 'prefix/mIoU': the record's metrics.mmseg); an
    # empty prefix says so, where None makes MMEngine warn that no prefix was set
    default_prefix = ''
    details: Dict = None
    data_hint: str = None  # the check_data command naming the benchmark (set by apis.evaluate)

    def __init__(self, *args, iou_eps: float = 0.0, mean_over: str = 'union', ignore_as: Optional[int] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if mean_over not in MEAN_OVER:
            raise ValueError(f'test_evaluator.mean_over={mean_over!r}: expected one of {list(MEAN_OVER)}')
        self.iou_eps = check_number(iou_eps, 'test_evaluator.iou_eps', low=0)
        self.mean_over = mean_over
        self.ignore_as = None if ignore_as is None else check_number(ignore_as, 'test_evaluator.ignore_as', low=0,
                                                                      integer=True)

    def _relabel_ignored(self, data_samples: Sequence[dict]) -> List[dict]:
        """``ignore_as``: all-ignore label maps dropped, ignore pixels of the others scored as that class."""
        kept = []
        for sample in data_samples:
            gt = sample['gt_sem_seg']['data']
            ignored = gt == self.ignore_index
            if bool(ignored.all()):
                continue
            sample = dict(sample, gt_sem_seg=dict(sample['gt_sem_seg'], data=gt.masked_fill(ignored, self.ignore_as)))
            kept.append(sample)
        return kept

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
        if self.ignore_as is not None and not self.format_only:
            data_samples = self._relabel_ignored(data_samples)
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
            iou = inter / (union + self.iou_eps)
            acc = inter / (label + self.iou_eps)
        # MMSeg leaves out classes neither predicted nor labelled; 'label' also those only predicted
        iou = np.where((label if self.mean_over == 'label' else union) > 0, iou, np.nan)
        if self.iou_eps or self.mean_over != 'union':  # the summary follows the variant, rounded as MMSeg's
            metrics.update({k: np.round(np.nanmean(v) * 100, 2) for k, v in (('mIoU', iou), ('mAcc', acc))
                            if k in metrics})
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
