"""Protocol constants shared by every benchmark (docs/protocol.md, "Pre-processing").

One place for each value: the configs are generated from here, and the tools,
the tables' protocol card and the tests read them from here.
"""
import os
from typing import Tuple

# Keep-ratio resize: the short side becomes SHORT_SIDE unless the long side would pass LONG_SIDE.
RESIZE_LONG_SIDE = 2048
RESIZE_SHORT_SIDE = 448
RESIZE: Tuple[int, int] = (RESIZE_LONG_SIDE, RESIZE_SHORT_SIDE)   # MMSeg Resize(scale=...) order

# CLIP's normalisation (OpenAI), x 255, RGB order: the data preprocessor's mean/std.
CLIP_MEAN: Tuple[float, float, float] = (122.771, 116.746, 104.094)
CLIP_STD: Tuple[float, float, float] = (68.501, 66.632, 70.323)

# ClearCLIP's scoring defaults.
LOGIT_SCALE = 50.0
SLIDE_CROP = 448
SLIDE_STRIDE = 224

CONFIG_DIR = 'configs'


def config_path(method: str, backbone: str, benchmark: str) -> str:
    """Where the generated config of one (method or preset, backbone, benchmark) lives."""
    return os.path.join(CONFIG_DIR, method, f'{method}_{backbone}_{benchmark}.py')
