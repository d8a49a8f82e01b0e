"""Checks of prepared benchmark data: counts, label files, full decoding, label sizes and values.

``tools/check_data.py`` is the command line over ``run_check`` / ``check_benchmark``;
``tools/prepare_data.py`` runs ``check_benchmark`` after each step. Layout, suffixes,
counts and value ranges come from ``clearclip_seg/protocol/benchmarks.py``; the table's
data roots are resolved against the repository (``protocol.data_roots``).
"""
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .protocol.benchmarks import get_benchmark
from .protocol.data_roots import resolve_data_root

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    def tqdm(iterable=None, **kwargs):  # type: ignore
        return iterable

SHOW = 5  # offenders listed per kind of problem


@dataclass
class CheckStats:
    """What a check looked at (for the verdict line)."""
    data_root: Optional[Path] = None
    images: int = 0
    expected: int = 0
    labels_checked: int = 0
    values_seen: set = field(default_factory=set)


def _fmt(items: Sequence[str], total: Optional[int] = None) -> str:
    total = len(items) if total is None else total
    shown = ', '.join(items[:SHOW])
    return shown + (f', ... ({total - SHOW} more)' if total > SHOW else '')


def _list_images(img_dir: Path, suffix: str) -> List[str]:
    """Image names relative to ``img_dir`` without ``suffix``, recursively (as MMSeg lists them)."""
    out = []
    for p in img_dir.rglob(f'*{suffix}'):
        if p.is_file() and not p.name.startswith('.'):
            rel = p.relative_to(img_dir).as_posix()
            out.append(rel[:-len(suffix)])
    return sorted(out)


def _read_split(path: Path) -> List[str]:
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def _decode_error(path: str) -> Optional[str]:
    """Why a file cannot be decoded in full (None when it can): what ``tools/test.py`` would hit."""
    try:
        if Path(path).stat().st_size == 0:
            return 'empty (0 bytes)'
        with Image.open(path) as im:
            im.load()  # decodes every pixel: a truncated JPEG fails here, not at open()
    except Exception as e:
        return f'unreadable ({type(e).__name__}: {(str(e).splitlines() or [""])[0][:100]})'
    return None


def _inspect_pair(args: Tuple[str, str]) -> Tuple[str, Optional[str], Optional[Tuple], Optional[Tuple],
                                                     Optional[np.ndarray], Optional[str]]:
    """Decode one label and its image in full.

    Returns:
        (label path, label error, label size, image size, label values, image error).
    """
    label_path, img_path = args
    img_err = _decode_error(img_path) if os.path.exists(img_path) else None  # missing: reported apart
    img_size = None
    if img_err is None and os.path.exists(img_path):
        with Image.open(img_path) as im:
            img_size = im.size[::-1]
    err = _decode_error(label_path)
    if err:
        return label_path, err, None, img_size, None, img_err
    with Image.open(label_path) as im:
        mode = im.mode
        arr = np.array(im)
    if arr.ndim != 2:
        return label_path, f'not single-channel (mode {mode}, shape {arr.shape})', None, img_size, None, img_err
    return label_path, None, arr.shape, img_size, np.unique(arr), img_err


def _sample(items: List, max_files: Optional[int]) -> List:
    if max_files is None or max_files >= len(items):
        return items
    if max_files <= 0:
        return []
    idx = np.unique(np.linspace(0, len(items) - 1, max_files).round().astype(int))
    return [items[i] for i in idx]


def run_check(key: str, data_root: Optional[Union[str, Path]] = None, expected_count: Optional[int] = None,
              max_files: Optional[int] = None, nproc: int = 1,
              progress: bool = False) -> Tuple[List[str], CheckStats]:
    """Check one benchmark; like ``check_benchmark`` but also returns what was looked at.

    Args:
        key: Benchmark key (see ``clearclip_seg/protocol/benchmarks.py``).
        data_root: Benchmark data root; default: the table's, relative to the repository.
        expected_count: Image count to expect instead of the table's ``num_images``.
        max_files: Decode at most this many image/label pairs (evenly spread) for the
            decode, value and size checks; None decodes all. Existence is checked for every file.
        nproc: Processes decoding images and labels.
        progress: Show a progress bar while decoding.

    Returns:
        ``(problems, stats)``: one line per kind of problem (empty when fine).
    """
    b = get_benchmark(key)
    root = resolve_data_root(b, data_root)
    expected = b.num_images if expected_count is None else expected_count
    stats = CheckStats(data_root=root, expected=expected)
    problems: List[str] = []
    if not root.is_dir():
        return [f'data root {root} does not exist (prepare it with: {b.prepare})'], stats
    img_dir, ann_dir = root / b.img_dir, root / b.ann_dir
    for d, what in ((img_dir, 'image'), (ann_dir, 'label')):
        if not d.is_dir():
            problems.append(f'{what} folder {d} does not exist (prepare it with: {b.prepare})')
    if problems:
        return problems, stats

    if b.ann_file:
        split = root / b.ann_file
        if not split.is_file():
            return [f'split file {split} does not exist (prepare it with: {b.prepare})'], stats
        names = _read_split(split)
        dups = sorted(n for n, c in Counter(names).items() if c > 1)
        if dups:
            problems.append(f'split file {split.name} lists ids more than once: {_fmt(dups)}')
        missing_imgs = [n + b.img_suffix for n in names if not (img_dir / (n + b.img_suffix)).is_file()]
        if missing_imgs:
            problems.append(f'{len(missing_imgs)} images listed in {b.ann_file} are missing from '
                            f'{b.img_dir}/: {_fmt(missing_imgs)}')
        count_what = f'ids in {b.ann_file}'
    else:
        names = _list_images(img_dir, b.img_suffix)
        count_what = f'images (*{b.img_suffix}) in {b.img_dir}/'
    stats.images = len(names)
    if len(names) != expected:
        problems.append(f'found {len(names)} {count_what}, expected {expected}')

    pairs, missing_labels = [], []
    for n in names:
        lab = ann_dir / (n + b.seg_map_suffix)
        if lab.is_file():
            pairs.append((str(lab), str(img_dir / (n + b.img_suffix))))
        else:
            missing_labels.append(n + b.seg_map_suffix)
    if missing_labels:
        problems.append(f'{len(missing_labels)} images have no label file (*{b.seg_map_suffix}) in '
                        f'{b.ann_dir}/: {_fmt(missing_labels)}')

    lo, hi = b.label_values
    extra = tuple(b.extra_label_values)
    allowed = np.zeros(256, dtype=bool)
    allowed[max(lo, 0):min(hi, 255) + 1] = True
    for v in extra:
        if 0 <= v <= 255:
            allowed[v] = True
    allowed_txt = f'{lo}..{hi}' + (f' and {", ".join(map(str, extra))}' if extra else '')

    chosen = _sample(pairs, max_files)
    stats.labels_checked = len(chosen)
    unreadable, bad_values, bad_size, bad_images = [], [], [], []
    bad_value_union: set = set()
    if chosen:
        if nproc > 1 and len(chosen) > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context('fork' if 'fork' in methods else None)
            with ctx.Pool(min(nproc, len(chosen))) as pool:
                results = list(tqdm(pool.imap(_inspect_pair, chosen, chunksize=8), total=len(chosen),
                                    desc=f'{key} images+labels', unit='pair', disable=not progress))
        else:
            results = [_inspect_pair(c) for c in tqdm(chosen, desc=f'{key} images+labels', unit='pair',
                                                      disable=not progress)]
        for (label_path, err, lsize, isize, values, img_err), (_, img_path) in zip(results, chosen):
            if img_err:
                bad_images.append(f'{Path(img_path).relative_to(img_dir).as_posix()} ({img_err})')
            name = Path(label_path).relative_to(ann_dir).as_posix()
            if err:
                unreadable.append(f'{name} ({err})')
                continue
            stats.values_seen.update(int(v) for v in values)
            if values.size and (values.min() < 0 or values.max() > 255):
                bad = [int(v) for v in values if v < 0 or v > 255 or not allowed[v]]
            else:
                bad = [int(v) for v in values if not allowed[int(v)]]
            if bad:
                bad_values.append(f'{name} (values {bad[:8]}{"..." if len(bad) > 8 else ""})')
                bad_value_union.update(bad)
            if isize is not None and tuple(lsize) != tuple(isize):
                bad_size.append(f'{name} (label {lsize[1]}x{lsize[0]}, image {isize[1]}x{isize[0]})')
    if bad_images:
        problems.append(f'{len(bad_images)} images cannot be decoded (tools/test.py would stop at them): '
                        f'{_fmt(bad_images)}')
    if unreadable:
        problems.append(f'{len(unreadable)} label files cannot be used: {_fmt(unreadable)}')
    if bad_values:
        union = sorted(bad_value_union)
        problems.append(f'{len(bad_values)} of {len(chosen)} label files hold values outside {allowed_txt} '
                        f'(all such values: {union[:20]}{"..." if len(union) > 20 else ""}): '
                        f'{_fmt(bad_values)}')
    if bad_size:
        problems.append(f'{len(bad_size)} label files differ in size from their image: {_fmt(bad_size)}')
    return problems, stats


def check_benchmark(key: str, data_root: Optional[Union[str, Path]] = None,
                    expected_count: Optional[int] = None, max_files: Optional[int] = None) -> List[str]:
    """Check one prepared benchmark.

    Args:
        key: Benchmark key, e.g. ``voc21`` (see ``clearclip_seg/protocol/benchmarks.py``).
        data_root: The benchmark's data root; default: the table's ``data_root`` resolved
            against the repository root.
        expected_count: Image count to expect instead of the table's ``num_images``
            (for small synthetic sets).
        max_files: Read at most this many label files (evenly spread) for the value and
            size checks; None reads all. File existence is always checked for all.

    Returns:
        One line per kind of problem, naming the first few offending files; empty when
        the benchmark is fine.
    """
    return run_check(key, data_root, expected_count, max_files)[0]
