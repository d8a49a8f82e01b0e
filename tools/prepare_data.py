#!/usr/bin/env python
"""Turn the official dataset downloads into the trees the eight benchmarks expect.

    python tools/prepare_data.py STEP [--data-root DIR] [--data-root KEY=PATH ...]
                                      [--download-dir DIR] [--nproc N] [--no-download] [--no-verify] ...

STEP is one of ``voc`` (voc21, voc20), ``context`` (context60, context59),
``coco_stuff164k``, ``coco_object``, ``cityscapes``, ``ade20k`` or ``all``. Where each
tree goes is read from ``clearclip_seg/protocol/benchmarks.py`` (the single table of data
roots, folders and suffixes); see ``data/README.md`` for the trees and the download sources.
``--data-root`` means what it means in ``tools/check_data.py`` and ``tools/benchmark.py``:
``DIR`` is the data folder the trees go under (default: the repository's ``data/``),
``KEY=PATH`` one benchmark's own root (e.g. ``voc21=/datasets/VOCdevkit/VOC2012``).

Every step is safe to re-run: archives already downloaded (and verified) are reused,
folders already extracted are skipped, label files already written are skipped, and
nothing is ever left half-written (extraction goes to a temporary folder that is renamed
into place; each label file is written under a temporary name and renamed).

Exit code 0 when every step went well, 1 when a step ran but its check found problems,
2 when a step could not run (an archive missing with ``--no-download``, truncated or not
the expected archive): the one-line error names the archive and what was expected.

The steps and the conversions (plain functions on numpy arrays) live in
``clearclip_seg.data_prep``; this file is the command line over them.
"""
import argparse
import os
import sys
import time
from pathlib import Path

from clearclip_seg.cli_args import add_data_root_arguments, parse_data_roots
from clearclip_seg.data_check import check_benchmark
from clearclip_seg.data_prep import STEPS, Options, PrepareError, bench_root
from clearclip_seg.protocol.data_roots import DATA_DIR


def run_step(name: str, opts: Options) -> int:
    """Run one step, then check its benchmarks; return 0 when all went well, 1 when a check failed,
    2 when the step could not run (a missing or damaged archive: the message says what to fetch)."""
    print(f'== {name}')
    t0 = time.time()
    try:
        keys = STEPS[name](opts)
    except PrepareError as e:
        print(f'error: {name}: {e}', file=sys.stderr)
        return 2
    ok = True
    if opts.check:
        for key in keys:
            problems = check_benchmark(key, data_root=bench_root(opts, key), max_files=20)
            for p in problems:
                print(f'  {key}: {p}', file=sys.stderr)
            ok = ok and not problems
            print(f'  check {key}: {"OK" if not problems else "FAILED"}')
    print(f'== {name}: {"done" if ok else "done, with problems"} ({time.time() - t0:.0f} s)')
    return 0 if ok else 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('step', choices=list(STEPS) + ['all'], help='what to prepare')
    add_data_root_arguments(p)
    p.add_argument('--download-dir', default=None,
                   help='where archives are kept (default <data folder>/downloads)')
    p.add_argument('--nproc', type=int, default=max(1, min(8, os.cpu_count() or 1)),
                   help='worker processes for the conversions')
    p.add_argument('--no-download', action='store_true', help='only use archives already in --download-dir')
    p.add_argument('--no-verify', action='store_true', help='skip archive checksums')
    p.add_argument('--with-train', action='store_true',
                   help='also make the training split (context masks, cityscapes); evaluation needs only val')
    p.add_argument('--from-raw', action='store_true',
                   help='coco_object: read raw stuffthingmaps <id>.png instead of <id>_labelTrainIds.png')
    p.add_argument('--ann-dir', default=None,
                   help='coco_object: convert the masks in this folder (writes *_instanceTrainIds.png there)')
    p.add_argument('--cityscapes-method', choices=['auto', 'scripts', 'table'], default='auto',
                   help='cityscapes: cityscapesscripts on polygons, or the labelId table on *_labelIds.png')
    p.add_argument('--no-check', action='store_true', help='skip the check_data pass after each step')
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    try:
        data_dir, roots = parse_data_roots(args.data_root, args.data_root_override)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    data_root = Path(data_dir) if data_dir is not None else DATA_DIR
    opts = Options(data_root=data_root, roots={k: Path(v) for k, v in roots.items()},
                   download_dir=Path(args.download_dir) if args.download_dir else data_root / 'downloads',
                   nproc=max(1, args.nproc), no_download=args.no_download, no_verify=args.no_verify,
                   with_train=args.with_train, from_raw=args.from_raw,
                   ann_dir=Path(args.ann_dir) if args.ann_dir else None,
                   cityscapes_method=args.cityscapes_method, check=not args.no_check)
    steps = list(STEPS) if args.step == 'all' else [args.step]
    results = {s: run_step(s, opts) for s in steps}
    if len(steps) > 1:
        print('summary: ' + ', '.join(f'{s} {"ok" if not code else "FAILED"}' for s, code in results.items()))
    return max(results.values())


if __name__ == '__main__':
    sys.exit(main())
