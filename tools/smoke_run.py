#!/usr/bin/env python
"""Smoke run of the main job without data or weights.

Writes a synthetic VOC2012-layout dataset and runs ``tools/test.py`` on the
VOC21 config with a tiny random CLIP registered from a JSON file: the real
pipeline, windows, metric and record, on numbers that mean nothing. Prints
mIoU and the record path.

    python tools/smoke_run.py [--config CONFIG] [--benchmark voc21] [--out DIR]
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import tempfile

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_ARCH = osp.join(ROOT, 'tests', 'assets', 'clearclip-tiny-vit.json')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--benchmark', default='voc21')
    parser.add_argument('--config', default=None, help='default: configs/clearclip/clearclip_vit-b16_<benchmark>.py')
    parser.add_argument('--out', default=None, help='folder for the synthetic data and the record (default: a temp dir)')
    args = parser.parse_args()
    from clearclip_seg.synthetic import write_benchmark
    out = args.out or tempfile.mkdtemp(prefix='clearclip-smoke-')
    data_root = osp.join(out, 'data', args.benchmark)
    write_benchmark(args.benchmark, data_root)
    config = args.config or f'configs/clearclip/clearclip_vit-b16_{args.benchmark}.py'
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, '--work-dir', osp.join(out, 'work'),
           '--cfg-options', f'test_dataloader.dataset.data_root={data_root}', f'model.clip.arch_file={TINY_ARCH}',
           'model.clip.arch=clearclip-tiny-vit', 'model.clip.pretrained=None']
    print('[smoke]', ' '.join(cmd), flush=True)
    env = dict(os.environ, CLEARCLIP_CACHE=osp.join(out, 'cache'))
    sys.exit(subprocess.call(cmd, cwd=ROOT, env=env))


if __name__ == '__main__':
    main()
