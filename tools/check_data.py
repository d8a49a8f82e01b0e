#!/usr/bin/env python
"""Check prepared benchmark data before a long run.

    python tools/check_data.py [BENCHMARK ...] [--data-root DIR] [--data-root KEY=PATH ...]
                               [--max-files N] [--expected-count N] [--nproc N]

For each benchmark (default: all eight) it checks that the data root exists, that the
number of images matches the expected count (split-file benchmarks: the ids in the
split file, each of which must have its image), that every image has its label file,
that every image and label decodes in full (a zero-byte or truncated JPEG fails here,
not hours into ``tools/test.py``), and that label maps are single-channel, the size of
their image, and hold only the benchmark's ``label_values`` range plus its
``extra_label_values`` (e.g. 255), read as stored (a 16-bit label's 261 is 261, not the
5 an 8-bit cast would make of it). It also names what would be scored wrongly: split
files with blank lines or repeated ids, JPEGs with an EXIF orientation tag (the loader
turns them, their labels stay), symbolic-link loops in the image folder, and a benchmark
whose labels hold no pixel to score. Decoding runs in ``--nproc`` processes (default:
the CPU count, at most 8) with a progress bar on a terminal. Layout, suffixes, counts
and value ranges come from ``clearclip_seg/protocol/benchmarks.py``.

Paths: the table's data roots (``data/...``) are relative to the repository, whatever
the current directory, exactly as in ``tools/test.py``. ``--data-root`` means what it
means in ``tools/benchmark.py`` and ``tools/prepare_data.py``: ``DIR`` is a data folder
holding the benchmarks' layouts (in place of the repository's ``data/``), ``KEY=PATH``
one benchmark's own root (``--data-root-override KEY=PATH`` is the same); paths you
type are relative to the current directory.

Prints the first few offenders of each kind and a one-line verdict per benchmark.
Exit code 0 when every benchmark given is fine, 1 when one is not, 2 on a usage mistake
(an unknown benchmark, ``--max-files 0``). The checks are in
``clearclip_seg.data_check``; this file is the command line over them.
"""
import argparse
import os
import sys

from clearclip_seg.cli_args import add_data_root_arguments, parse_data_roots
from clearclip_seg.data_check import run_check
from clearclip_seg.protocol.benchmarks import BENCHMARKS, get_benchmark
from clearclip_seg.protocol.data_roots import resolve_data_root


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code."""
    p = argparse.ArgumentParser(description='Verify prepared benchmark data (counts, labels, values).')
    p.add_argument('benchmarks', nargs='*', metavar='BENCHMARK',
                   help=f'benchmarks to check (default all): {", ".join(BENCHMARKS)}')
    add_data_root_arguments(p)
    p.add_argument('--max-files', type=int, default=None, help='read at most N label files per benchmark')
    p.add_argument('--expected-count', type=int, default=None, help='expect N images instead of the table value')
    p.add_argument('--nproc', type=int, default=min(8, os.cpu_count() or 1),
                   help='processes decoding images and labels (default: the CPU count, at most 8)')
    args = p.parse_args(argv)
    for flag, value in (('--max-files', args.max_files), ('--expected-count', args.expected_count),
                        ('--nproc', args.nproc)):
        low = 0 if flag == '--expected-count' else 1
        if value is not None and value < low:
            print(f'error: {flag} {value}: expected {"a count >= 0" if low == 0 else "a positive number"}'
                  f'{" (omit it to read every label)" if flag == "--max-files" else ""}', file=sys.stderr)
            return 2

    keys = [k for k in args.benchmarks if k != 'all'] or list(BENCHMARKS)
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown:
        print(f'error: unknown benchmark(s) {", ".join(unknown)}: expected one of {", ".join(BENCHMARKS)}',
              file=sys.stderr)
        return 2
    try:
        data_dir, overrides = parse_data_roots(args.data_root, args.data_root_override)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    all_ok = True
    for key in dict.fromkeys(keys):
        b = get_benchmark(key)
        root = overrides.get(key)
        if root is None and data_dir is not None:
            root = resolve_data_root(b, data_dir=data_dir)
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
