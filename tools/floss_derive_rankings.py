#!/usr/bin/env python
"""Write ``clearclip_seg/vocabularies/floss/rankings.json`` from FLOSS's official ranking files.

Reads ``<src>/{naclip,maskclip,clipdinoiser}/template_rankings_<base>_<dataset>.json``
(the ``rankings/`` folder of yasserben/FLOSS) and keeps, per class, what the
authors' loaders pick (``NACLIP._load_template_rankings``,
``DinoCLIP_Inferencer._load_template_rankings``): the entries with
``pixel_percentage > 0``, in file order (ascending entropy), the first ``--keep``
template ids. Each benchmark entry records its source file and SHA-256.

Usage: python tools/floss_derive_rankings.py SRC [--keep 4] [--out PATH] [--commit SHA]
"""
import argparse
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from clearclip_seg.models.floss import RANKINGS_FORMAT, SHIPPED_RANKINGS  # noqa: E402
from clearclip_seg.models.floss_rankings import FLOSS_DATASETS, select_templates  # noqa: E402

# the authors' base -> the backbone slug their rankings were computed with (configs: NACLIP OpenAI
# ViT-B/16; MaskCLIP and CLIP-DINOiser open_clip ViT-B-16 laion2b_s34b_b88k)
BASES = {'naclip': 'vit-b16', 'maskclip': 'openclip-vit-b16', 'clipdinoiser': 'openclip-vit-b16'}


def derive(src: str, keep: int, commit: str) -> dict:
    out = {'format': RANKINGS_FORMAT,
           'templates': 'openai_imagenet',
           'keep': keep,
           'provenance': f'yasserben/FLOSS@{commit} rankings/ (entropy rankings on each train split); per class '
                         f'the first {keep} template ids with pixel_percentage > 0, in file order '
                         '(tools/floss_derive_rankings.py)',
           'rankings': {}}
    for base, backbone in BASES.items():
        sets = out['rankings'].setdefault(base, {}).setdefault(backbone, {})
        for bench, dataset in FLOSS_DATASETS.items():
            name = f'template_rankings_{base}_{dataset}.json'
            path = os.path.join(src, base, name)
            try:
                with open(path, 'rb') as f:
                    raw = f.read()
                data = json.loads(raw)
            except (OSError, ValueError) as e:
                raise SystemExit(f'error: {path}: cannot read an official FLOSS ranking file ({e})')
            sets[bench] = {'source': f'rankings/{base}/{name}', 'sha256': hashlib.sha256(raw).hexdigest(),
                           'classes': {k: select_templates(v['entropy_ranking'], keep)
                                       for k, v in data['classes'].items()}}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help="the official 'rankings/' folder")
    parser.add_argument('--keep', type=int, default=4, help='template ids kept per class (the authors use 4)')
    parser.add_argument('--out', default=SHIPPED_RANKINGS)
    parser.add_argument('--commit', default='ccf1d49dba37d0e35316dc50be57d133745a168a')
    args = parser.parse_args()
    data = derive(args.src, args.keep, args.commit)
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=0, sort_keys=False)
        f.write('\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
