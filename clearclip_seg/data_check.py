"""Checks of prepared benchmark data: counts, label files, full decoding, label sizes and values.

``tools/check_data.py`` is the command line over ``run_check`` / ``check_benchmark``;
``tools/prepare_data.py`` runs ``check_benchmark`` after each step. Layout, suffixes,
counts and value ranges come from ``clearclip_seg/protocol/benchmarks.py``; the table's
data roots are resolved against the repository (``protocol.data_roots``).
"""
import multiprocessing
import os
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


# -- shared with the evaluation's checks (clearclip_seg.checks) -----------------------------------
# PIL modes whose values always fit in 8 bits; any other single-channel mode (I;16, I, F)
# can hold a value that MMSeg's cast to uint8 would silently wrap (261 -> class 5)
EIGHT_BIT_MODES = ('L', 'P', '1')
# EXIF orientations that swap width and height when applied (5..8); 2..4 flip or turn in place
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


class DataLayoutError(ValueError):
    """A data folder or split file that MMSeg would read wrongly; the message is one line."""


@dataclass
class SplitFile:
    """A split file as MMSeg reads it: one id per line, stripped."""
    ids: List[str]
    blank_lines: List[int]                       # 1-based numbers of empty or whitespace-only lines
    duplicates: List[Tuple[str, int, int]]       # (id, first line, repeated line)

    def problem(self) -> Optional[str]:
        """One line naming what is wrong (blank lines, repeated ids), None when nothing is."""
        if self.blank_lines:
            lines = ', '.join(map(str, self.blank_lines[:SHOW])) + (' ...' if len(self.blank_lines) > SHOW else '')
            return (f'has {len(self.blank_lines)} blank line{"s" if len(self.blank_lines) > 1 else ""} '
                    f'(line {lines}), which MMSeg would read as an image named \'\': delete '
                    f'{"them" if len(self.blank_lines) > 1 else "it"}')
        if self.duplicates:
            name, first, again = self.duplicates[0]
            more = len(self.duplicates) - 1
            return (f"lists id '{name}' twice (lines {first} and {again})"
                    f'{f" and {more} more repeated id" + ("s" if more > 1 else "") if more else ""}: '
                    'the image would be scored twice; delete the repeated line')
        return None


def read_split(path: Union[str, Path]) -> SplitFile:
    """Read a split file (``val.txt``) the way MMSeg does, noting blank lines and repeated ids.

    MMSeg strips each line (so trailing spaces and CRLF endings are harmless) but keeps
    blank lines as an image named ''; an id listed twice is loaded and scored twice.
    """
    ids, blank, dups, first = [], [], [], {}
    with open(path, encoding='utf-8', errors='replace') as f:
        for number, line in enumerate(f, 1):
            name = line.strip()
            if not name:
                blank.append(number)
                continue
            if name in first:
                dups.append((name, first[name], number))
            else:
                first[name] = number
            ids.append(name)
    return SplitFile(ids, blank, dups)


def list_images(img_dir: Union[str, Path], suffix: str) -> List[str]:
    """Image names relative to ``img_dir`` without ``suffix``, listed as MMSeg lists them.

    MMSeg (``fileio.list_dir_or_file``) skips hidden files, descends into every folder
    (hidden ones and symbolic links too) and sorts by path. A link back to a folder above
    it would be followed until the system gives up (ELOOP), so it is refused here.

    Raises:
        DataLayoutError: a symbolic-link loop, naming the link and where it points.
    """
    root = os.fspath(img_dir)
    out: List[str] = []

    def walk(folder: str, above: Tuple[str, ...]) -> None:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if not entry.name.startswith('.') and entry.is_file():
                    rel = os.path.relpath(entry.path, root).replace(os.sep, '/')
                    if rel.endswith(suffix):
                        out.append(rel[:-len(suffix)])
                elif entry.is_dir():
                    real = os.path.realpath(entry.path)
                    if real in above:
                        raise DataLayoutError(f"'{entry.path}' is a symbolic link to '{real}', a folder above "
                                              'it: a loop that MMSeg would follow without end; remove the link')
                    walk(entry.path, above + (real,))

    walk(root, (os.path.realpath(root),))
    return sorted(out, key=lambda n: n + suffix)


def exif_orientation(path: Union[str, Path]) -> Optional[int]:
    """The EXIF orientation (2..8) a JPEG's loader applies when decoding it; None for 1 or none.

    OpenCV, which MMCV's ``LoadImageFromFile`` decodes with, turns such images upright,
    while their labels (PNG) are used as stored. Reads the header only.
    """
    try:
        with Image.open(path) as im:
            if im.format != 'JPEG':
                return None
            value = im.getexif().get(0x0112)
    except Exception:  # an undecodable file is reported by the decode check
        return None
    return int(value) if isinstance(value, int) and 2 <= value <= 8 else None


def has_valid_pixel(values: np.ndarray, reduce_zero_label: bool, ignore_index: int = 255) -> bool:
    """Whether label values (as stored in the file) hold a pixel that is scored."""
    v = values[values != ignore_index]
    if reduce_zero_label:
        v = v[v != 0]
    return bool(v.size)


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


@dataclass
class PairReport:
    """What decoding one label and its image found."""
    label_path: str
    label_error: Optional[str] = None
    label_size: Optional[Tuple[int, int]] = None     # (H, W) as stored
    image_size: Optional[Tuple[int, int]] = None     # (H, W) as stored, before any EXIF orientation
    values: Optional[np.ndarray] = None              # the label's distinct values, as stored (no cast)
    image_error: Optional[str] = None
    orientation: Optional[int] = None                # the image's EXIF orientation (2..8), if any


def _inspect_pair(args: Tuple[str, str]) -> PairReport:
    """Decode one label and its image in full."""
    label_path, img_path = args
    r = PairReport(label_path)
    if os.path.exists(img_path):  # missing: reported apart
        r.image_error = _decode_error(img_path)
        if r.image_error is None:
            with Image.open(img_path) as im:
                r.image_size = im.size[::-1]
            r.orientation = exif_orientation(img_path)
    r.label_error = _decode_error(label_path)
    if r.label_error:
        return r
    with Image.open(label_path) as im:
        mode = im.mode
        arr = np.array(im)
    if arr.ndim != 2:
        r.label_error = f'not single-channel (mode {mode}, shape {arr.shape})'
        return r
    r.label_size, r.values = arr.shape, np.unique(arr)
    return r


def _sample(items: List, max_files: Optional[int]) -> List:
    if max_files is None or max_files >= len(items):
        return items
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
    if max_files is not None and (isinstance(max_files, bool) or not isinstance(max_files, int) or max_files < 1):
        raise ValueError(f'max_files={max_files!r}: expected a positive number of files (None reads all)')
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
        listed = read_split(split)
        names = list(dict.fromkeys(listed.ids))
        if listed.problem():
            problems.append(f'split file {b.ann_file} {listed.problem()} (tools/test.py refuses it)')
        missing_imgs = [n + b.img_suffix for n in names if not (img_dir / (n + b.img_suffix)).is_file()]
        if missing_imgs:
            problems.append(f'{len(missing_imgs)} images listed in {b.ann_file} are missing from '
                            f'{b.img_dir}/: {_fmt(missing_imgs)}')
        count_what = f'ids in {b.ann_file}'
    else:
        try:
            names = list_images(img_dir, b.img_suffix)
        except DataLayoutError as e:
            return [f'image folder {img_dir}: {e}'], stats
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
    allowed_txt = f'{lo}..{hi}' + (f' and {", ".join(map(str, extra))}' if extra else '')

    chosen = _sample(pairs, max_files)
    stats.labels_checked = len(chosen)
    unreadable, bad_values, bad_size, bad_images, oriented = [], [], [], [], []
    bad_value_union: set = set()
    scored = False  # some label read holds a pixel that is scored
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
        for r, (_, img_path) in zip(results, chosen):
            img_name = Path(img_path).relative_to(img_dir).as_posix()
            if r.image_error:
                bad_images.append(f'{img_name} ({r.image_error})')
            if r.orientation:
                oriented.append(f'{img_name} (orientation {r.orientation})')
            name = Path(r.label_path).relative_to(ann_dir).as_posix()
            if r.label_error:
                unreadable.append(f'{name} ({r.label_error})')
                continue
            values = r.values.astype(np.int64)  # as stored: a 16-bit 261 stays 261
            stats.values_seen.update(int(v) for v in values)
            bad = [int(v) for v in values if not (lo <= v <= hi or v in extra)]
            if bad:
                bad_values.append(f'{name} (values {bad[:8]}{"..." if len(bad) > 8 else ""})')
                bad_value_union.update(bad)
            ok = values[(values >= lo) & (values <= hi)]
            scored = scored or has_valid_pixel(ok, b.reduce_zero_label)
            if r.image_size is not None and tuple(r.label_size) != tuple(r.image_size):
                bad_size.append(f'{name} (label {r.label_size[1]}x{r.label_size[0]}, '
                                f'image {r.image_size[1]}x{r.image_size[0]})')
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
    if oriented:
        problems.append(f'{len(oriented)} images carry an EXIF orientation tag: the loader decodes them '
                        'turned or flipped (as the official protocol does) while their labels are not, so '
                        f'they are scored against the wrong pixels: {_fmt(oriented)}')
    read = len(chosen) - len(unreadable)
    if read and not scored and not bad_values:
        unscored = ' and '.join([str(v) for v in extra] + (['0 (reduce_zero_label)'] if b.reduce_zero_label else []))
        problems.append(f'none of the {read} label files read holds a pixel to score (only {unscored}): '
                        'tools/test.py refuses a benchmark with nothing to score')
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
