from .iou_metric import ClearCLIPIoUMetric

__all__ = ['ClearCLIPIoUMetric']
