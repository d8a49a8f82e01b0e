"""Label conversions: plain functions on numpy arrays, no file access.

COCO-Stuff-164k raw stuffthingmap ids -> 171 train ids, the COCO-Object rule (things
1..80, everything else 0), Cityscapes labelId -> trainId, and Pascal Context (Detail API
category ids -> 0..59).
"""
from typing import Dict, Tuple

import numpy as np

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
    """COCO-Object labels from a COCO-Stuff-164k mask (docs/protocol.md rule).

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
