"""Saved predictions: predicted label maps as PNG files, in MMSegmentation's convention.

``tools/test.py --out DIR`` (the metric's ``output_dir``) writes one file per
image, ``DIR/<image stem>.png``, holding the predicted class ids at the image's
original size: 8-bit grey when the ids fit in a byte, 16-bit grey otherwise
(more than 255 classes). On a ``reduce_zero_label`` dataset (VOC20, Context59,
ADE20K) the file holds the dataset's own label values, as MMSeg writes them:
class ``i`` is saved as ``i + 1`` (0 is the ignored "other"). ``tools/score.py``
reads them back (``load_prediction``) and scores them with the same metric.
"""
import os.path as osp

import numpy as np

from .atomic import atomic_path
from .errors import ConfigError


def prediction_name(img_path: str) -> str:
    """The file a prediction of ``img_path`` is saved as (its stem, ``.png``), as MMSeg names it."""
    return osp.splitext(osp.basename(img_path))[0] + '.png'


def save_prediction(labels, path: str, num_classes: int, reduce_zero_label: bool = False) -> None:
    """Write one predicted label map (2-D class ids) atomically: 8-bit PNG, 16-bit when the ids pass 255.

    Args:
        labels: (H, W) integer class ids (a tensor or an array).
        path: the PNG file.
        num_classes: the dataset's classes: every file of a dataset has the same bit depth.
        reduce_zero_label: the dataset shifts its labels down by one; the file holds them shifted back.
    """
    from PIL import Image  # lazy: only writers of pictures need PIL
    a = labels.cpu().numpy() if hasattr(labels, 'cpu') else np.asarray(labels)
    a = a.astype(np.int64).reshape(a.shape[-2:])  # kept 2-D even for a one-pixel-thin image
    if reduce_zero_label:
        a = a + 1
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"prediction '{path}': class ids {a.min()}..{a.max()} do not fit a 16-bit PNG")
    wide = num_classes - 1 + int(reduce_zero_label) > 255
    image = Image.fromarray(a.astype(np.uint16 if wide else np.uint8))  # grey: mode I;16 or L
    with atomic_path(path) as tmp:
        image.save(tmp, format='PNG')


def load_prediction(path: str, reduce_zero_label: bool = False) -> np.ndarray:
    """Read a saved prediction back as (H, W) int64 class ids (the inverse of ``save_prediction``).

    Raises:
        ConfigError: the file is missing, unreadable or not a single-channel label map.
    """
    from PIL import Image
    if not osp.isfile(path):
        raise ConfigError(f"prediction '{path}' not found: expected one PNG per image, named after the image "
                          "(as tools/test.py --out writes them)")
    try:
        with Image.open(path) as im:
            a = np.array(im)
    except Exception as e:  # PIL's errors carry no file name
        raise ConfigError(f"prediction '{path}' cannot be decoded ({type(e).__name__}: {e})") from None
    if a.ndim != 2:
        raise ConfigError(f"prediction '{path}' has shape {a.shape}: expected a single-channel label map")
    a = a.astype(np.int64)
    return a - 1 if reduce_zero_label else a
