#!/usr/bin/env python
"""Turn the official dataset downloads into the trees the eight benchmarks expect.

    python tools/prepare_data.py STEP [--data-root data/] [--download-dir data/downloads]
                                      [--nproc N] [--no-download] [--no-verify] ...

STEP is one of ``voc`` (voc21, voc20), ``context`` (context60, context59),
``coco_stuff164k``, ``coco_object``, ``cityscapes``, ``ade20k`` or ``all``. Where each
tree goes is read from ``clearclip_seg/benchmarks.py`` (the single table of data roots,
folders and suffixes); see ``data/README.md`` for the trees and the download sources.

Every step is safe to re-run: archives already downloaded (and verified) are reused,
folders already extracted are skipped, label files already written are skipped, and
nothing is ever left half-written (extraction goes to a temporary folder that is renamed
into place; each label file is written under a temporary name and renamed).

The conversions are plain functions on numpy arrays, importable for tests:
``raw_stuff_to_train_ids``, ``stuff_to_object_labels``, ``train_ids_to_object_labels``,
``cityscapes_label_to_train_id`` and ``context_mask_to_labels``.
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in requirements.txt
    def tqdm(iterable=None, **kwargs):  # type: ignore
        return _NoBar(iterable)

TOOLS_DIR = Path(__file__).resolve().parent
if str(TOOLS_DIR) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR))

from _bench_table import REPO_ROOT, get_benchmark, rel_to_data_dir  # noqa: E402


class _NoBar:  # minimal stand-in when tqdm is missing
    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass


class PrepareError(RuntimeError):
    """A step cannot go on; the message is one line saying what and how to fix it."""


# --------------------------------------------------------------------------------------
# COCO-Stuff-164k: raw stuffthingmaps ids -> 171 train ids; COCO-Object labels
# --------------------------------------------------------------------------------------

# The 80 COCO thing categories: (COCO category id, name), in id order. The ids are sparse
# (1..90, eleven unused). In the raw stuffthingmaps a pixel holds (category id - 1).
COCO_THINGS: Tuple[Tuple[int, str], ...] = (
    (1, 'person'), (2, 'bicycle'), (3, 'car'), (4, 'motorcycle'), (5, 'airplane'),
    (6, 'bus'), (7, 'train'), (8, 'truck'), (9, 'boat'), (10, 'traffic light'),
    (11, 'fire hydrant'), (13, 'stop sign'), (14, 'parking meter'), (15, 'bench'),
    (16, 'bird'), (17, 'cat'), (18, 'dog'), (19, 'horse'), (20, 'sheep'), (21, 'cow'),
    (22, 'elephant'), (23, 'bear'), (24, 'zebra'), (25, 'giraffe'), (27, 'backpack'),
    (28, 'umbrella'), (31, 'handbag'), (32, 'tie'), (33, 'suitcase'), (34, 'frisbee'),
    (35, 'skis'), (36, 'snowboard'), (37, 'sports ball'), (38, 'kite'), (39, 'baseball bat'),
    (40, 'baseball glove'), (41, 'skateboard'), (42, 'surfboard'), (43, 'tennis racket'),
    (44, 'bottle'), (46, 'wine glass'), (47, 'cup'), (48, 'fork'), (49, 'knife'),
    (50, 'spoon'), (51, 'bowl'), (52, 'banana'), (53, 'apple'), (54, 'sandwich'),
    (55, 'orange'), (56, 'broccoli'), (57, 'carrot'), (58, 'hot dog'), (59, 'pizza'),
    (60, 'donut'), (61, 'cake'), (62, 'chair'), (63, 'couch'), (64, 'potted plant'),
    (65, 'bed'), (67, 'dining table'), (70, 'toilet'), (72, 'tv'), (73, 'laptop'),
    (74, 'mouse'), (75, 'remote'), (76, 'keyboard'), (77, 'cell phone'), (78, 'microwave'),
    (79, 'oven'), (80, 'toaster'), (81, 'sink'), (82, 'refrigerator'), (84, 'book'),
    (85, 'clock'), (86, 'vase'), (87, 'scissors'), (88, 'teddy bear'), (89, 'hair drier'),
    (90, 'toothbrush'),
)

# The 91 COCO-Stuff stuff categories, category ids 92..182 in this order.
_STUFF_NAMES = (
    'banner', 'blanket', 'branch', 'bridge', 'building-other', 'bush', 'cabinet', 'cage',
    'cardboard', 'carpet', 'ceiling-other', 'ceiling-tile', 'cloth', 'clothes', 'clouds',
    'counter', 'cupboard', 'curtain', 'desk-stuff', 'dirt', 'door-stuff', 'fence',
    'floor-marble', 'floor-other', 'floor-stone', 'floor-tile', 'floor-wood', 'flower', 'fog',
    'food-other', 'fruit', 'furniture-other', 'grass', 'gravel', 'ground-other', 'hill',
    'house', 'leaves', 'light', 'mat', 'metal', 'mirror-stuff', 'moss', 'mountain', 'mud',
    'napkin', 'net', 'paper', 'pavement', 'pillow', 'plant-other', 'plastic', 'platform',
    'playingfield', 'railing', 'railroad', 'river', 'road', 'rock', 'roof', 'rug', 'salad',
    'sand', 'sea', 'shelf', 'sky-other', 'skyscraper', 'snow', 'solid-other', 'stairs',
    'stone', 'straw', 'structural-other', 'table', 'tent', 'textile-other', 'towel', 'tree',
    'vegetable', 'wall-brick', 'wall-concrete', 'wall-other', 'wall-panel', 'wall-stone',
    'wall-tile', 'wall-wood', 'water-other', 'waterdrops', 'window-blind', 'window-other',
    'wood',
)
COCO_STUFFS: Tuple[Tuple[int, str], ...] = tuple((92 + i, n) for i, n in enumerate(_STUFF_NAMES))

# The 171 kept classes in train-id order: the 80 things, then the 91 stuffs.
COCO_STUFF_CLASSES: Tuple[Tuple[int, str], ...] = COCO_THINGS + COCO_STUFFS
NUM_COCO_THINGS = len(COCO_THINGS)  # train ids 0..79 are the things


def _coco_raw_to_train_lut() -> np.ndarray:
    lut = np.full(256, 255, dtype=np.uint8)
    for train_id, (cat_id, _) in enumerate(COCO_STUFF_CLASSES):
        lut[cat_id - 1] = train_id
    return lut


RAW_TO_TRAIN_LUT = _coco_raw_to_train_lut()
# train id -> COCO-Object label: things 0..79 -> 1..80, everything else (stuff, 255) -> 0
TRAIN_TO_OBJECT_LUT = np.zeros(256, dtype=np.uint8)
TRAIN_TO_OBJECT_LUT[:NUM_COCO_THINGS] = np.arange(1, NUM_COCO_THINGS + 1, dtype=np.uint8)


def _apply_lut(array, lut: np.ndarray, fill: int, what: str) -> np.ndarray:
    """Map integer label values through ``lut``; values outside the table get ``fill``."""
    a = np.asarray(array)
    if a.dtype.kind not in 'biu':
        if a.dtype.kind == 'f' and np.all(np.equal(np.mod(a, 1), 0)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f'{what}: expected an integer label array, got dtype {a.dtype}')
    if a.dtype == np.uint8 and len(lut) >= 256:
        return lut[a]
    a = a.astype(np.int64, copy=False)
    out = np.full(a.shape, fill, dtype=lut.dtype)
    inside = (a >= 0) & (a < len(lut))
    out[inside] = lut[a[inside]]
    return out


def raw_stuff_to_train_ids(array) -> np.ndarray:
    """Map a raw COCO-Stuff stuffthingmap to the 171 train ids.

    Raw pixel values are COCO category id - 1 (things 0..89 sparse, stuff 91..181,
    255 unlabelled). Things become train ids 0..79 and stuff 80..170, both in COCO id
    order (= ``clearclip_seg/vocabularies/coco_stuff164k.txt`` order); every other
    value (unused ids, 255, out of range) becomes 255.

    Args:
        array: Integer array of raw ids (any shape).

    Returns:
        ``uint8`` array of the same shape with train ids 0..170 or 255.
    """
    return _apply_lut(array, RAW_TO_TRAIN_LUT, 255, 'raw_stuff_to_train_ids')


def train_ids_to_object_labels(array) -> np.ndarray:
    """Map COCO-Stuff train ids (``*_labelTrainIds.png``) to COCO-Object labels.

    Train ids 0..79 (the 80 things) become 1..80; all other values (stuff 80..170,
    unlabelled 255, anything else) become 0 (background). Nothing is ignored.

    Args:
        array: Integer array of train ids.

    Returns:
        ``uint8`` array with values 0..80.
    """
    return _apply_lut(array, TRAIN_TO_OBJECT_LUT, 0, 'train_ids_to_object_labels')


def stuff_to_object_labels(label_array, raw: bool = False) -> np.ndarray:
    """COCO-Object labels from a COCO-Stuff-164k mask (PROTOCOL.md rule).

    Each of the 80 thing classes becomes 1..80 in COCO-Stuff's train-id order, every
    other value (stuff and unlabelled 255 alike) becomes 0.

    Args:
        label_array: The mask: train ids (``*_labelTrainIds.png``, things are 0..79) by
            default, or raw stuffthingmap ids (COCO's sparse category id - 1) with
            ``raw=True``.
        raw: Whether ``label_array`` holds raw ids.

    Returns:
        ``uint8`` array with values 0..80.
    """
    train = raw_stuff_to_train_ids(label_array) if raw else label_array
    return train_ids_to_object_labels(train)


# --------------------------------------------------------------------------------------
# Cityscapes: labelIds -> the 19 train ids
# --------------------------------------------------------------------------------------

# Standard Cityscapes labelId -> trainId for the 19 evaluated classes; every other
# labelId (void, rare and unused classes) maps to 255.
CITYSCAPES_LABEL_TO_TRAIN: Dict[int, int] = {
    7: 0,    # road
    8: 1,    # sidewalk
    11: 2,   # building
    12: 3,   # wall
    13: 4,   # fence
    17: 5,   # pole
    19: 6,   # traffic light
    20: 7,   # traffic sign
    21: 8,   # vegetation
    22: 9,   # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
CITYSCAPES_LUT = np.full(256, 255, dtype=np.uint8)
for _lid, _tid in CITYSCAPES_LABEL_TO_TRAIN.items():
    CITYSCAPES_LUT[_lid] = _tid


def cityscapes_label_to_train_id(array) -> np.ndarray:
    """Map a Cityscapes ``*_gtFine_labelIds.png`` array to train ids.

    Args:
        array: Integer array of Cityscapes label ids (0..33, -1 for license plate).

    Returns:
        ``uint8`` array with train ids 0..18, 255 for everything not evaluated.
    """
    return _apply_lut(array, CITYSCAPES_LUT, 255, 'cityscapes_label_to_train_id')


# --------------------------------------------------------------------------------------
# Pascal Context: Detail API category ids -> 0..59
# --------------------------------------------------------------------------------------

# The 59 Pascal Context classes and their category ids in the full Pascal Context label
# set (as returned by the Detail API's getMask). Sorted by id they give labels 1..59, in
# the order of clearclip_seg/vocabularies/context59.txt; everything else is 0.
CONTEXT59_DETAIL_IDS: Dict[str, int] = {
    'aeroplane': 2, 'bag': 9, 'bed': 18, 'bedclothes': 19, 'bench': 22, 'bicycle': 23,
    'bird': 25, 'boat': 31, 'book': 33, 'bottle': 34, 'building': 44, 'bus': 45,
    'cabinet': 46, 'car': 59, 'cat': 65, 'ceiling': 68, 'chair': 72, 'cloth': 80,
    'computer': 85, 'cow': 98, 'cup': 104, 'curtain': 105, 'dog': 113, 'door': 115,
    'fence': 144, 'floor': 158, 'flower': 159, 'food': 162, 'grass': 187, 'ground': 189,
    'horse': 207, 'keyboard': 220, 'light': 232, 'motorbike': 258, 'mountain': 259,
    'mouse': 260, 'person': 284, 'plate': 295, 'platform': 296, 'pottedplant': 308,
    'road': 324, 'rock': 326, 'sheep': 347, 'shelves': 349, 'sidewalk': 354, 'sign': 355,
    'sky': 360, 'snow': 366, 'sofa': 368, 'table': 397, 'track': 415, 'train': 416,
    'tree': 420, 'truck': 424, 'tvmonitor': 427, 'wall': 440, 'water': 445, 'window': 454,
    'wood': 458,
}
CONTEXT_LUT = np.zeros(512, dtype=np.uint8)
for _label, _cid in enumerate(sorted(CONTEXT59_DETAIL_IDS.values()), start=1):
    CONTEXT_LUT[_cid] = _label


def context_mask_to_labels(mask) -> np.ndarray:
    """Map a Detail API class mask (full Pascal Context category ids) to labels 0..59.

    The 59 classes become 1..59 (ascending category id, = context59 vocabulary order);
    0 and every other category become 0 (background).

    Args:
        mask: 2-D array of category ids (``Detail.getMask(img)``; may be float).

    Returns:
        ``uint8`` array with values 0..59.
    """
    return _apply_lut(mask, CONTEXT_LUT, 0, 'context_mask_to_labels')


# --------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------

def _tmp_name(path: Path, suffix: str = '.tmp') -> Path:
    """A hidden temporary name next to ``path`` (same folder, so os.replace is atomic)."""
    return path.with_name(f'.{path.name}.{os.getpid()}{suffix}')


def atomic_save_png(array, path) -> None:
    """Write a single-channel uint8 PNG atomically (temp name in the same folder, then rename).

    Args:
        array: 2-D array with values 0..255.
        path: Destination file.
    """
    path = Path(path)
    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f'{path}: expected a 2-D label array, got shape {a.shape}')
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f'{path}: label values must be 0..255, got {a.min()}..{a.max()}')
        a = a.astype(np.uint8)
    tmp = _tmp_name(path)
    try:
        Image.fromarray(a).save(tmp, format='PNG')  # 2-D uint8 -> mode L
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write a text file atomically.

    Args:
        path: Destination file.
        text: The full content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text, encoding='utf-8')
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_label(path) -> np.ndarray:
    """Read a label PNG as a 2-D integer array (palette PNGs give their indices).

    Args:
        path: The PNG file.

    Returns:
        The 2-D array.
    """
    with Image.open(path) as im:
        a = np.array(im)
    if a.ndim != 2:
        raise ValueError(f'{path}: expected a single-channel label image, got shape {a.shape}')
    return a


# --------------------------------------------------------------------------------------
# Conversions over folders (multiprocessing, skip finished files)
# --------------------------------------------------------------------------------------

@dataclass
class ConversionResult:
    """How many label files a conversion wrote and how many it found already done."""
    converted: int
    skipped: int
    total: int


_DETAIL = None  # the Detail API object, set before forking the context workers


def _json_to_train_ids(src: str, dst: Path) -> None:
    from cityscapesscripts.preparation.json2labelImg import json2labelImg
    tmp = _tmp_name(dst, '.tmp.png')
    try:
        json2labelImg(src, str(tmp), 'trainIds')
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_CONVERTERS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'coco_stuff': raw_stuff_to_train_ids,
    'coco_object': lambda a: stuff_to_object_labels(a, raw=False),
    'coco_object_raw': lambda a: stuff_to_object_labels(a, raw=True),
    'cityscapes_table': cityscapes_label_to_train_id,
}


def _convert_one(task: Tuple[str, object, str]) -> Optional[str]:
    """Worker: do one conversion; return None on success, else an error line."""
    kind, src, dst = task
    try:
        dst_p = Path(dst)
        if dst_p.exists():
            return None
        if kind == 'cityscapes_json':
            _json_to_train_ids(str(src), dst_p)
        elif kind == 'context':
            if _DETAIL is None:
                raise RuntimeError('the Detail API object is not loaded')
            atomic_save_png(context_mask_to_labels(_DETAIL.getMask(src)), dst_p)
        else:
            atomic_save_png(_CONVERTERS[kind](read_label(src)), dst_p)
        return None
    except Exception as e:  # reported by the caller, with the file name
        return f'{src}: {type(e).__name__}: {e}'


def run_conversions(tasks: Sequence[Tuple[str, object, str]], nproc: int = 1,
                    desc: str = 'convert') -> ConversionResult:
    """Run conversion tasks, skipping those whose output already exists.

    Args:
        tasks: ``(kind, source, destination)`` triples (see ``_convert_one``).
        nproc: Worker processes (1: in this process).
        desc: Progress bar label.

    Returns:
        The counts of converted and skipped files.

    Raises:
        PrepareError: When any conversion failed (the first few failures are printed).
    """
    todo = [t for t in tasks if not os.path.exists(t[2])]
    skipped = len(tasks) - len(todo)
    errors: List[str] = []
    if todo:
        if nproc > 1 and len(todo) > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context('fork' if 'fork' in methods else None)
            with ctx.Pool(min(nproc, len(todo))) as pool:
                it = pool.imap_unordered(_convert_one, todo, chunksize=8)
                for err in tqdm(it, total=len(todo), desc=desc, unit='file'):
                    if err:
                        errors.append(err)
        else:
            for t in tqdm(todo, desc=desc, unit='file'):
                err = _convert_one(t)
                if err:
                    errors.append(err)
    if errors:
        for e in errors[:5]:
            print(f'  conversion failed: {e}', file=sys.stderr)
        raise PrepareError(f'{desc}: {len(errors)} of {len(todo)} conversions failed '
                           f'(first: {errors[0]})')
    return ConversionResult(converted=len(todo), skipped=skipped, total=len(tasks))


_DERIVED_SUFFIXES = ('_labelTrainIds.png', '_instanceTrainIds.png')


def _visible_files(folder: Path, suffix: str, recursive: bool = False) -> List[Path]:
    """Files in ``folder`` ending with ``suffix``, sorted, hidden (temporary) files skipped."""
    it = folder.rglob(f'*{suffix}') if recursive else folder.glob(f'*{suffix}')
    return sorted(p for p in it if p.is_file() and not p.name.startswith('.'))


def convert_coco_stuff(ann_dir, nproc: int = 1) -> ConversionResult:
    """Write ``<id>_labelTrainIds.png`` next to each raw stuffthingmap ``<id>.png``.

    Args:
        ann_dir: Folder with the raw COCO-Stuff maps (e.g. annotations/val2017).
        nproc: Worker processes.

    Returns:
        The conversion counts.
    """
    ann_dir = Path(ann_dir)
    raws = [p for p in _visible_files(ann_dir, '.png') if not p.name.endswith(_DERIVED_SUFFIXES)]
    tasks = [('coco_stuff', str(p), str(p.with_name(p.stem + '_labelTrainIds.png'))) for p in raws]
    if not tasks and not _visible_files(ann_dir, '_labelTrainIds.png'):
        raise PrepareError(f'{ann_dir}: no raw COCO-Stuff maps (<id>.png) to convert')
    return run_conversions(tasks, nproc, desc='coco_stuff164k labelTrainIds')


def convert_coco_object(ann_dir, nproc: int = 1, from_raw: bool = False) -> ConversionResult:
    """Write ``<id>_instanceTrainIds.png`` (COCO-Object labels 0..80) next to the COCO-Stuff masks.

    Args:
        ann_dir: Folder with the COCO-Stuff masks.
        nproc: Worker processes.
        from_raw: Read raw stuffthingmaps ``<id>.png`` instead of ``<id>_labelTrainIds.png``.

    Returns:
        The conversion counts.
    """
    ann_dir = Path(ann_dir)
    if from_raw:
        srcs = [p for p in _visible_files(ann_dir, '.png') if not p.name.endswith(_DERIVED_SUFFIXES)]
        tasks = [('coco_object_raw', str(p), str(p.with_name(p.stem + '_instanceTrainIds.png')))
                 for p in srcs]
        what = 'raw COCO-Stuff maps (<id>.png)'
    else:
        srcs = _visible_files(ann_dir, '_labelTrainIds.png')
        tasks = [('coco_object', str(p),
                  str(p.with_name(p.name[:-len('_labelTrainIds.png')] + '_instanceTrainIds.png')))
                 for p in srcs]
        what = '*_labelTrainIds.png (run `prepare_data.py coco_stuff164k` first, or use --from-raw)'
    if not tasks:
        raise PrepareError(f'{ann_dir}: no {what}')
    return run_conversions(tasks, nproc, desc='coco_object instanceTrainIds')


def _cityscapes_scripts_available() -> bool:
    try:
        from cityscapesscripts.preparation.json2labelImg import json2labelImg  # noqa: F401
        return True
    except Exception:
        return False


def convert_cityscapes(gt_dir, nproc: int = 1, method: str = 'auto') -> ConversionResult:
    """Write ``*_gtFine_labelTrainIds.png`` for every Cityscapes annotation under ``gt_dir``.

    Args:
        gt_dir: A gtFine folder (e.g. gtFine/val with one sub-folder per city).
        nproc: Worker processes.
        method: ``scripts`` (cityscapesscripts' json2labelImg on ``*_gtFine_polygons.json``),
            ``table`` (this file's labelId->trainId table on ``*_gtFine_labelIds.png``) or
            ``auto`` (scripts when importable and the polygons are there, else table).

    Returns:
        The conversion counts.
    """
    gt_dir = Path(gt_dir)
    jsons = _visible_files(gt_dir, '_gtFine_polygons.json', recursive=True)
    if method == 'auto':
        method = 'scripts' if jsons and _cityscapes_scripts_available() else 'table'
    if method == 'scripts':
        if not _cityscapes_scripts_available():
            raise PrepareError('cityscapesscripts is not importable: pip install cityscapesscripts, '
                               'or use --cityscapes-method table')
        tasks = [('cityscapes_json', str(p),
                  str(p.with_name(p.name[:-len('_polygons.json')] + '_labelTrainIds.png'))) for p in jsons]
    elif method == 'table':
        ids = _visible_files(gt_dir, '_gtFine_labelIds.png', recursive=True)
        tasks = [('cityscapes_table', str(p),
                  str(p.with_name(p.name[:-len('_labelIds.png')] + '_labelTrainIds.png'))) for p in ids]
    else:
        raise ValueError(f"method must be 'auto', 'scripts' or 'table', got {method!r}")
    if not tasks:
        raise PrepareError(f'{gt_dir}: no Cityscapes annotations (*_gtFine_polygons.json / '
                           '*_gtFine_labelIds.png) found')
    return run_conversions(tasks, nproc, desc=f'cityscapes labelTrainIds ({method})')


# --------------------------------------------------------------------------------------
# Downloads, checksums, extraction
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Archive:
    """An official download."""
    filename: str
    url: Optional[str]            # None: needs a login, fetch by hand
    page: str                     # where a person gets it
    checksum: Optional[Tuple[str, str]] = None  # (hashlib algorithm, hex digest), if known


ARCHIVES: Dict[str, Archive] = {
    'voc2012': Archive('VOCtrainval_11-May-2012.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/',
                       ('md5', '6cd6e144f989b92b3379bac3b3de84fd')),
    'voc2010': Archive('VOCtrainval_03-May-2010.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2010/',
                       ('md5', 'da459979d0c395079b5c75ee67908abb')),
    'context_json': Archive('trainval_merged.json',
                            'https://codalabuser.blob.core.windows.net/public/trainval_merged.json',
                            'https://cs.stanford.edu/~roozbeh/pascal-context/ '
                            '(merged annotations as used by MMSegmentation)'),
    'coco_val2017': Archive('val2017.zip', 'http://images.cocodataset.org/zips/val2017.zip',
                            'https://cocodataset.org/#download',
                            ('md5', '442b8da7639aecaf257c1dceb8ba8c80')),
    'coco_stuffthingmaps': Archive(
        'stuffthingmaps_trainval2017.zip',
        'http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip',
        'https://github.com/nightrome/cocostuff#downloads'),
    'ade20k': Archive('ADEChallengeData2016.zip',
                      'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip',
                      'http://sceneparsing.csail.mit.edu/',
                      ('sha1', '219e1696abb36c8ba3a3afe7fb2f4b4606a897c7')),
    'cityscapes_images': Archive('leftImg8bit_trainvaltest.zip', None,
                                 'https://www.cityscapes-dataset.com/downloads/ (login; packageID=3)'),
    'cityscapes_gt': Archive('gtFine_trainvaltest.zip', None,
                             'https://www.cityscapes-dataset.com/downloads/ (login; packageID=1)'),
}

CHECKSUM_RECORD = 'checksums.json'


def download(url: str, dest, desc: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; resumes a ``.part`` file if the server allows.

    Args:
        url: Source URL.
        dest: Destination file; written as ``dest.part`` and renamed when complete.
        desc: Progress bar label.

    Returns:
        ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    for attempt in (0, 1):
        start = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={'User-Agent': 'clearclip-seg/prepare_data'})
        if start:
            req.add_header('Range', f'bytes={start}-')
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                if start and getattr(resp, 'status', 200) != 206:
                    start = 0  # the server ignored the range: start over
                length = resp.headers.get('Content-Length')
                total = int(length) + start if length else None
                with open(part, 'ab' if start else 'wb') as f, \
                        tqdm(total=total, initial=start, unit='B', unit_scale=True,
                             unit_divisor=1024, desc=desc or dest.name) as bar:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.update(len(chunk))
            if total is not None and part.stat().st_size != total:
                raise PrepareError(f'{url}: download ended early ({part.stat().st_size} of {total} '
                                   'bytes); re-run to resume')
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            if e.code == 416 and attempt == 0:  # stale .part: start over once
                part.unlink(missing_ok=True)
                continue
            raise PrepareError(f'{url}: HTTP {e.code} {e.reason}') from e
        except urllib.error.URLError as e:
            raise PrepareError(f'{url}: cannot download ({e.reason}); fetch it by hand into '
                               f'{dest.parent} and re-run with --no-download') from e
    raise PrepareError(f'{url}: download failed')


def file_digests(path, algorithms: Iterable[str] = ('sha256',)) -> Dict[str, str]:
    """Hash a file with several algorithms in one pass (with a progress bar for big files).

    Args:
        path: The file.
        algorithms: hashlib names.

    Returns:
        ``{algorithm: hex digest}``.
    """
    path = Path(path)
    hashes = {a: hashlib.new(a) for a in dict.fromkeys(algorithms)}
    size = path.stat().st_size
    with open(path, 'rb') as f, tqdm(total=size, unit='B', unit_scale=True, unit_divisor=1024,
                                     desc=f'checksum {path.name}', disable=size < (64 << 20)) as bar:
        while True:
            chunk = f.read(4 << 20)
            if not chunk:
                break
            for h in hashes.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {a: h.hexdigest() for a, h in hashes.items()}


def verify_archive(path, expected: Optional[Tuple[str, str]] = None,
                   record_file=None) -> Dict[str, str]:
    """Check an archive's checksum; record its sha256 (and skip re-hashing an unchanged file).

    Args:
        path: The archive.
        expected: ``(algorithm, hex digest)`` when known; otherwise only recorded.
        record_file: JSON file of computed digests (default: ``checksums.json`` beside ``path``).

    Returns:
        The digests computed (or recorded earlier) for the file.

    Raises:
        PrepareError: On a checksum mismatch.
    """
    path = Path(path)
    record_file = Path(record_file) if record_file else path.parent / CHECKSUM_RECORD
    try:
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
    except (OSError, ValueError):
        record = {}
    st = path.stat()
    entry = record.get(path.name)
    algos = ['sha256'] + ([expected[0]] if expected else [])
    if not (entry and entry.get('size') == st.st_size and entry.get('mtime_ns') == st.st_mtime_ns
            and all(a in entry for a in algos)):
        entry = {'size': st.st_size, 'mtime_ns': st.st_mtime_ns, **file_digests(path, algos)}
        if not expected:
            print(f'  {path.name}: no known checksum; sha256 {entry["sha256"]} (recorded in {record_file})')
    if expected:
        algo, want = expected
        if entry[algo].lower() != want.lower():
            raise PrepareError(f'{path}: {algo} is {entry[algo]}, expected {want} (corrupt or different '
                               'file); delete it and re-run, or pass --no-verify')
    record[path.name] = entry
    atomic_write_text(record_file, json.dumps(record, indent=1, sort_keys=True) + '\n')
    return entry


def ensure_archive(key: str, download_dir, no_download: bool = False, no_verify: bool = False) -> Path:
    """Return the path of an official archive, downloading and verifying it as needed.

    Args:
        key: A key of ``ARCHIVES``.
        download_dir: Where archives are kept.
        no_download: Only use an archive already present.
        no_verify: Skip the checksum.

    Returns:
        The archive path.

    Raises:
        PrepareError: When it is missing and cannot be downloaded, or fails its checksum.
    """
    arc = ARCHIVES[key]
    path = Path(download_dir) / arc.filename
    if not path.exists():
        if arc.url is None:
            raise PrepareError(f'{path} not found: {arc.filename} needs a login; download it from '
                               f'{arc.page} into {Path(download_dir)}')
        if no_download:
            raise PrepareError(f'{path} not found (--no-download): get it from {arc.url} or {arc.page}')
        print(f'downloading {arc.url}')
        download(arc.url, path)
    if not no_verify:
        verify_archive(path, arc.checksum)
    return path


def _norm_member(name: str) -> str:
    while name.startswith('./'):
        name = name[2:]
    return name


def _locate_prefix(names: Sequence[str], wanted: str, archive) -> str:
    """The member prefix in the archive that ends with ``wanted`` (e.g. ``val2017/``)."""
    wanted = wanted.rstrip('/') + '/'
    if any(n.startswith(wanted) for n in names):
        return wanted
    for n in names:
        i = n.find('/' + wanted)
        if i >= 0:
            return n[:i + 1 + len(wanted)]
    raise PrepareError(f'{archive}: no members under {wanted!r}; is this the right archive?')


def extract_subtree(archive, member_prefix: str, dest) -> bool:
    """Extract the members under ``member_prefix`` so that they become ``dest``.

    Extraction goes to a hidden temporary folder next to ``dest`` that is renamed to
    ``dest`` at the end, so ``dest`` existing means the extraction finished.

    Args:
        archive: A .zip or .tar(.gz) file.
        member_prefix: Folder inside the archive, e.g. ``VOCdevkit/VOC2012/``; also found
            when the archive nests it one level deeper.
        dest: The folder to create.

    Returns:
        True when extracted, False when ``dest`` already existed.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f'.tmp-extract-{dest.name}'
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    desc = f'extract {archive.name}:{member_prefix}'
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                prefix = _locate_prefix([_norm_member(i.filename) for i in infos], member_prefix, archive)
                chosen = [i for i in infos if _norm_member(i.filename).startswith(prefix)]
                for info in tqdm(chosen, desc=desc, unit='file'):
                    zf.extract(info, tmp)
        else:
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                prefix = _locate_prefix([_norm_member(m.name) for m in members], member_prefix, archive)
                chosen = [m for m in members if _norm_member(m.name).startswith(prefix)]
                kwargs = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
                for m in tqdm(chosen, desc=desc, unit='file'):
                    tf.extract(m, tmp, **kwargs)
        os.replace(tmp / prefix.rstrip('/'), dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------

@dataclass
class Options:
    """Settings shared by the steps."""
    data_root: Path
    download_dir: Path
    nproc: int = 1
    no_download: bool = False
    no_verify: bool = False
    with_train: bool = False
    from_raw: bool = False
    ann_dir: Optional[Path] = None
    cityscapes_method: str = 'auto'
    check: bool = True


def bench_root(opts: Options, key: str) -> Path:
    """The data root of benchmark ``key`` under ``opts.data_root`` (from the benchmark table)."""
    rel = rel_to_data_dir(get_benchmark(key))
    return rel if rel.is_absolute() else opts.data_root / rel


def _extract(opts: Options, archive_key: str, member_prefix: str, dest: Path) -> None:
    if dest.exists():
        print(f'  {dest}: present, skipped')
        return
    arc = ensure_archive(archive_key, opts.download_dir, opts.no_download, opts.no_verify)
    extract_subtree(arc, member_prefix, dest)
    print(f'  {dest}: extracted from {arc.name}')


def _report(result: ConversionResult, what: str) -> None:
    print(f'  {what}: {result.converted} written, {result.skipped} already there ({result.total} in all)')


def prepare_voc(opts: Options) -> List[str]:
    """VOC2012 trainval tar -> data/VOCdevkit/VOC2012 (voc21, voc20)."""
    _extract(opts, 'voc2012', 'VOCdevkit/VOC2012/', bench_root(opts, 'voc21'))
    return ['voc21']


def _load_detail(json_path: Path, img_dir: Path):
    try:
        from detail import Detail
    except ImportError:
        raise PrepareError("the Pascal Context conversion needs the Detail API: pip install "
                           "'git+https://github.com/zhanghang1989/detail-api.git#subdirectory=PythonAPI'")
    return Detail(str(json_path), str(img_dir), 'trainval')


def prepare_context(opts: Options) -> List[str]:
    """VOC2010 tar + trainval_merged.json -> SegmentationClassContext (0..59) and split files."""
    global _DETAIL
    b = get_benchmark('context60')
    root = bench_root(opts, 'context60')
    _extract(opts, 'voc2010', 'VOCdevkit/VOC2010/', root)
    ann_dir = root / b.ann_dir
    split_dir = (root / b.ann_file).parent
    phases = ['train', 'val'] if opts.with_train else ['val']

    def _done(phase: str) -> bool:
        split = split_dir / f'{phase}.txt'
        if not split.exists():
            return False
        ids = [s.strip() for s in split.read_text().split() if s.strip()]
        return all((ann_dir / f'{i}{b.seg_map_suffix}').exists() for i in ids)

    if all(_done(p) for p in phases) and (split_dir / 'train.txt').exists():
        print(f'  {ann_dir}: complete for {"/".join(phases)}, skipped')
        return ['context60']
    json_path = ensure_archive('context_json', opts.download_dir, opts.no_download, opts.no_verify)
    detail = _load_detail(json_path, root / b.img_dir)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for phase in ('train', 'val'):
        imgs = sorted(detail.getImgs(phase=phase), key=lambda im: im['file_name'])
        stems = [Path(im['file_name']).stem for im in imgs]
        atomic_write_text(split_dir / f'{phase}.txt', ''.join(s + '\n' for s in stems))
        print(f'  {split_dir / (phase + ".txt")}: {len(stems)} ids')
        if phase not in phases:
            continue
        tasks = [('context', im['image_id'], str(ann_dir / f'{s}{b.seg_map_suffix}'))
                 for im, s in zip(imgs, stems)]
        _DETAIL = detail  # inherited by the forked workers
        try:
            _report(run_conversions(tasks, opts.nproc, desc=f'context {phase} labels'), f'{phase} labels')
        finally:
            _DETAIL = None
    return ['context60']


def prepare_coco_stuff(opts: Options) -> List[str]:
    """val2017.zip + stuffthingmaps_trainval2017.zip -> coco_stuff164k (images, *_labelTrainIds.png)."""
    b = get_benchmark('coco_stuff164k')
    root = bench_root(opts, 'coco_stuff164k')
    _extract(opts, 'coco_val2017', 'val2017/', root / b.img_dir)
    _extract(opts, 'coco_stuffthingmaps', 'val2017/', root / b.ann_dir)
    _report(convert_coco_stuff(root / b.ann_dir, opts.nproc), 'labelTrainIds')
    return ['coco_stuff164k']


def prepare_coco_object(opts: Options) -> List[str]:
    """COCO-Stuff-164k masks -> *_instanceTrainIds.png (things 1..80, everything else 0)."""
    b = get_benchmark('coco_object')
    if opts.ann_dir is not None:
        ann_dir = Path(opts.ann_dir)
    else:
        if opts.from_raw:  # images + raw maps only
            root = bench_root(opts, 'coco_stuff164k')
            sb = get_benchmark('coco_stuff164k')
            _extract(opts, 'coco_val2017', 'val2017/', root / sb.img_dir)
            _extract(opts, 'coco_stuffthingmaps', 'val2017/', root / sb.ann_dir)
        else:
            prepare_coco_stuff(opts)
        ann_dir = bench_root(opts, 'coco_object') / b.ann_dir
    _report(convert_coco_object(ann_dir, opts.nproc, from_raw=opts.from_raw), 'instanceTrainIds')
    return ['coco_object'] if opts.ann_dir is None else []


def prepare_cityscapes(opts: Options) -> List[str]:
    """leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip -> cityscapes (*_gtFine_labelTrainIds.png)."""
    root = bench_root(opts, 'cityscapes')
    splits = ['train', 'val'] if opts.with_train else ['val']
    for split in splits:
        _extract(opts, 'cityscapes_images', f'leftImg8bit/{split}/', root / 'leftImg8bit' / split)
        _extract(opts, 'cityscapes_gt', f'gtFine/{split}/', root / 'gtFine' / split)
        _report(convert_cityscapes(root / 'gtFine' / split, opts.nproc, opts.cityscapes_method),
                f'{split} labelTrainIds')
    return ['cityscapes']


def prepare_ade20k(opts: Options) -> List[str]:
    """ADEChallengeData2016.zip -> ade/ADEChallengeData2016 (labels used as they are)."""
    _extract(opts, 'ade20k', 'ADEChallengeData2016/', bench_root(opts, 'ade20k'))
    return ['ade20k']


STEPS: Dict[str, Callable[[Options], List[str]]] = {
    'voc': prepare_voc,
    'context': prepare_context,
    'coco_stuff164k': prepare_coco_stuff,
    'coco_object': prepare_coco_object,
    'cityscapes': prepare_cityscapes,
    'ade20k': prepare_ade20k,
}


def run_step(name: str, opts: Options) -> bool:
    """Run one step, then check its benchmarks; return True when all went well."""
    print(f'== {name}')
    t0 = time.time()
    try:
        keys = STEPS[name](opts)
    except PrepareError as e:
        print(f'error: {name}: {e}', file=sys.stderr)
        return False
    ok = True
    if opts.check:
        from check_data import check_benchmark
        for key in keys:
            problems = check_benchmark(key, data_root=bench_root(opts, key), max_files=20)
            for p in problems:
                print(f'  {key}: {p}', file=sys.stderr)
            ok = ok and not problems
            print(f'  check {key}: {"OK" if not problems else "FAILED"}')
    print(f'== {name}: {"done" if ok else "done, with problems"} ({time.time() - t0:.0f} s)')
    return ok


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('step', choices=list(STEPS) + ['all'], help='what to prepare')
    p.add_argument('--data-root', default=str(REPO_ROOT / 'data'),
                   help='the data/ folder the benchmark roots go under (default: the repository\'s data/)')
    p.add_argument('--download-dir', default=None, help='where archives are kept (default <data-root>/downloads)')
    p.add_argument('--nproc', type=int, default=max(1, min(8, os.cpu_count() or 1)),
                   help='worker processes for the conversions')
    p.add_argument('--no-download', action='store_true', help='only use archives already in --download-dir')
    p.add_argument('--no-verify', action='store_true', help='skip archive checksums')
    p.add_argument('--with-train', action='store_true',
                   help='also make the training split (context masks, cityscapes); evaluation needs only val')
    p.add_argument('--from-raw', action='store_true',
                   help='coco_object: read raw stuffthingmaps <id>.png instead of <id>_labelTrainIds.png')
    p.add_argument('--ann-dir', default=None,
                   help='coco_object: convert the masks in this folder (writes *_instanceTrainIds.png there)')
    p.add_argument('--cityscapes-method', choices=['auto', 'scripts', 'table'], default='auto',
                   help='cityscapes: cityscapesscripts on polygons, or the labelId table on *_labelIds.png')
    p.add_argument('--no-check', action='store_true', help='skip the check_data pass after each step')
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    data_root = Path(args.data_root)
    opts = Options(data_root=data_root,
                   download_dir=Path(args.download_dir) if args.download_dir else data_root / 'downloads',
                   nproc=max(1, args.nproc), no_download=args.no_download, no_verify=args.no_verify,
                   with_train=args.with_train, from_raw=args.from_raw,
                   ann_dir=Path(args.ann_dir) if args.ann_dir else None,
                   cityscapes_method=args.cityscapes_method, check=not args.no_check)
    steps = list(STEPS) if args.step == 'all' else [args.step]
    results = {s: run_step(s, opts) for s in steps}
    if len(steps) > 1:
        print('summary: ' + ', '.join(f'{s} {"ok" if ok else "FAILED"}' for s, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
