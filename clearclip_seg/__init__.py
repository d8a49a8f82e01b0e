"""ClearCLIP-Seg: training-free open-vocabulary segmentation with CLIP on MMSeg.

``import clearclip_seg`` is light: it does not import MMSegmentation, so the
data and table tools start fast. The MMSeg components (segmentor, data
preprocessor, datasets, metric, hooks, model wrapper) are registered by
``register_all_modules()``, which configs trigger through
``custom_imports=dict(imports=['clearclip_seg.registration'])``.
"""
__version__ = '0.1.0'


def register_all_modules() -> None:
    """Register every MMSeg component of the package (idempotent)."""
    from . import registration  # noqa: F401  # lazy: it loads MMSeg (and torch); importing the package stays light


__all__ = ['register_all_modules', '__version__']
