from .benchmarks import COCOObjectDataset, PascalVOC20Dataset

__all__ = ['COCOObjectDataset', 'PascalVOC20Dataset']
