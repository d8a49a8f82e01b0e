"""Protocol constants shared by every benchmark (docs/protocol.md, "Pre-processing").

One place for each value: the configs are generated from here, and the
segmentor, the methods, the encoders, the tools, the tables' protocol card and
the tests read them from here (``tests/test_one_place.py`` checks that no
other module of the package writes one of them down again). Code that takes
one of these values as a default reads it when it is called, not when it is
imported, so a changed value here is followed everywhere.
"""
import os
from typing import Dict, Tuple

# Keep-ratio resize: the short side becomes SHORT_SIDE unless the long side would pass LONG_SIDE.
RESIZE_LONG_SIDE = 2048
RESIZE_SHORT_SIDE = 448
RESIZE: Tuple[int, int] = (RESIZE_LONG_SIDE, RESIZE_SHORT_SIDE)   # MMSeg Resize(scale=...) order

# OpenAI CLIP's image normalisation (0-1 scale, RGB; open_clip's OPENAI_DATASET_MEAN/STD).
OPENAI_MEAN: Tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD: Tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def x255(values) -> Tuple[float, ...]:
    """A 0-1 mean or std on MMSeg's 0-255 pixel scale, rounded as the configs write it."""
    return tuple(round(v * 255, 3) for v in values)


# The same, x 255, RGB order: the data preprocessor's mean/std (122.771, ... / 68.501, ...).
CLIP_MEAN: Tuple[float, float, float] = x255(OPENAI_MEAN)
CLIP_STD: Tuple[float, float, float] = x255(OPENAI_STD)

# ClearCLIP's last block (paper Sec. 3): q-q attention, residual connection and FFN dropped.
# Read-only: code that needs a dict of its own copies it (``dict(CLEARCLIP_LAST_BLOCK)``).
CLEARCLIP_LAST_BLOCK: Dict[str, object] = dict(attn='qq', residual=False, ffn=False)
# Vanilla CLIP's last block: the tower's own forward.
VANILLA_CLIP_LAST_BLOCK: Dict[str, object] = dict(attn='qk', residual=True, ffn=True)
# prob_thd of vanilla CLIP on the benchmarks with background (the authors ran it at 0.2 there).
VANILLA_CLIP_BACKGROUND_PROB_THD = 0.2

# ClearCLIP's scoring defaults: sliding windows, logit scale, the 80 OpenAI ImageNet templates.
TEST_MODE = 'slide'
LOGIT_SCALE = 50.0
SLIDE_CROP = 448
SLIDE_STRIDE = 224
TEMPLATES = 'openai_imagenet'
# the precision the published numbers were computed in (the authors' GPU runs)
PAPER_PRECISION = 'fp16'

# PAMR as the SCLIP-family code runs it: 10 propagation steps over dilations 8 and 16.
PAMR_NUM_ITER = 10
PAMR_DILATIONS: Tuple[int, ...] = (8, 16)

# The paper's table order: three benchmarks with background, then five without.
PAPER_ORDER: Tuple[str, ...] = ('voc21', 'context60', 'coco_object', 'voc20', 'context59', 'coco_stuff164k',
                                'cityscapes', 'ade20k')

CONFIG_DIR = 'configs'


def config_path(method: str, backbone: str, benchmark: str) -> str:
    """Where the generated config of one (method or preset, backbone, benchmark) lives."""
    return os.path.join(CONFIG_DIR, method, f'{method}_{backbone}_{benchmark}.py')
