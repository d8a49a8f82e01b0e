"""Small synthetic datasets written in each benchmark's real on-disk layout.

Used by the tests, the set-up smoke run and the speed benchmark: random
images of varied sizes (some smaller than a crop) with block-structured
labels in the benchmark's label range, under the same folders, suffixes and
split files as the real data (``clearclip_seg/protocol/benchmarks.py``).
"""
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .protocol.benchmarks import get_benchmark

DEFAULT_SIZES = ((60, 90), (300, 200), (500, 470), (40, 40))


def _save(path: str, array: np.ndarray) -> None:
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def random_label(rng, h: int, w: int, lo: int, hi: int, ignore: Optional[int] = None,
                 blocks: int = 5) -> np.ndarray:
    """Block-structured labels with values in [lo, hi] (and ``ignore`` at the border)."""
    label = np.full((h, w), lo, np.uint8)
    for _ in range(blocks):
        y, x = rng.integers(0, h), rng.integers(0, w)
        label[y:y + max(1, h // 2), x:x + max(1, w // 2)] = rng.integers(lo, hi + 1)
    if ignore is not None:
        label[:, :2] = ignore
    return label


def write_benchmark(key: str, data_root: str, sizes: Sequence[Tuple[int, int]] = DEFAULT_SIZES,
                    seed: int = 0) -> List[str]:
    """Write a synthetic copy of benchmark ``key`` under ``data_root``.

    Args:
        key: a benchmark key (``voc21``, ``cityscapes``...).
        data_root: plays the benchmark's ``data_root`` (e.g. ``.../VOC2012``).
        sizes: (h, w) of each image.
        seed: random seed.

    Returns:
        The image ids (file names without suffix), in the order written.
    """
    b = get_benchmark(key)
    rng = np.random.default_rng(seed)
    lo, hi = b.label_values
    ignore = b.extra_label_values[0] if b.extra_label_values else None
    ids = []
    for i, (h, w) in enumerate(sizes):
        sub = 'frankfurt' if key == 'cityscapes' else ''
        name = f'frankfurt_{i:06d}_000019' if key == 'cityscapes' else f'{i:012d}'
        ids.append(os.path.join(sub, name) if sub else name)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        _save(os.path.join(data_root, b.img_dir, sub, name + b.img_suffix), img)
        label = random_label(rng, h, w, lo, hi, ignore)
        _save(os.path.join(data_root, b.ann_dir, sub, name + b.seg_map_suffix), label)
    if b.ann_file:
        os.makedirs(os.path.dirname(os.path.join(data_root, b.ann_file)), exist_ok=True)
        with open(os.path.join(data_root, b.ann_file), 'w') as f:
            f.write('\n'.join(ids) + '\n')
    return ids
