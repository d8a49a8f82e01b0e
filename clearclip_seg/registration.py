"""Import the modules that register ClearCLIP-Seg's components in MMSeg's registries.

Configs name this module in ``custom_imports``; code calls
``clearclip_seg.register_all_modules()``.
"""
from . import datasets, evaluation, methods, models, visualization  # noqa: F401
