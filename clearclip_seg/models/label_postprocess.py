"""Label-map post-processors, registered by name (``model.label_postprocess=dict(type=NAME, ...)``).

A label post-processor changes the final label map of one image (1, H, W), after
the argmax and ``prob_thd``; the class probabilities the segmentor may keep are
left as they are (ITACLIP's code stores them before its closing too). Off by
default: the segmentor applies one only when configured::

    @register_label_postprocessor('MorphClose')
    class MorphClose(LabelPostProcessor): ...

    step = build_label_postprocessor(dict(type='MorphClose'))
    labels = step(labels)          # (1, H, W) int -> (1, H, W) int64

``MorphClose`` is ITACLIP's step (method card ``itaclip_trident_cliptrase.md``
section 1.5: ``cv2.morphologyEx(pred, MORPH_CLOSE, 3 x 3 rect)`` on the label
IDs): a grey-level dilation (max of the IDs over each pixel's k x k
neighbourhood) then an erosion (min), out-of-image pixels ignored (OpenCV's
default border). It runs over bands of rows with a halo, so its working memory
stays a band's whatever the image size; the label map itself is whole already.

This module is plain torch (no MMSeg).
"""
from typing import List, Optional

import torch
import torch.nn.functional as F

from ..options import check_number
from ..registry import Registry

LABEL_POSTPROCESSORS = Registry('label post-processor', 'model.label_postprocess', 'label_postprocessor_name')
register_label_postprocessor = LABEL_POSTPROCESSORS.register

# rows of the label map closed at a time (plus the halo): ~16 MB of float32 at width 4000
BAND_ROWS = 1024


def list_label_postprocessors() -> List[str]:
    """Names of the registered label post-processors."""
    return LABEL_POSTPROCESSORS.names()


def build_label_postprocessor(cfg, key: str = 'model.label_postprocess') -> Optional['LabelPostProcessor']:
    """Build from ``dict(type=NAME, **options)``; None (or an empty dict) means none."""
    if cfg is None or isinstance(cfg, LabelPostProcessor):
        return cfg
    if not isinstance(cfg, dict):
        raise ValueError(f'{key}={cfg!r}: expected None or a dict with a type key, one of '
                         f'{list_label_postprocessors()}')
    if not cfg:
        return None
    cfg = dict(cfg)
    cls = LABEL_POSTPROCESSORS.get(cfg.pop('type', None), key)
    LABEL_POSTPROCESSORS.check_options(cls, cfg, key)
    return cls(key=key, **cfg)


class LabelPostProcessor:
    """Base class: a change of the final label map (1, H, W)."""
    label_postprocessor_name = 'LabelPostProcessor'

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith('_')}

    def describe(self) -> dict:
        return dict(type=self.label_postprocessor_name, **self.options())


def dilate(x: torch.Tensor, size: int) -> torch.Tensor:
    """Max over each pixel's size x size in-image neighbourhood of (N, 1, H, W) float maps."""
    return F.max_pool2d(x, size, stride=1, padding=size // 2)   # max_pool pads with -inf: border ignored


def erode(x: torch.Tensor, size: int) -> torch.Tensor:
    """Min over each pixel's size x size in-image neighbourhood."""
    return -dilate(-x, size)


def close_labels(labels: torch.Tensor, size: int = 3, band_rows: int = BAND_ROWS) -> torch.Tensor:
    """Morphological closing (dilation, then erosion) of integer labels (..., H, W), a band of rows at a time.

    Each band is closed with ``2 * (size // 2)`` rows of halo on each side, so
    its rows equal the whole map's closing. IDs are exact in float32 up to 2^24.
    """
    h = labels.shape[-2]
    halo = 2 * (size // 2)
    flat = labels.reshape(-1, 1, *labels.shape[-2:])
    out = torch.empty(flat.shape, dtype=torch.long, device=labels.device)
    for start in range(0, h, band_rows):
        stop = min(h, start + band_rows)
        lo, hi = max(0, start - halo), min(h, stop + halo)
        band = flat[:, :, lo:hi].float()
        closed = erode(dilate(band, size), size)
        out[:, :, start:stop] = closed[:, :, start - lo:stop - lo].long()
    return out.reshape(labels.shape)


@register_label_postprocessor('MorphClose')
class MorphClose(LabelPostProcessor):
    """Morphological closing of the label IDs with a square window (ITACLIP's 3 x 3).

    Args:
        kernel_size: odd window side in pixels (3).
        key: the config key named in errors.
    """

    def __init__(self, kernel_size: int = 3, key: str = 'model.label_postprocess'):
        self.kernel_size = check_number(kernel_size, f'{key}.kernel_size', low=1, integer=True)
        if self.kernel_size % 2 == 0:
            raise ValueError(f'{key}.kernel_size={kernel_size!r}: expected an odd number of pixels')

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        return close_labels(labels, self.kernel_size)
