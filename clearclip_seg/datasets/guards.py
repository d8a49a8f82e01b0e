"""Guards on how a test dataset's labels and images are loaded: what MMSeg would get silently wrong.

MMSeg's ``LoadAnnotations`` casts every label to 8 bits (a 16-bit label's 261 becomes
class 5) and squeezes it (a 1-pixel-thin label loses a dimension and fails deep in
``PackSegInputs``). ``LabelGuard`` wraps it, without changing what it returns for a good
label: it refuses a label whose stored values do not fit in 8 bits, naming the file and the
value, and gives a thin label its two dimensions back. ``warn_oriented_images`` counts the
JPEGs that the image loader turns by their EXIF orientation while their labels stay as stored.
``checks.guard_dataset`` installs both on the test dataset.
"""
import warnings
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from ..checks import DataError, check_data_hint
from ..data_check import EIGHT_BIT_MODES, exif_orientation


class DataWarning(UserWarning):
    """Data that are scored as the official protocol scores them, but perhaps not as meant."""


def label_header(path: str, allowed: str, hint: str) -> Optional[Tuple[int, int]]:
    """The (H, W) of a label file, refusing one whose stored values would not survive MMSeg's 8-bit cast.

    Reads the header only, unless the file is wider than 8 bits (16- or 32-bit PNG): then
    its values are read once and any below 0 or above 255 is an error. None when the file
    cannot be opened (the loader then fails and ``NamedFailures`` names it).
    """
    try:
        with Image.open(path) as im:
            size, mode = im.size[::-1], im.mode
            if mode in EIGHT_BIT_MODES or len(im.getbands()) != 1:
                return size  # 8-bit, or several channels: the metric refuses the latter by shape
            values = np.unique(np.asarray(im))
    except Exception:
        return None
    bad = values[(values < 0) | (values > 255)]
    if bad.size:
        shown = [int(v) for v in bad[:8]]
        raise DataError(f"label '{path}' (PIL mode {mode}, wider than 8 bits) holds value"
                        f"{'s' if bad.size > 1 else ''} {shown}{'...' if bad.size > 8 else ''}, which MMSeg's "
                        f'8-bit cast would score as {[v % 256 for v in shown]}; labels hold {allowed}: {hint}')
    return size


class LabelGuard:
    """MMSeg's ``LoadAnnotations`` with the checks of ``label_header`` and the 2-D shape kept.

    Args:
        transform: the ``LoadAnnotations`` instance of the dataset's pipeline.
        allowed: the values a label may hold, for messages ('0..20 and 255').
        hint: the check_data command for this benchmark.
    """

    def __init__(self, transform, allowed: str, hint: str):
        self.transform = transform
        self.allowed = allowed
        self.hint = hint

    def __call__(self, results):
        path = results.get('seg_map_path')
        size = label_header(path, self.allowed, self.hint) if path else None
        results = self.transform(results)
        seg = results.get('gt_seg_map') if results is not None else None
        if size is not None and seg is not None and seg.ndim < 2 and seg.size == size[0] * size[1]:
            # MMSeg squeezed a 1-pixel-thin (or 1x1) label: same values, back in (H, W)
            results['gt_seg_map'] = seg.reshape(size)
        return results

    def __getattr__(self, name):
        if name == 'transform':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.transform, name)

    def __repr__(self):
        return f'LabelGuard({self.transform!r})'


def install_label_guards(dataset, benchmark: Optional[str] = None, data_root: Optional[str] = None) -> None:
    """Wrap every ``LoadAnnotations`` of ``dataset.pipeline`` (a ``Compose``) in a ``LabelGuard`` (in place)."""
    from mmseg.datasets.transforms import LoadAnnotations
    transforms = getattr(dataset.pipeline, 'transforms', None)
    if transforms is None:
        return
    classes = len(dataset.metainfo.get('classes') or ())
    shift = 1 if getattr(dataset, 'reduce_zero_label', False) else 0
    allowed = f'0..{classes - 1 + shift} and 255' if classes else '0..255'
    hint = f'run {check_data_hint(benchmark, data_root)} to find every such file'
    for i, t in enumerate(transforms):
        if isinstance(t, LoadAnnotations):
            transforms[i] = LabelGuard(t, allowed, hint)


def warn_oriented_images(paths, benchmark: Optional[str] = None, data_root: Optional[str] = None) -> int:
    """Warn once, with the count, when images carry an EXIF orientation tag; returns the count.

    OpenCV (MMCV's ``LoadImageFromFile``, the official protocol's loader) decodes such a JPEG
    turned upright while its label is used as stored: the evaluation keeps that decoding,
    refuses the images whose size then differs from their label, and says how many there are.
    Reads each image's header only.
    """
    paths = list(paths)
    oriented = [p for p in paths if p and exif_orientation(p)]
    if oriented:
        warnings.warn(f"{len(oriented)} of the {len(paths)} images of {benchmark or 'the test dataset'} carry an EXIF "
                      f"orientation tag (e.g. '{oriented[0]}'): the loader decodes them turned or flipped, as the "
                      'official protocol does, while their labels are used as stored; '
                      f'run {check_data_hint(benchmark, data_root)} to list them', DataWarning, stacklevel=2)
    return len(oriented)
