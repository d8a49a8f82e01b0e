"""Guards on how a test dataset's labels and images are loaded: what MMSeg would get silently wrong.

MMSeg's ``LoadAnnotations`` casts every label to 8 bits (a 16-bit label's 261 becomes
class 5) and squeezes it (a 1-pixel-thin label loses a dimension and fails deep in
``PackSegInputs``). ``LabelGuard`` wraps it, without changing what it returns for a good
label: it refuses a label whose stored values do not fit in 8 bits, naming the file and the
value, and gives a thin label its two dimensions back. ``warn_oriented_images`` counts the
JPEGs that the image loader turns by their EXIF orientation while their labels stay as stored.
``guard_dataset`` installs both on the test dataset, inside ``NamedFailures``: a pipeline
whose loading failures name their image or label file.
"""
import os
import os.path as osp
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


# -- the dataset as a whole: listed files present, loading failures named ------------------
def _data_infos(dataset):
    for i in range(len(dataset)):
        yield dataset.get_data_info(i)


def check_listed_files(dataset, benchmark: Optional[str] = None, data_root: Optional[str] = None) -> None:
    """Every image and label the dataset lists exists and is not empty (a stat per file, no decoding)."""
    missing, empty, total = [], [], 0
    for info in _data_infos(dataset):
        for key in ('img_path', 'seg_map_path'):
            path = info.get(key)
            if not path:
                continue
            total += 1
            try:
                size = os.stat(path).st_size
            except OSError:
                missing.append(path)
                continue
            if size == 0:
                empty.append(path)
    if missing or empty:
        named = [f"'{p}' is missing" for p in missing[:3]] + [f"'{p}' is empty (0 bytes)" for p in empty[:3]]
        more = len(missing) + len(empty) - len(named)
        counts = ' and '.join(f'{len(v)} {k}' for k, v in (('missing', missing), ('empty', empty)) if v)
        raise DataError(f'of the {total} images and labels the {benchmark or "test"} dataset lists, {counts}: '
                        f'{"; ".join(named)}{f"; {more} more" if more else ""}; '
                        f'run {check_data_hint(benchmark, data_root)} to list them all')


def decode_problem(path: Optional[str]) -> Optional[str]:
    """Why an image or label file cannot be decoded (None when it can, or no path)."""
    if not path:
        return None
    if not osp.isfile(path):
        return 'missing'
    if osp.getsize(path) == 0:
        return 'empty (0 bytes)'
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()  # decodes the pixel data: a truncated file fails here, not at open()
    except Exception as e:
        first = (str(e).splitlines() or [''])[0][:120]
        return f'cannot be decoded ({type(e).__name__}: {first})'
    return None


class NamedFailures:
    """A dataset pipeline whose failures name the image or label file that caused them.

    Wraps the dataset's ``Compose``: MMCV's own errors for an undecodable file are
    an assertion deep in a DataLoader traceback that does not always name it.
    """

    def __init__(self, pipeline, benchmark: Optional[str] = None, data_root: Optional[str] = None):
        self.pipeline = pipeline
        self.benchmark = benchmark
        self.data_root = data_root

    def __call__(self, results):
        img, seg = results.get('img_path'), results.get('seg_map_path')
        try:
            return self.pipeline(results)
        except DataError:
            raise
        except Exception as e:
            raise DataError(self.describe(img, seg, e)) from None

    def describe(self, img, seg, err) -> str:
        hint = f'run {check_data_hint(self.benchmark, self.data_root)} to find every such file'
        where = f' of {self.benchmark}' if self.benchmark else ''
        for path, what in ((img, 'image'), (seg, 'label')):
            why = decode_problem(path)
            if why:
                return f"{what} '{path}'{where} {why}: {hint}"
        thin = self.too_thin(img)
        if thin:
            return f"image '{img}'{where} {thin}: {hint}"
        first = (str(err).splitlines() or [''])[0][:160]
        return f"loading image '{img}' (label '{seg}'){where} failed ({type(err).__name__}: {first}): {hint}"

    def too_thin(self, img) -> Optional[str]:
        """Why the pipeline's keep-ratio resize would leave the image 0 pixels wide or high (None if not).

        A 1x600 image under ``scale=(256, 64)`` becomes 256x0, which OpenCV refuses with
        an assertion that does not say so.
        """
        try:
            from mmcv import rescale_size
            from PIL import Image
            with Image.open(img) as im:
                w, h = im.size
        except Exception:
            return None
        for t in getattr(self.pipeline, 'transforms', ()):
            scale = getattr(t, 'scale', None)
            if scale and getattr(t, 'keep_ratio', False):
                nw, nh = rescale_size((w, h), scale)
                if min(nw, nh) < 1:
                    return (f'is {w}x{h} (W x H): too thin for the resize to {tuple(scale)} (keep ratio), which '
                            f'would make it {nw}x{nh}; crop or remove it')
        return None

    def __getattr__(self, name):
        if name == 'pipeline':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.pipeline, name)


def guard_dataset(dataset, benchmark: Optional[str] = None, data_root: Optional[str] = None) -> None:
    """Check the listed files, then make the dataset's loading failures name their file (in place).

    Once per dataset object: its labels are loaded through ``LabelGuard``
    (labels wider than 8 bits refused, thin labels kept 2-D), and images with an EXIF
    orientation tag are counted in one warning.
    """
    check_listed_files(dataset, benchmark, data_root)
    if not isinstance(dataset.pipeline, NamedFailures):
        install_label_guards(dataset, benchmark, data_root)
        warn_oriented_images((info.get('img_path') for info in _data_infos(dataset)), benchmark, data_root)
        dataset.pipeline = NamedFailures(dataset.pipeline, benchmark, data_root)
