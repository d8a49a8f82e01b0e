"""``ShortSideCentreCrop``: score only the central square of a short-side-resized image.

Some methods' own evaluations (CLIPtrase's ``clip_self_correlation.py``) do not
predict the whole image: torchvision's ``Resize(n)`` then ``CenterCrop(n)`` on
the image *and* its label map, and only that n x n square is predicted and
scored. This transform does the same in an MMSeg pipeline, after
``LoadAnnotations``:

* short side -> n, long side -> ``int(n * long / short)`` (torchvision's
  truncation; MMSeg's ``Resize`` rounds), the image with ``interpolation``
  through ``backend`` (``pillow`` + ``bicubic``: PIL's antialiased bicubic, as
  torchvision on PIL images), the label map with nearest neighbours;
* crop offsets ``int(round((H - n) / 2))`` and ``int(round((W - n) / 2))``
  (torchvision's, and MMCV's ``CenterCrop``'s);
* ``ori_shape`` becomes the crop's: predictions are made and scored at n x n.

``size=None`` passes everything through unchanged (the common protocol's
overrides switch a generated config's crop off that way).
"""
from typing import Optional

import mmcv
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..options import check_number


@TRANSFORMS.register_module()
class ShortSideCentreCrop(BaseTransform):
    """Resize the short side to ``size`` (torchvision's rounding) and keep the central ``size`` square.

    Args:
        size: n, the square's side in pixels; None = pass through.
        interpolation: the image's interpolation (MMCV's names; ``bicubic``).
        backend: MMCV's resize backend (``pillow``).
    """

    def __init__(self, size: Optional[int], interpolation: str = 'bicubic', backend: str = 'pillow'):
        self.size = None if size is None else check_number(size, 'ShortSideCentreCrop.size', low=1, integer=True)
        self.interpolation = interpolation
        self.backend = backend

    def resized_shape(self, h: int, w: int):
        """(h', w'): torchvision ``Resize(size)``: the short side becomes ``size``, the long one is truncated."""
        n = self.size
        return (n, int(n * w / h)) if h <= w else (int(n * h / w), n)

    def transform(self, results: dict) -> dict:
        if self.size is None:
            return results
        h, w = results['img'].shape[:2]
        rh, rw = self.resized_shape(h, w)
        n = self.size
        top, left = int(round((rh - n) / 2.0)), int(round((rw - n) / 2.0))
        img = mmcv.imresize(results['img'], (rw, rh), interpolation=self.interpolation, backend=self.backend)
        results['img'] = img[top:top + n, left:left + n]
        if results.get('gt_seg_map') is not None:
            seg = mmcv.imresize(results['gt_seg_map'], (rw, rh), interpolation='nearest', backend=self.backend)
            results['gt_seg_map'] = seg[top:top + n, left:left + n]
        results['img_shape'] = results['ori_shape'] = results['img'].shape[:2]
        results['scale_factor'] = (rw / w, rh / h)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r}, '
                f'backend={self.backend!r})')
