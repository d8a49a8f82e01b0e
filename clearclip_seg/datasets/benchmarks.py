"""Benchmark datasets MMSeg 1.2.2 lacks, registered in its ``DATASETS``.

VOC21, Pascal Context 60/59, COCO-Stuff-164k, Cityscapes and ADE20K reuse
MMSeg's own classes (their class counts and label conventions match
docs/protocol.md). Added here:

* ``PascalVOC20Dataset``: VOC2012 with background ignored (20 classes,
  ``reduce_zero_label=True``).
* ``COCOObjectDataset``: COCO-Stuff-164k images with ``*_instanceTrainIds.png``
  labels (0 background + the 80 thing classes; see ``tools/prepare_data.py``).
* ``BenchmarkDataset``: any benchmark entry (``protocol/benchmarks.py``) without a
  class of its own; its classes are the entry's vocabulary.
"""
from mmseg.datasets import BaseSegDataset, PascalVOCDataset
from mmseg.registry import DATASETS

from ..protocol.benchmarks import get_benchmark
from ..vocab import load_vocabulary


@DATASETS.register_module()
class PascalVOC20Dataset(PascalVOCDataset):
    """Pascal VOC 2012 without background: labels 1..20 become 0..19, 0 is ignored."""
    METAINFO = dict(classes=PascalVOCDataset.METAINFO['classes'][1:],
                    palette=PascalVOCDataset.METAINFO['palette'][1:])

    def __init__(self, ann_file, reduce_zero_label=True, **kwargs) -> None:
        super().__init__(ann_file=ann_file, reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class COCOObjectDataset(BaseSegDataset):
    """COCO-Object: 81 classes (background + 80 COCO things), nothing ignored."""
    METAINFO = dict(classes=load_vocabulary('coco_object').classes)

    def __init__(self, img_suffix='.jpg', seg_map_suffix='_instanceTrainIds.png',
                 reduce_zero_label=False, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class BenchmarkDataset(BaseSegDataset):
    """A benchmark entry's dataset: class names from its vocabulary, files as its dataset config lists them.

    Args:
        benchmark: the entry's key (``BENCHMARKS``); the generated dataset config passes it.
        **kwargs: ``BaseSegDataset``'s (data root, folders, suffixes, split file, pipeline).
    """

    def __init__(self, benchmark: str, **kwargs) -> None:
        classes = load_vocabulary(get_benchmark(benchmark).vocabulary).classes
        super().__init__(metainfo=dict(classes=classes), **kwargs)
