#!/usr/bin/env python
"""Decompose CLIP's last block on a benchmark (the paper's figures 2 to 4).

    python tools/analyze_decomposition.py CONFIG [--num-images N]
        [--modes qk,qq,kk,vv,qq+kk,identity] [--cfg-options k=v ...] [--out DIR]

For the first N images of the config's test dataset, one image at a time,
processed exactly like the test pipeline (resize, normalisation, slide
windows of the config's ``test_cfg``):

(a) Frobenius norms of the last block's residual component X_res (its input)
    and attention component X_attn (its attention branch, no residual), per
    attention mode, over all tokens of each window, averaged over windows and
    images;
(b) normalised entropy of the attention maps (per head and query token,
    ``-sum p log p / log N`` in float64), averaged, per mode;
(c) mIoU of segmentation from X_res alone, X_attn alone and X_res + X_attn
    (each through ``ln_post`` + ``proj``, scored against the text classifier
    with the segmentor's slide-window and classification rules, including
    the config's ``prob_thd``), per mode. X_res does not depend on the mode.

Writes ``decomposition.json`` and ``norms.png``, ``entropy.png``, ``miou.png``
to --out (default work_dirs/decomposition/<config name>). See
``clearclip_seg/analysis.py`` for the computations.

Example (tiny random model on a synthetic dataset, runs on a CPU):

    python tools/analyze_decomposition.py configs/clearclip/clearclip_vit-b16_voc21.py \\
        --num-images 2 --cfg-options model.clip.arch_file=tests/assets/clearclip-tiny-vit.json \\
        model.clip.arch=clearclip-tiny-vit model.clip.pretrained=None \\
        test_dataloader.dataset.data_root=/tmp/synth/VOC2012
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_MODES = 'qk,qq,kk,vv,qq+kk,identity'
MODE_TITLES = {'qk': 'q-k (CLIP)', 'qq': 'q-q (ClearCLIP)', 'kk': 'k-k', 'vv': 'v-v',
               'qq+kk': 'qq+kk (SCLIP)', 'identity': 'identity (MaskCLIP)'}
JSON_NAME = 'decomposition.json'


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description="Norms, attention entropy and per-component mIoU of CLIP's last block (paper Figs. 2-4)")
    parser.add_argument('config', help='a benchmark config, e.g. configs/clearclip/clearclip_vit-b16_voc21.py')
    parser.add_argument('--num-images', type=int, default=50,
                        help='use the first N images of the test dataset (default 50)')
    parser.add_argument('--modes', default=DEFAULT_MODES,
                        help=f'comma-separated attention modes (default {DEFAULT_MODES})')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys, e.g. test_dataloader.dataset.data_root=/data/VOC2012')
    parser.add_argument('--skip-miou', action='store_true', help='only norms and entropy (no labels needed)')
    parser.add_argument('--seed', type=int, default=0, help='torch seed before the model is built '
                                                           '(only matters for random weights)')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if available)')
    parser.add_argument('--out', default=None, help='output folder (default work_dirs/decomposition/<config>)')
    return parser.parse_args(argv)


def fail(msg: str) -> None:
    print(f'error: {msg}', file=sys.stderr)
    sys.exit(2)


def build(cfg, device, seed=0):
    """The segmentor and the test dataset from a config."""
    import torch
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    import clearclip_seg
    clearclip_seg.register_all_modules()
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if 'test_dataloader' not in cfg:
        fail('the config has no test_dataloader: use a benchmark config (configs/<method>/...)')
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model).to(device).eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    return model, dataset


def analyze(model, dataset, modes, num_images, ignore_index=255, skip_miou=False, log=print):
    """Run (a), (b), (c) on the first ``num_images`` images; returns the figures."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmseg.structures import SegDataSample

    from clearclip_seg.analysis import (SOURCES, AreaAccumulator, LastBlockInputCache, component_query_logits,
                                        iter_windows, window_statistics)

    n = min(int(num_images), len(dataset))
    enc = model.encoder
    cfg = model.test_cfg
    if cfg['mode'] == 'whole':
        crop, stride = None, None
    else:
        crop, stride = cfg['crop_size'], cfg['stride']
    areas = AreaAccumulator(model.num_classes, ignore_index)
    per_image = {m: [] for m in modes}
    names = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(n):
            data = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            image, sample = data['inputs'][0], data['data_samples'][0]
            names.append(osp.basename(sample.metainfo.get('img_path', str(i))))
            if crop is None:  # whole-image inference: the whole image is one window
                size = tuple(image.shape[-2:])
                windows = list(iter_windows(image, size, size, enc.patch_size))
            else:
                windows = list(iter_windows(image, crop, stride, enc.patch_size))
            cache = LastBlockInputCache(enc)  # blocks 0..L-2 run once per window
            stats = window_statistics(enc, windows, modes, cache)
            for m in modes:
                per_image[m].append(stats[m])
            if not skip_miou:
                if 'gt_sem_seg' not in sample:
                    raise ValueError(f'{names[-1]} has no labels (no LoadAnnotations in the test pipeline?): '
                                     'use a benchmark config, or --skip-miou')
                gt = sample.gt_sem_seg.data.squeeze(0)
                for j, m in enumerate(modes):
                    sources = SOURCES if j == 0 else tuple(s for s in SOURCES if s != 'x_res')
                    logits = component_query_logits(model, [image], m, sources, cache)
                    for s in sources:
                        out = model.postprocess_result([logits[s][0]], [SegDataSample(metainfo=sample.metainfo)])
                        key = ('*', s) if s == 'x_res' else (m, s)
                        areas.add(key, out[0].pred_sem_seg.data.squeeze(0), gt)
            log(f'[{i + 1}/{n}] {names[-1]} ({len(windows)} windows, {time.perf_counter() - t0:.1f}s)')

    def mean(vals):
        return sum(vals) / len(vals)

    norms, entropy = {}, {}
    for m in modes:
        rows = per_image[m]
        norms[m] = dict(x_res=mean([r['x_res_norm'] for r in rows]), x_attn=mean([r['x_attn_norm'] for r in rows]),
                        attn_to_res=mean([r['attn_to_res'] for r in rows]),
                        per_image=dict(x_res=[r['x_res_norm'] for r in rows],
                                       x_attn=[r['x_attn_norm'] for r in rows]))
        heads = [r['entropy_per_head'] for r in rows]
        entropy[m] = dict(mean=mean([r['entropy'] for r in rows]),
                          per_head=[mean(h) for h in zip(*heads)],
                          per_image=[r['entropy'] for r in rows])
    result = dict(num_images=n, images=names, norms=norms, entropy=entropy)
    if not skip_miou:
        res = areas.metrics(('*', 'x_res'))
        miou = {}
        for m in modes:
            miou[m] = {'x_res': res['mIoU'], 'x_attn': areas.metrics((m, 'x_attn'))['mIoU'],
                       'x_res+x_attn': areas.metrics((m, 'x_res+x_attn'))['mIoU']}
        per_class = {'x_res': res['IoU']}
        for m in modes:
            per_class[m] = {s: areas.metrics((m, s))['IoU'] for s in ('x_attn', 'x_res+x_attn')}
        result['miou'] = miou
        result['iou_per_class'] = per_class
    result['wall_s'] = time.perf_counter() - t0
    return result


# -- plots -----------------------------------------------------------------------
def _bars(ax, modes, series, colors=None):
    import numpy as np
    x = np.arange(len(modes))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series.items()):
        vals = [float('nan') if v is None else v for v in values]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=label,
               color=None if colors is None else colors[k])
    ax.set_xticks(x)
    ax.set_xticklabels([MODE_TITLES.get(m, m) for m in modes], rotation=20, ha='right', fontsize=8)


def plot_figures(result: dict, out_dir: str, title: str = '') -> list:
    """Write norms.png, entropy.png and (with mIoU) miou.png; returns their paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    modes = result['modes']
    paths = []
    suffix = f"\n{title}" if title else ''

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    norms = result['norms']
    _bars(ax, modes, {'||X_res||_F': [norms[m]['x_res'] for m in modes],
                      '||X_attn||_F': [norms[m]['x_attn'] for m in modes]}, ['#4c72b0', '#dd8452'])
    vals = [v for m in modes for v in (norms[m]['x_res'], norms[m]['x_attn']) if v > 0]
    if vals and max(vals) / min(vals) > 20:
        ax.set_yscale('log')
    ax.set_ylabel('Frobenius norm')
    ax.set_title(f"Last-block component norms ({result['num_images']} images){suffix}", fontsize=9)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    paths.append(osp.join(out_dir, 'norms.png'))
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    _bars(ax, modes, {'normalised entropy': [result['entropy'][m]['mean'] for m in modes]}, ['#55a868'])
    for bars in ax.containers:
        ax.bar_label(bars, fmt='%.3f', fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel('-sum p log p / log N')
    ax.set_title(f"Attention entropy, mean over heads and queries{suffix}", fontsize=9)
    fig.tight_layout()
    paths.append(osp.join(out_dir, 'entropy.png'))
    fig.savefig(paths[-1])
    plt.close(fig)

    if 'miou' in result:
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
        miou = result['miou']
        _bars(ax, modes, {s: [miou[m][s] for m in modes] for s in ('x_res', 'x_attn', 'x_res+x_attn')},
              ['#4c72b0', '#dd8452', '#8172b3'])
        ax.set_ylabel('mIoU (%)')
        ax.set_title(f"Segmentation from each component ({result.get('benchmark') or 'benchmark'}){suffix}",
                     fontsize=9)
        ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        paths.append(osp.join(out_dir, 'miou.png'))
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def print_summary(result: dict) -> None:
    modes = result['modes']
    print(f"\n{'mode':<10} {'|X_res|':>10} {'|X_attn|':>10} {'entropy':>8}"
          + (f" {'mIoU res':>9} {'mIoU attn':>9} {'mIoU sum':>9}" if 'miou' in result else ''))

    def f(v):
        return f'{"nan":>9}' if v is None else f'{v:9.2f}'
    for m in modes:
        line = (f"{m:<10} {result['norms'][m]['x_res']:10.2f} {result['norms'][m]['x_attn']:10.2f} "
                f"{result['entropy'][m]['mean']:8.4f}")
        if 'miou' in result:
            mi = result['miou'][m]
            line += f" {f(mi['x_res'])} {f(mi['x_attn'])} {f(mi['x_res+x_attn'])}"
        print(line)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.device import get_device

    from clearclip_seg.analysis import parse_modes

    if not osp.isfile(args.config):
        fail(f"config '{args.config}' not found")
    try:
        modes = parse_modes(args.modes)
    except ValueError as e:
        fail(f'--modes: {e}')
    if args.num_images < 1:
        fail('--num-images must be at least 1')
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    device = args.device or get_device()
    out_dir = args.out or osp.join('work_dirs', 'decomposition', osp.splitext(osp.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)

    model, dataset = build(cfg, device, args.seed)
    if len(dataset) == 0:
        fail(f"dataset at '{cfg.test_dataloader.dataset.get('data_root')}' lists no images")
    classes = list(dataset.metainfo['classes'])
    if not args.skip_miou and model.num_classes != len(classes):
        fail(f"vocabulary '{model.vocabulary.name}' has {model.num_classes} classes but the dataset has "
             f'{len(classes)}: use the benchmark\'s vocabulary')
    ignore_index = (cfg.get('test_evaluator') or {}).get('ignore_index', 255)

    result = analyze(model, dataset, modes, args.num_images, ignore_index, args.skip_miou)
    ds_cfg = cfg.test_dataloader.dataset
    result = dict(
        config=osp.relpath(osp.abspath(args.config), ROOT) if osp.abspath(args.config).startswith(ROOT)
        else args.config,
        cfg_options={k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
                     for k, v in args.cfg_options.items()},
        benchmark=cfg.get('benchmark'),
        model=dict(arch=model.arch, pretrained=model.pretrained, precision=model.precision,
                   test_cfg={k: (list(v) if isinstance(v, tuple) else v) for k, v in model.test_cfg.items()},
                   prob_thd=model.prob_thd, logit_scale=model.logit_scale, vocabulary=model.vocabulary.name),
        dataset=dict(type=type(dataset).__name__, data_root=ds_cfg.get('data_root'), size=len(dataset),
                     classes=classes, ignore_index=ignore_index),
        modes=modes,
        sources=['x_res', 'x_attn', 'x_res+x_attn'],
        notes=dict(
            norms='Frobenius norm of the (tokens x width) matrix of each window, all tokens incl. the '
                  'class token; mean over windows, then images. X_res is the last block input '
                  '(mode-independent); X_attn its attention branch without residual.',
            entropy='-sum p log p / log N per head and query token in float64, rows normalised to sum 1 '
                    '(qq+kk = average of its two softmaxes); mean over heads, queries, windows, images.',
            miou='each component through ln_post + proj, cosine with the text classifier, slide '
                 'inference and the segmentor\'s classify (logit scale, synonyms, prob_thd). '
                 'x_res+x_attn is the block output with residual on and FFN off.'),
        **result,
    )
    with open(osp.join(out_dir, JSON_NAME), 'w') as f:
        json.dump(result, f, indent=1)
    weights = result['model']['pretrained'] or 'random weights'
    plots = plot_figures(result, out_dir, title=f"{result['model']['arch']} / {weights}")
    print_summary(result)
    print(f"\nwritten: {osp.join(out_dir, JSON_NAME)}, " + ', '.join(plots))
    return 0


if __name__ == '__main__':
    sys.exit(main())
