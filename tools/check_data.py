#!/usr/bin/env python
"""Check prepared benchmark data before a long run.

    python tools/check_data.py [BENCHMARK ...] [--data-root DIR]
                               [--data-root-override KEY=PATH ...]
                               [--max-files N] [--expected-count N] [--nproc N]

For each benchmark (default: all eight) it checks that the data root exists, that the
number of images matches the expected count (split-file benchmarks: the ids in the
split file, each of which must have its image), that every image has its label file,
and that label maps are single-channel, the size of their image, and hold only the
benchmark's ``label_values`` range plus its ``extra_label_values`` (e.g. 255). Layout,
suffixes, counts and value ranges come from ``clearclip_seg/benchmarks.py``.

Prints the first few offenders of each kind and a one-line verdict per benchmark.
Exit code 0 when every benchmark given is fine, 1 otherwise.
"""
import argparse
import multiprocessing
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

TOOLS_DIR = Path(__file__).resolve().parent
if str(TOOLS_DIR) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR))

from _bench_table import BENCHMARKS, get_benchmark, resolve_data_root  # noqa: E402

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


def _inspect_label(args: Tuple[str, str]) -> Tuple[str, Optional[str], Optional[Tuple], Optional[Tuple],
                                                      Optional[np.ndarray]]:
    """Read one label (and its image's size); returns (label, error, label size, image size, values)."""
    label_path, img_path = args
    try:
        with Image.open(label_path) as im:
            mode = im.mode
            arr = np.array(im)
    except Exception as e:
        return label_path, f'unreadable ({type(e).__name__}: {e})', None, None, None
    if arr.ndim != 2:
        return label_path, f'not single-channel (mode {mode}, shape {arr.shape})', None, None, None
    img_size = None
    try:
        with Image.open(img_path) as im:
            img_size = im.size[::-1]
    except Exception:
        pass  # a broken image is not this check's business; the size test is skipped
    return label_path, None, arr.shape, img_size, np.unique(arr)


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
        key: Benchmark key (see ``clearclip_seg/benchmarks.py``).
        data_root: Benchmark data root; default: the table's, relative to the repository.
        expected_count: Image count to expect instead of the table's ``num_images``.
        max_files: Read at most this many label files (evenly spread) for the value and
            size checks; None reads all. Existence is checked for every file.
        nproc: Processes reading labels.
        progress: Show a progress bar while reading labels.

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
    unreadable, bad_values, bad_size = [], [], []
    bad_value_union: set = set()
    if chosen:
        if nproc > 1 and len(chosen) > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context('fork' if 'fork' in methods else None)
            with ctx.Pool(min(nproc, len(chosen))) as pool:
                results = list(tqdm(pool.imap(_inspect_label, chosen, chunksize=16), total=len(chosen),
                                    desc=f'{key} labels', unit='file', disable=not progress))
        else:
            results = [_inspect_label(c) for c in tqdm(chosen, desc=f'{key} labels', unit='file',
                                                       disable=not progress)]
        for label_path, err, lsize, isize, values in results:
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
        key: Benchmark key, e.g. ``voc21`` (see ``clearclip_seg/benchmarks.py``).
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


def _parse_overrides(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, path = item.partition('=')
        if not sep or not key or not path:
            raise SystemExit(f'error: --data-root-override {item!r}: expected KEY=PATH')
        if key not in BENCHMARKS:
            raise SystemExit(f'error: --data-root-override {item!r}: unknown benchmark {key!r}, '
                             f'expected one of {", ".join(BENCHMARKS)}')
        out[key] = path
    return out


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code."""
    p = argparse.ArgumentParser(description='Verify prepared benchmark data (counts, labels, values).')
    p.add_argument('benchmarks', nargs='*', metavar='BENCHMARK',
                   help=f'benchmarks to check (default all): {", ".join(BENCHMARKS)}')
    p.add_argument('--data-root', default=None,
                   help="replacement for the repository's data/ folder (the benchmark roots go under it)")
    p.add_argument('--data-root-override', action='append', default=[], metavar='KEY=PATH',
                   help='data root for one benchmark (repeatable)')
    p.add_argument('--max-files', type=int, default=None, help='read at most N label files per benchmark')
    p.add_argument('--expected-count', type=int, default=None, help='expect N images instead of the table value')
    p.add_argument('--nproc', type=int, default=1, help='processes reading label files')
    args = p.parse_args(argv)

    keys = [k for k in args.benchmarks if k != 'all'] or list(BENCHMARKS)
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown:
        print(f'error: unknown benchmark(s) {", ".join(unknown)}: expected one of {", ".join(BENCHMARKS)}',
              file=sys.stderr)
        return 2
    overrides = _parse_overrides(args.data_root_override)
    all_ok = True
    for key in dict.fromkeys(keys):
        b = get_benchmark(key)
        root = overrides.get(key)
        if root is None and args.data_root is not None:
            root = resolve_data_root(b, data_dir=args.data_root)
        problems, stats = run_check(key, root, args.expected_count, args.max_files, nproc=args.nproc,
                                    progress=sys.stderr.isatty())
        for line in problems:
            print(f'  {key}: {line}')
        if problems:
            all_ok = False
            print(f'{key}: FAILED ({len(problems)} problem{"s" if len(problems) > 1 else ""}) '
                  f'[{stats.data_root}]')
        else:
            print(f'{key}: OK ({stats.images} images, {stats.labels_checked} labels read, values '
                  f'{min(stats.values_seen, default="-")}..{max(stats.values_seen, default="-")}) '
                  f'[{stats.data_root}]')
    return 0 if all_ok else 1


if __name__ == '__main__':
    sys.exit(main())
