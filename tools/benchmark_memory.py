#!/usr/bin/env python
"""Peak memory and time of one prediction on large images (``clearclip_seg.perf.image_memory``).

Every case and image size runs in a fresh child process (random weights, the
config's architecture and test resize, synthetic image): its resident-set
high-water mark is the figure. Cases: ``clearclip`` (VOC21), ``clearclip+pamr``,
``sclip`` (VOC21, ``area_thd=0.1``), ``clearclip-ade20k`` (150 classes) and ``lposs-plus``
(VOC21's 46 queries; label propagation over all windows' patches, then over the pixels).

Examples::

    python tools/benchmark_memory.py                                  # every case at 375x500, 1024x2048, 4000x6000
    python tools/benchmark_memory.py --cases sclip --sizes 4000x6000
    python tools/benchmark_memory.py --code-root ../old-checkout --json before.json   # another checkout's code
"""
import argparse
import sys

from clearclip_seg.perf import parse_size
from clearclip_seg.perf.image_memory import CASES, SIZES, memory_report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Peak RSS and time of one prediction on large images, '
                                            'a fresh process per case (random weights, synthetic images).')
    p.add_argument('--cases', nargs='+', choices=list(CASES), default=None, help='default: all')
    p.add_argument('--sizes', nargs='+', default=None, metavar='HxW',
                   help='raw image sizes (default: ' + ' '.join(f'{h}x{w}' for h, w in SIZES) + ')')
    p.add_argument('--code-root', default=None, help='the checkout whose clearclip_seg is measured (default: this one)')
    p.add_argument('--threads', type=int, default=1, help='torch threads per child (default 1)')
    p.add_argument('--json', default=None, metavar='OUT', help='also write the figures to this JSON file')
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f'--threads={args.threads}: expected a positive integer')
    try:
        args.sizes = [parse_size(s) for s in args.sizes] if args.sizes else list(SIZES)
    except ValueError as e:
        p.error(f'--sizes: {e}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        return memory_report(args.cases, args.sizes, args.code_root, args.threads, args.json)
    except (RuntimeError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
