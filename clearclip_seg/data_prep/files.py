"""File helpers: atomic label and text writes, label reading.

Every file is written through ``clearclip_seg.atomic`` (a unique hidden temporary name in
its destination folder, fsync, rename), so a file that exists is complete.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path, atomic_write


def atomic_save_png(array, path) -> None:
    """Write a single-channel uint8 PNG atomically (temp name in the same folder, then rename).

    Args:
        array: 2-D array with values 0..255.
        path: Destination file.
    """
    path = Path(path)
    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f'{path}: expected a 2-D label array, got shape {a.shape}')
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f'{path}: label values must be 0..255, got {a.min()}..{a.max()}')
        a = a.astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format='PNG')  # 2-D uint8 -> mode L


def atomic_write_text(path, text: str) -> None:
    """Write a text file atomically.

    Args:
        path: Destination file.
        text: The full content.
    """
    atomic_write(path, text)


def read_label(path) -> np.ndarray:
    """Read a label PNG as a 2-D integer array (palette PNGs give their indices).

    Args:
        path: The PNG file.

    Returns:
        The 2-D array.
    """
    with Image.open(path) as im:
        a = np.array(im)
    if a.ndim != 2:
        raise ValueError(f'{path}: expected a single-channel label image, got shape {a.shape}')
    return a
