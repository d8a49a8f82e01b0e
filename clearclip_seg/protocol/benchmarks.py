"""The eight benchmarks and their protocol values (docs/protocol.md, "Per benchmark").

One keyword entry per benchmark holds every fact about it: where its files are
and how they are named (the layout), its class count and label values, its
protocol values, its vocabulary and the vocabularies the methods' own protocols
use, published numbers outside the ClearCLIP paper's tables, and the
``tools/prepare_data.py`` step that builds its tree. Everything else is read or
generated from here: the dataset base configs and leaf configs
(``protocol/render.py``, ``tools/make_configs.py``), the data checker, the test
tool, the suites, the methods' cards and the results tables. Adding a benchmark
is one entry here (docs/extending.md, "A benchmark").
"""
import sys
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from .constants import SLIDE_CROP, SLIDE_STRIDE


# entries are written with keywords; Python 3.10+ refuses positional ones
@dataclass(frozen=True, **({'kw_only': True} if sys.version_info >= (3, 10) else {}))
class Benchmark:
    """One benchmark; write an entry with keywords (the field order is not part of the interface).

    Fields without a default are what every benchmark must state; the defaults are
    ClearCLIP's windows, ignore value 255, no split file and the generic dataset class.

    Attributes:
        key: the name in configs, vocabularies, records and on the command lines (``voc21``).
        title: the column title in tables (``VOC21``).
        dataset_type: the MMSeg dataset class: MMSeg's own, one of ``clearclip_seg/datasets/benchmarks.py``,
            or (the default) ``BenchmarkDataset``, which takes its classes from ``vocabulary``
            and needs no code.
        data_root: where the tree is, relative to the repository (or absolute).
        img_dir, ann_dir: image and label folders under ``data_root``.
        img_suffix, seg_map_suffix: how an image and its label file end (``.jpg``, ``.png``).
        ann_file: split file listing the image ids, relative to ``data_root``; None = every image.
        num_images: images in the evaluated split (the data checker expects exactly this many).
        num_classes: classes scored (after ``reduce_zero_label``).
        reduce_zero_label: label 0 is ignored and 1..N become 0..N-1.
        label_values: (lowest, highest) value a label map may hold before ``reduce_zero_label``.
        extra_label_values: other values a label map may hold (255 = ignore).
        prob_thd: the protocol's threshold: pixels whose top class probability is below it become class 0.
        crop, stride: slide window size and step.
        vocabulary: the shipped class-name file (``clearclip_seg/vocabularies/<name>.txt``) ClearCLIP uses.
        background: the vocabulary's class 0 is ``background``.
        method_vocabularies: vocabulary family -> shipped class-name file, where a family of
            methods' own protocol reads other class names (``sclip``: SCLIP, NACLIP, ResCLIP,
            SC-CLIP; ``proxyclip``: ProxyCLIP; ``itaclip``: ITACLIP; ``lposs``: LPOSS, LPOSS+;
            ``cliptrase``: CLIPtrase; ``floss``: FLOSS's MaskCLIP base, natural names such as
            'dining table'); a family not listed uses ``vocabulary``.
        published: (backbone slug, preset) -> published mIoU (%) for numbers outside the
            ClearCLIP paper's tables (``protocol/published.py`` merges them in); the paper's
            own numbers stay in its transcribed tables.
        prepare_step: the ``tools/prepare_data.py`` step (``data_prep.steps.STEPS``) that builds ``data_root``.
        typical_size: a typical raw image (height, width), for the sweep's cost estimates only
            (VOC and Context images are mostly 375 x 500, COCO 480 x 640, ADE20K 4:3 with a short
            side near 512).
    """
    key: str
    title: str
    data_root: str
    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_map_suffix: str
    num_images: int
    num_classes: int
    label_values: Tuple[int, int]
    prob_thd: float
    vocabulary: str
    background: bool
    prepare_step: str
    typical_size: Tuple[int, int]
    dataset_type: str = 'BenchmarkDataset'
    ann_file: Optional[str] = None
    reduce_zero_label: bool = False
    extra_label_values: Tuple[int, ...] = (255,)
    crop: int = SLIDE_CROP
    stride: int = SLIDE_STRIDE
    method_vocabularies: Mapping[str, str] = field(default_factory=dict)
    published: Mapping[Tuple[str, str], float] = field(default_factory=dict)

    @property
    def prepare(self) -> str:
        """The command that builds ``data_root``."""
        return f'python tools/prepare_data.py {self.prepare_step}'

    def vocabulary_for(self, family: Optional[str]) -> str:
        """The class-name file a vocabulary family reads on this benchmark (its own where not listed)."""
        return self.method_vocabularies.get(family, self.vocabulary) if family else self.vocabulary


def _proxyclip(key: str) -> str:
    """ProxyCLIP's class file for ``key``, shipped verbatim (synonyms split on '; ')."""
    return f'proxyclip/{key}.semicolon'


def _itaclip(key: str) -> str:
    """ITACLIP's class file for ``key``, shipped verbatim (synonyms split on ', ')."""
    return f'itaclip/{key}.comma'
def _lposs(key: str) -> str:
    """LPOSS's class file for ``key``, shipped verbatim (synonyms split on ';')."""
    return f'lposs/{key}.lposs'
def _cliptrase(key: str) -> str:
    """CLIPtrase's class list for ``key`` (configs/dataset_cfg.py), background names on the background's line."""
    return f'cliptrase/{key}.semicolon'


_VOC2012 = dict(dataset_type='PascalVOCDataset', data_root='data/VOCdevkit/VOC2012', img_dir='JPEGImages',
                ann_dir='SegmentationClass', ann_file='ImageSets/Segmentation/val.txt', img_suffix='.jpg',
                seg_map_suffix='.png', num_images=1449, label_values=(0, 20), prepare_step='voc',
                typical_size=(375, 500))
_CONTEXT = dict(data_root='data/VOCdevkit/VOC2010', img_dir='JPEGImages', ann_dir='SegmentationClassContext',
                ann_file='ImageSets/SegmentationContext/val.txt', img_suffix='.jpg', seg_map_suffix='.png',
                num_images=5105, label_values=(0, 59), prepare_step='context', typical_size=(375, 500))
_COCO = dict(data_root='data/coco_stuff164k', img_dir='images/val2017', ann_dir='annotations/val2017',
             img_suffix='.jpg', num_images=5000, typical_size=(480, 640))

BENCHMARKS: Dict[str, Benchmark] = {b.key: b for b in [
    Benchmark(key='voc21', title='VOC21', **_VOC2012, num_classes=21, prob_thd=0.5,
              vocabulary='voc21', background=True,
              method_vocabularies=dict(sclip='voc21_bg26', proxyclip=_proxyclip('voc21'),
                                       itaclip=_itaclip('voc21'), lposs=_lposs('voc21'),
                                       cliptrase=_cliptrase('voc21'))),
    Benchmark(key='voc20', title='VOC20', **{**_VOC2012, 'dataset_type': 'PascalVOC20Dataset'}, num_classes=20,
              reduce_zero_label=True, prob_thd=0.0, vocabulary='voc20', background=False,
              method_vocabularies=dict(sclip='voc20_synonyms', proxyclip=_proxyclip('voc20'),
                                       lposs=_lposs('voc20'),
                                       cliptrase=_cliptrase('voc20'),
                                       floss='floss/voc20')),
    Benchmark(key='context60', title='Context60', dataset_type='PascalContextDataset', **_CONTEXT, num_classes=60,
              prob_thd=0.15, vocabulary='context60', background=True,
              method_vocabularies=dict(proxyclip=_proxyclip('context60'),
                                       itaclip=_itaclip('context60'), lposs=_lposs('context60'),
                                       cliptrase=_cliptrase('context60'))),
    Benchmark(key='context59', title='Context59', dataset_type='PascalContextDataset59', **_CONTEXT,
              num_classes=59, reduce_zero_label=True, prob_thd=0.0, vocabulary='context59', background=False,
              method_vocabularies=dict(proxyclip=_proxyclip('context59'), lposs=_lposs('context59'),
                                       cliptrase=_cliptrase('context59'),
                                       floss='floss/context59')),
    Benchmark(key='coco_object', title='COCO-Object', dataset_type='COCOObjectDataset', **_COCO,
              seg_map_suffix='_instanceTrainIds.png', num_classes=81, label_values=(0, 80), extra_label_values=(),
              prob_thd=0.4, vocabulary='coco_object', background=True, prepare_step='coco_object',
              method_vocabularies=dict(sclip='coco_object_bg26', proxyclip=_proxyclip('coco_object'),
                                       itaclip=_itaclip('coco_object'), lposs=_lposs('coco_object'),
                                       cliptrase=_cliptrase('coco_object'))),
    Benchmark(key='coco_stuff164k', title='COCO-Stuff', dataset_type='COCOStuffDataset', **_COCO,
              seg_map_suffix='_labelTrainIds.png', num_classes=171, label_values=(0, 170), prob_thd=0.0,
              vocabulary='coco_stuff164k', background=False, prepare_step='coco_stuff164k',
              method_vocabularies=dict(proxyclip=_proxyclip('coco_stuff164k'),
                                       itaclip=_itaclip('coco_stuff164k'), lposs=_lposs('coco_stuff164k'),
                                       cliptrase=_cliptrase('coco_stuff164k'),
                                       floss='floss/coco_stuff164k')),
    Benchmark(key='cityscapes', title='Cityscapes', dataset_type='CityscapesDataset', data_root='data/cityscapes',
              img_dir='leftImg8bit/val', ann_dir='gtFine/val', img_suffix='_leftImg8bit.png',
              seg_map_suffix='_gtFine_labelTrainIds.png', num_images=500, num_classes=19, label_values=(0, 18),
              prob_thd=0.0, crop=224, stride=224, vocabulary='cityscapes', background=False,
              prepare_step='cityscapes', typical_size=(1024, 2048),
              method_vocabularies=dict(proxyclip=_proxyclip('cityscapes'),
                                       itaclip=_itaclip('cityscapes'), lposs=_lposs('cityscapes'),
                                       cliptrase=_cliptrase('cityscapes'),
                                       floss='floss/cityscapes')),
    Benchmark(key='ade20k', title='ADE20K', dataset_type='ADE20KDataset', data_root='data/ade/ADEChallengeData2016',
              img_dir='images/validation', ann_dir='annotations/validation', img_suffix='.jpg',
              seg_map_suffix='.png', num_images=2000, num_classes=150, reduce_zero_label=True,
              label_values=(0, 150), extra_label_values=(), prob_thd=0.0, vocabulary='ade20k', background=False,
              prepare_step='ade20k', typical_size=(512, 683),
              method_vocabularies=dict(proxyclip=_proxyclip('ade20k'), lposs=_lposs('ade20k'),
                                       cliptrase=_cliptrase('ade20k'),
                                       floss='floss/ade20k')),
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
