#!/usr/bin/env python
"""Segment your own images with an open vocabulary and save coloured overlays.

    python tools/demo.py IMAGE_OR_DIR... (--vocab "cat, dog, grass" | --vocab-file FILE)
        [--method clearclip [clip maskclip sclip NACLIP ...]] [--config CONFIG]
        [--arch ViT-B-16 --pretrained openai | --arch-file JSON] [--precision auto]
        [--out DIR] [--overwrite]

Vocabulary: ``--vocab`` is a comma-separated list of classes, one query each
(``"cat, dog, grass"`` = 3 classes). Synonyms need a vocabulary file
(``--vocab-file``): one class per line, commas separating the synonyms of that
line's class (docs/protocol.md); a shipped name such as ``voc21`` also works.

Methods (``--method``, or its older name ``--preset``): any preset (a last block:
``clearclip``, ``clip``, ``maskclip``, ``sclip-style``...), any method card (the
method under its authors' own windows, patch fit, logit scale, post-processing and
resize: ``sclip``, ``naclip``, ``resclip``, ``scclip``, ``gem``, ``proxyclip``) or any
registered method by its type (``SCLIP``, ``NACLIP``...: its default options under
the protocol's windows); ``--help`` lists them all.

For each image and method: ``<out>/<image>_<method>.png``, the image with the
predicted mask blended over it and a legend of the classes present. With
several methods also ``<out>/<image>_panel.png``: the image and each method's
overlay side by side. Directories are scanned (not recursively) for
jpg/jpeg/png/bmp/webp files. Images that cannot be read are reported by name
on one line each and skipped; the exit code is non-zero only if no image
succeeded. An ``--out`` folder holding an earlier run's pictures is refused
(old and new would mix) unless ``--overwrite``, which deletes them first and
says how many.

The model is built through the config system (default
``configs/_base_/models/clearclip_vit-b16.py``) with the method's overrides,
the given vocabulary, ``prob_thd`` (default 0) and slide inference (the protocol's
crop 448, stride 224, or a method card's own; ``--crop``/``--stride`` set them for
all); images are prepared like the benchmarks' test pipeline (BGR read, keep-ratio
resize of the protocol, ``clearclip_seg.protocol.constants.RESIZE``, or a method
card's own; ``--scale`` for all; the model's normalisation) and predictions come
back at the original size. ``--precision auto`` is fp16 on a GPU and fp32
on a CPU, decided for ``--device``. It runs on a CPU. The work is done by
``clearclip_seg.demo`` (through ``clearclip_seg.apis``).

Without network access use a local checkpoint (``--pretrained /path/to/ckpt``)
or, for a format check, the tiny random test model
(``--arch-file tests/assets/clearclip-tiny-vit.json``).
"""
import argparse
import os.path as osp
import sys

from clearclip_seg.apis import ConfigError
from clearclip_seg.checks import claim_output_dir, strict_dict_action
from clearclip_seg.demo import (DEFAULT_CONFIG, build_models, collect_images, demo_scales, earlier_outputs,
                                model_names, parse_class_list, parse_models, segment_images)
from clearclip_seg.protocol.constants import RESIZE, SLIDE_CROP, SLIDE_STRIDE


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Open-vocabulary segmentation of your own images (coloured overlays with a legend)',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example: python tools/demo.py photos/ --vocab "cat, dog, grass, sky" '
               '--method clearclip clip maskclip sclip --out demo_out')
    parser.add_argument('inputs', nargs='+', help='image files and/or folders of images')
    voc = parser.add_mutually_exclusive_group(required=True)
    voc.add_argument('--vocab', help='comma-separated class names, e.g. "cat, dog, grass" (no synonyms)')
    voc.add_argument('--vocab-file', help='vocabulary file (one class per line, commas separate synonyms) '
                                          'or a shipped name such as voc21')
    parser.add_argument('--method', '--preset', nargs='+', default=['clearclip'], dest='methods', metavar='NAME',
                        help='one or more presets, method cards or registered methods (space- or comma-'
                             f'separated; default clearclip): {", ".join(model_names())}')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='model config (default: configs/_base_/models/clearclip_vit-b16.py)')
    parser.add_argument('--arch', help='open_clip architecture (default: the config\'s, ViT-B-16)')
    parser.add_argument('--pretrained', help='open_clip tag or checkpoint file; "none" = random weights '
                                             '(default: the config\'s, openai; none with --arch-file)')
    parser.add_argument('--arch-file', help='JSON architecture to register with open_clip (e.g. the tiny '
                                            'test model tests/assets/clearclip-tiny-vit.json)')
    parser.add_argument('--precision', default=None, help='auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16')
    parser.add_argument('--prob-thd', type=float, default=0.0, help='pixels below it become class 0 (default 0)')
    parser.add_argument('--crop', type=int, default=None,
                        help=f'slide window size for every method (default {SLIDE_CROP}, a method card\'s own)')
    parser.add_argument('--stride', type=int, default=None,
                        help=f'slide window stride for every method (default {SLIDE_STRIDE}, a method card\'s own)')
    parser.add_argument('--scale', type=int, nargs=2, default=None, metavar=('LONG', 'SHORT'),
                        help='keep-ratio resize bound for every method, as the test pipeline '
                             '(default %d %d, a method card\'s own)' % RESIZE)
    parser.add_argument('--templates', default=None, help='prompt templates (default: the config\'s, the '
                                                          '80 OpenAI ImageNet templates)')
    parser.add_argument('--device', default=None, help='cpu, cuda, ... (default: cuda if available)')
    parser.add_argument('--alpha', type=float, default=0.5, help='mask opacity (default 0.5)')
    parser.add_argument('--panel-size', type=int, default=512,
                        help='long side of each tile in the side-by-side panel (default 512)')
    parser.add_argument('--seed', type=int, default=0,
                        help='torch seed before each model build (random weights are then shared by all methods)')
    parser.add_argument('--cfg-options', nargs='+', action=strict_dict_action(), default={},
                        help='further config overrides, applied last, e.g. model.logit_scale=100')
    parser.add_argument('--out', default='demo_out', help='output folder (default demo_out)')
    parser.add_argument('--overwrite', action='store_true',
                        help='delete the pictures an earlier demo run left in --out (otherwise refused)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        names = parse_models(args.methods)
    except ValueError as e:
        print(f'error: --method: {e}', file=sys.stderr)
        return 2
    vocabulary = parse_class_list(args.vocab) if args.vocab is not None else args.vocab_file
    if not vocabulary:
        print('error: --vocab is empty: give comma-separated class names, e.g. "cat, dog, grass"', file=sys.stderr)
        return 2
    if not osp.isfile(args.config):
        print(f"error: config '{args.config}' not found", file=sys.stderr)
        return 2
    paths, problems = collect_images(args.inputs)
    for name, why in problems:
        print(f'skipped {name}: {why}')
    if not paths:
        print('error: no images to segment', file=sys.stderr)
        return 2
    try:
        note = claim_output_dir(args.out, earlier_outputs(args.out), args.overwrite, 'demo pictures')
        if note:
            print(note)
        models = build_models(names, vocabulary, args.device, args.seed, config=args.config, arch=args.arch,
                              arch_file=args.arch_file, pretrained=args.pretrained, precision=args.precision,
                              prob_thd=args.prob_thd, crop=args.crop, stride=args.stride,
                              templates=args.templates, cfg_options=args.cfg_options)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    classes = list(models[names[0]].vocabulary.classes)
    print(f'vocabulary: {len(classes)} classes ({", ".join(classes[:12])}{", ..." if len(classes) > 12 else ""})')
    scales = demo_scales(names, tuple(args.scale) if args.scale else None)
    ok, bad = segment_images(models, paths, args.out, scales, args.alpha, args.panel_size)
    print(f'{ok} image(s) segmented, {bad + len(problems)} skipped; outputs in {args.out}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
