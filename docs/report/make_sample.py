#!/usr/bin/env python
"""Make the sample report of docs/report.md: a tiny-model sweep, its tables, its report, a screenshot.

    python docs/report/make_sample.py OUT [--screenshot docs/report/report.png]

RANDOM WEIGHTS: every run uses the tiny randomly initialised test CLIP
(``tests/assets/clearclip-tiny-vit.json``) on two synthetic VOC-layout images,
so the numbers show the layout of the tables and the report, not results.

The sweep (VOC21 and VOC20, in the runner's suites and record layout,
``OUT/results/<suite>/<run>/record.json``): ``main`` (ClearCLIP), ``baselines``
(vanilla CLIP), ``ablation`` (the 20 points of attention x residual x FFN, VOC20
only), ``methods`` and ``methods-common`` (ClearCLIP, SCLIP, NACLIP). Three runs save
panels (``--show-dir``). Then ``collect_results.py --out OUT/tables --per-class``
and ``report.py --out OUT/report``; with ``--screenshot`` headless Chromium
photographs the page.
"""
import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_ARCH = os.path.join(ROOT, 'tests', 'assets', 'clearclip-tiny-vit.json')
BENCHES = ('voc21', 'voc20')
CARDS = ('clearclip', 'sclip', 'naclip')
SHOW = ('main/clearclip_vit-b16_voc21', 'baselines/clip_vit-b16_voc21', 'methods/sclip_vit-b16_voc21')


def tiny_options(data_root: str) -> dict:
    """Swap the tiny random CLIP and the synthetic data into any config."""
    return {'model.clip.arch_file': TINY_ARCH, 'model.clip.arch': 'clearclip-tiny-vit',
            'model.clip.pretrained': None, 'test_dataloader.num_workers': 0,
            'test_dataloader.persistent_workers': False, 'test_dataloader.dataset.data_root': data_root,
            'default_hooks.logger.interval': 100}


def sweep_runs(results: str, data_root: str, ablation: bool = True):
    """The sample's runs (``Run`` objects with records under ``results/<suite>/<name>/``)."""
    sys.path.insert(0, ROOT)
    from clearclip_seg.suites import method_runs, suite_runs
    runs = []
    picked = [('main', suite_runs('main', BENCHES)), ('baselines', suite_runs('baselines', BENCHES)),
              ('methods', method_runs('own', BENCHES, cards=CARDS[1:])),
              ('methods-common', method_runs('common', BENCHES, cards=CARDS[1:]))]
    if ablation:
        picked.append(('ablation', suite_runs('ablation', ['voc20'])))
    for suite, rs in picked:
        for r in rs:
            if suite == 'main' and r.backbone != 'vit-b16':
                continue   # one tiny model stands in for every backbone: one of them
            if suite == 'baselines' and r.preset != 'clip':
                continue
            r.run_info = r.info(suite)
            r.options = {**r.options, **tiny_options(data_root)}
            r.config = os.path.join(ROOT, r.config)
            r.record = os.path.join(results, suite, r.name, 'record.json')
            r.work_dir = os.path.dirname(r.record)
            runs.append(r)
    return runs


def make_sweep(out: str, ablation: bool = True) -> str:
    """Synthetic data and the tiny sweep; returns the results folder."""
    sys.path.insert(0, ROOT)
    from clearclip_seg.evaluation.passes import run_pass
    from clearclip_seg.synthetic import write_benchmark
    from clearclip_seg.sweep.units import group_units
    data_root = os.path.join(out, 'data', 'VOC2012')
    if not os.path.isdir(data_root):
        write_benchmark('voc21', data_root, sizes=((60, 90), (120, 80)), seed=0)
    results = os.path.join(out, 'results')
    runs = sweep_runs(results, data_root, ablation)
    show = [r for r in runs if os.path.relpath(r.work_dir, results) in SHOW]
    rest = [r for r in runs if r not in show]
    for unit in group_units(rest):
        run_pass(unit.runs, log=None)
    for r in show:   # panels: one pass each (a pass has one show dir)
        run_pass([r], show_dir=os.path.join(r.work_dir, 'vis'), show_n=2, log=None)
    failed = [r.name for r in runs if r.error is not None]
    if failed:
        raise SystemExit(f'error: runs failed: {failed}')
    return results


def screenshot(html: str, png: str, width: int = 1400, height: int = 2400) -> None:
    """A PNG of the page's top by headless Chromium (``tools/setup_browser.sh`` installs it)."""
    from shutil import which
    exe = which('chromium') or which('chromium-browser') or which('google-chrome')
    if exe is None:
        raise SystemExit('error: no chromium on PATH (bash tools/setup_browser.sh)')
    subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    f'--window-size={width},{height}', f'--screenshot={os.path.abspath(png)}',
                    'file://' + os.path.abspath(html)], check=True, capture_output=True, timeout=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('out')
    p.add_argument('--screenshot', help='PNG of the report page')
    args = p.parse_args(argv)
    if os.path.isdir(os.path.join(args.out, 'results')):
        shutil.rmtree(os.path.join(args.out, 'results'))
    results = make_sweep(args.out)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'collect_results.py'), results, '--out',
                    os.path.join(args.out, 'tables'), '--per-class'], check=True, env=env, cwd=args.out)
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'report.py'), 'results', '--out', 'report',
                    '--title', 'ClearCLIP-Seg sample report (tiny model, RANDOM WEIGHTS)',
                    '--compare', 'ClearCLIP \u00b7 clearclip-tiny-vit (random weights) | voc21',
                    'SCLIP \u00b7 clearclip-tiny-vit (random weights) | voc21'], check=True, env=env, cwd=args.out)
    if args.screenshot:
        screenshot(os.path.join(args.out, 'report', 'index.html'), args.screenshot)
    return 0


if __name__ == '__main__':
    sys.exit(main())
