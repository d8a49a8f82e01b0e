#!/usr/bin/env python
"""Write every generated config from the protocol tables (``clearclip_seg/protocol/render.py``).

The base model config, the dataset base configs and the leaf configs
(``configs/{method}/{method}_{backbone}_{benchmark}.py``) are rendered from
``clearclip_seg/protocol/``; ``tests/test_configs.py`` checks that the committed
files equal what this tool writes.

Usage: python tools/make_configs.py [--check]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from clearclip_seg.protocol.render import write_configs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only report files that differ')
    args = parser.parse_args()
    stale = write_configs(ROOT, check=args.check)
    verb = 'stale' if args.check else 'written'
    print(f'{len(stale)} config(s) {verb}' + (':\n  ' + '\n  '.join(stale) if stale else ''))
    sys.exit(1 if args.check and stale else 0)


if __name__ == '__main__':
    main()
