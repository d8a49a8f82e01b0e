from .benchmarks import COCOObjectDataset, PascalVOC20Dataset
from .transforms import ShortSideCentreCrop

__all__ = ['COCOObjectDataset', 'PascalVOC20Dataset', 'ShortSideCentreCrop']
