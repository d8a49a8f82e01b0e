"""File helpers: atomic writes, label reading, and the progress bar (tqdm or a stand-in).

Every file is written under a hidden temporary name in its destination folder and
renamed into place, so a file that exists is complete.
"""
import os
from pathlib import Path

import numpy as np
from PIL import Image

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in requirements.txt
    def tqdm(iterable=None, **kwargs):  # type: ignore
        return _NoBar(iterable)


class _NoBar:  # minimal stand-in when tqdm is missing
    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass


def _tmp_name(path: Path, suffix: str = '.tmp') -> Path:
    """A hidden temporary name next to ``path`` (same folder, so os.replace is atomic)."""
    return path.with_name(f'.{path.name}.{os.getpid()}{suffix}')


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
    tmp = _tmp_name(path)
    try:
        Image.fromarray(a).save(tmp, format='PNG')  # 2-D uint8 -> mode L
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write a text file atomically.

    Args:
        path: Destination file.
        text: The full content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text, encoding='utf-8')
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
