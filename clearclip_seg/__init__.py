"""ClearCLIP-Seg: training-free open-vocabulary segmentation with CLIP on MMSeg.

Importing the package registers its segmentor, data preprocessor, datasets
and metric in MMSegmentation's registries.
"""
__version__ = '0.1.0'

from . import datasets, evaluation, models, visualization  # noqa: F401,E402  (registration)
