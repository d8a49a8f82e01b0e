#!/usr/bin/env python
"""Analyse the residual/attention decomposition of CLIP's last block (paper Sec. 3).

For the model and dataset of a benchmark config, over the first --num-images
test images (the test pipeline's resize and normalisation, slide windows of
the config's ``test_cfg``):

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

Writes ``decomposition.json`` (a run record of kind ``analysis``) and
``norms.png``, ``entropy.png``, ``miou.png`` to --out (default
work_dirs/decomposition/<config name>). The computations are in
``clearclip_seg.analysis``.

Example (tiny random model on a synthetic dataset, runs on a CPU):

    python tools/analyze_decomposition.py configs/clearclip/clearclip_vit-b16_voc21.py \\
        --num-images 2 --cfg-options model.clip.arch_file=tests/assets/clearclip-tiny-vit.json \\
        model.clip.arch=clearclip-tiny-vit model.clip.pretrained=None \\
        test_dataloader.dataset.data_root=/tmp/synth/VOC2012
"""
import argparse
import os.path as osp
import sys

from clearclip_seg.analysis import format_summary, parse_modes, plot_figures, run_analysis
from clearclip_seg.apis import ConfigError
from clearclip_seg.checks import positive_int, strict_dict_action

DEFAULT_MODES = 'qk,qq,kk,vv,qq+kk,identity'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Norms, attention entropy and per-component mIoU of CLIP's last block (paper Figs. 2-4)")
    parser.add_argument('config', help='a benchmark config, e.g. configs/clearclip/clearclip_vit-b16_voc21.py')
    parser.add_argument('--num-images', type=positive_int, default=50,
                        help='use the first N images of the test dataset (default 50)')
    parser.add_argument('--modes', default=DEFAULT_MODES,
                        help=f'comma-separated attention modes (default {DEFAULT_MODES})')
    parser.add_argument('--cfg-options', nargs='+', action=strict_dict_action(), default={},
                        help='override config keys, e.g. test_dataloader.dataset.data_root=/data/VOC2012')
    parser.add_argument('--skip-miou', action='store_true', help='only norms and entropy (no labels needed)')
    parser.add_argument('--seed', type=int, default=0, help='torch seed before the model is built '
                                                           '(only matters for random weights)')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if available)')
    parser.add_argument('--out', default=None, help='output folder (default work_dirs/decomposition/<config>)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        modes = parse_modes(args.modes)
    except ValueError as e:
        print(f'error: --modes: {e}', file=sys.stderr)
        return 2
    out_dir = args.out or osp.join('work_dirs', 'decomposition', osp.splitext(osp.basename(args.config))[0])
    try:
        record, path = run_analysis(args.config, args.cfg_options, modes, args.num_images, args.skip_miou,
                                    args.seed, args.device, out_dir)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    model = record['model']
    title = f"{model['arch']} / {model['pretrained'] or 'random weights'}"
    plots = plot_figures(record['analysis'], out_dir, title=title, benchmark=record.get('benchmark') or '')
    print('\n' + format_summary(record['analysis']))
    print(f"\nwritten: {path}, " + ', '.join(plots))
    return 0


if __name__ == '__main__':
    sys.exit(main())
