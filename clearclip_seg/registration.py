"""Import the modules that register ClearCLIP-Seg's components in MMSeg's registries.

Configs name this module in ``custom_imports``; code calls
``clearclip_seg.register_all_modules()``.
"""
from . import datasets, methods, models, visualization  # noqa: F401
from .evaluation import iou_metric  # noqa: F401  (the package itself stays light)
from . import segmentor  # noqa: F401
from .models import data_preprocessor  # noqa: F401  (models/__init__ stays MMSeg-free)
