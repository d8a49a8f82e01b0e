#!/usr/bin/env python
"""Recompute FLOSS's entropy rankings of the 80 templates per class from unlabeled images.

    python tools/floss_rankings.py CONFIG IMAGE_OR_DIR... --name NAME --backbone SLUG --benchmark KEY
        [--average probs|logits] [--out rankings.json] [--num-images N] [--keep K] [--device cpu]
        [--cfg-options k=v ...]

Scores every template of the config's vocabulary alone with the config's method,
windows and resize (its text head switched off), and ranks the templates per
class by the mean entropy of the pixels each predicts as that class (the
authors' procedure, ``clearclip_seg/models/floss_rankings.py``). The authors run
it on each benchmark's train split. ``--average logits`` is their NACLIP base's
rule (window logits averaged, softmax x100 at the original size), ``probs`` their
MaskCLIP / CLIP-DINOiser bases' (softmax x100 per window, probabilities averaged).

The entry (NAME, SLUG, KEY) is written into ``--out`` (added to what the file
already holds); use it with ``--cfg-options model.text_head.file=OUT
model.text_head.rankings=NAME model.text_head.backbone=SLUG``.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from clearclip_seg.checks import strict_dict_action  # noqa: E402
from clearclip_seg.demo import collect_images  # noqa: E402
from clearclip_seg.models.floss_rankings import AVERAGES, merge_documents  # noqa: E402
from clearclip_seg.records import atomic_write_json  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('inputs', nargs='+', help='image files and/or folders of images (labels are not read)')
    parser.add_argument('--name', required=True, help="the rankings' name (model.text_head.rankings)")
    parser.add_argument('--backbone', required=True, help='backbone slug (model.text_head.backbone)')
    parser.add_argument('--benchmark', required=True, help='benchmark key (model.text_head.benchmark)')
    parser.add_argument('--average', default='probs', choices=AVERAGES)
    parser.add_argument('--out', default='floss_rankings.json')
    parser.add_argument('--num-images', type=int, default=None, help='use the first N images only')
    parser.add_argument('--keep', type=int, default=None, help='template ids kept per class (default: all)')
    parser.add_argument('--templates-per-pass', type=int, default=8)
    parser.add_argument('--device', default=None)
    parser.add_argument('--cfg-options', nargs='+', action=strict_dict_action(), default={})
    args = parser.parse_args(argv)
    paths, problems = collect_images(args.inputs)
    for name, why in problems:
        print(f'error: {name}: {why}', file=sys.stderr)
    if problems or not paths:
        return 2
    if args.num_images is not None:
        if args.num_images < 1:
            print(f'error: --num-images {args.num_images}: expected a positive number', file=sys.stderr)
            return 2
        paths = paths[:args.num_images]
    base = {}
    if os.path.isfile(args.out):
        try:
            with open(args.out, encoding='utf-8') as f:
                base = json.load(f)
        except ValueError as e:
            print(f'error: --out {args.out}: not a JSON file ({e})', file=sys.stderr)
            return 2
    from clearclip_seg.apis.floss_rankings import rank_templates
    try:
        doc = rank_templates(args.config, paths, args.name, args.backbone, args.benchmark, args.average,
                             cfg_options=dict(args.cfg_options), device=args.device,
                             templates_per_pass=args.templates_per_pass, keep=args.keep)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    atomic_write_json(merge_documents(base, doc) if base else doc, args.out)
    print(f'wrote {args.name}/{args.backbone}/{args.benchmark} ({len(paths)} images) to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
