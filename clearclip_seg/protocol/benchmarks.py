"""The eight benchmarks and their protocol values (docs/protocol.md, "Per benchmark").

One table, used by the config generator, the data checker, the test tool and
the results tables, so a protocol value is written down exactly once.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    dataset_type: str
    data_root: str                 # relative to the repository (or absolute)
    img_dir: str
    ann_dir: str
    ann_file: Optional[str]        # split file, relative to data_root
    img_suffix: str
    seg_map_suffix: str
    num_classes: int
    reduce_zero_label: bool
    prob_thd: float
    crop: int
    stride: int
    num_images: int
    vocabulary: str
    background: bool               # the vocabulary's class 0 is 'background'
    prepare: str                   # the command that builds data_root
    # values a label map may hold before reduce_zero_label (255 = ignore)
    label_values: Tuple[int, int] = field(default=(0, 0))
    extra_label_values: Tuple[int, ...] = (255,)


BENCHMARKS: Dict[str, Benchmark] = {b.key: b for b in [
    Benchmark('voc21', 'VOC21', 'PascalVOCDataset', 'data/VOCdevkit/VOC2012', 'JPEGImages',
              'SegmentationClass', 'ImageSets/Segmentation/val.txt', '.jpg', '.png', 21, False, 0.5,
              448, 224, 1449, 'voc21', True, 'python tools/prepare_data.py voc', (0, 20)),
    Benchmark('voc20', 'VOC20', 'PascalVOC20Dataset', 'data/VOCdevkit/VOC2012', 'JPEGImages',
              'SegmentationClass', 'ImageSets/Segmentation/val.txt', '.jpg', '.png', 20, True, 0.0,
              448, 224, 1449, 'voc20', False, 'python tools/prepare_data.py voc', (0, 20)),
    Benchmark('context60', 'Context60', 'PascalContextDataset', 'data/VOCdevkit/VOC2010', 'JPEGImages',
              'SegmentationClassContext', 'ImageSets/SegmentationContext/val.txt', '.jpg', '.png', 60,
              False, 0.15, 448, 224, 5105, 'context60', True, 'python tools/prepare_data.py context',
              (0, 59)),
    Benchmark('context59', 'Context59', 'PascalContextDataset59', 'data/VOCdevkit/VOC2010', 'JPEGImages',
              'SegmentationClassContext', 'ImageSets/SegmentationContext/val.txt', '.jpg', '.png', 59,
              True, 0.0, 448, 224, 5105, 'context59', False, 'python tools/prepare_data.py context',
              (0, 59)),
    Benchmark('coco_object', 'COCO-Object', 'COCOObjectDataset', 'data/coco_stuff164k', 'images/val2017',
              'annotations/val2017', None, '.jpg', '_instanceTrainIds.png', 81, False, 0.4, 448, 224, 5000,
              'coco_object', True, 'python tools/prepare_data.py coco_object', (0, 80), ()),
    Benchmark('coco_stuff164k', 'COCO-Stuff', 'COCOStuffDataset', 'data/coco_stuff164k', 'images/val2017',
              'annotations/val2017', None, '.jpg', '_labelTrainIds.png', 171, False, 0.0, 448, 224, 5000,
              'coco_stuff164k', False, 'python tools/prepare_data.py coco_stuff164k', (0, 170)),
    Benchmark('cityscapes', 'Cityscapes', 'CityscapesDataset', 'data/cityscapes', 'leftImg8bit/val',
              'gtFine/val', None, '_leftImg8bit.png', '_gtFine_labelTrainIds.png', 19, False, 0.0, 224, 224,
              500, 'cityscapes', False, 'python tools/prepare_data.py cityscapes', (0, 18)),
    Benchmark('ade20k', 'ADE20K', 'ADE20KDataset', 'data/ade/ADEChallengeData2016', 'images/validation',
              'annotations/validation', None, '.jpg', '.png', 150, True, 0.0, 448, 224, 2000, 'ade20k',
              False, 'python tools/prepare_data.py ade20k', (0, 150), ()),
]}

# The paper's table order (three sets with background, then five without): protocol constants.
from .constants import PAPER_ORDER  # noqa: E402,F401

# Backbones: config-name slug -> (open_clip arch, pretrained tag, title), from the one
# backbone table (backbones.py: families, sizes, normalisation source).
from .backbones import BACKBONES  # noqa: E402,F401


def get_benchmark(key: str) -> Benchmark:
    if key not in BENCHMARKS:
        raise KeyError(f"unknown benchmark '{key}': expected one of {list(BENCHMARKS)}")
    return BENCHMARKS[key]
