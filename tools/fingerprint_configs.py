#!/usr/bin/env python
"""Fingerprint the predictions of every config on synthetic data, to show a refactor moved no number.

Each config runs on a synthetic copy of its benchmark (``clearclip_seg.synthetic``,
the real on-disk layout) with a tiny random CLIP swapped in (the 3-block
``tests/assets/clearclip-tiny-vit.json`` for last-block presets, the 12-block
``tests/assets/tiny12oa.json`` for methods that read intermediate blocks, and
a tiny random DINO for ProxyCLIP's proxy model), seeded weights and one
template. The fingerprint of a config is the sha256 of its int16 label maps,
image after image, at the original size. Configs that resolve to the same
model and dataset after the tiny swap are run once.

    python tools/fingerprint_configs.py --out before.json            # every config
    python tools/fingerprint_configs.py --only 'vit-b16' --out after.json
    python tools/fingerprint_configs.py --compare before.json after.json
    python tools/fingerprint_configs.py --only configs/itaclip/ --protocol common --out itaclip_common.json

``--protocol common`` puts each method card's config under the common protocol
(``protocol.methods.common_setting``: ClearCLIP's resize, windows, logit scale,
thresholds and vocabulary) before it runs; ``own`` (the default) runs the configs as
they are. A config that fails is recorded with its error (the run goes on).

The comparison prints the configs whose fingerprints differ and exits 1 if any do.
It uses only the configs, MMSeg's registries and the segmentor's ``test_step``,
so it runs unchanged on any commit of the package (``PYTHONPATH=<checkout>``).
"""
import argparse
import glob
import hashlib
import json
import os
import os.path as osp
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ASSETS = osp.join(ROOT, 'tests', 'assets')
TINY = ('clearclip-tiny-vit', osp.join(ASSETS, 'clearclip-tiny-vit.json'))
TINY12 = ('tiny12oa', osp.join(ASSETS, 'tiny12oa.json'))
TINY_PROXY_VFM = dict(vfm='vit_small_patch8_224.dino', vfm_pretrained=False,
                      vfm_kwargs=dict(img_size=64, embed_dim=32, depth=1, num_heads=2, dynamic_img_size=True))
# per method type: the method options that swap its other models for tiny random ones (no download)
TINY_METHOD_MODELS = {
    'ProxyCLIP': TINY_PROXY_VFM,
    # LPOSS's DINO: a tiny DINO-layout ViT
    'LPOSS': dict(vfm_pretrained=False, vfm_kwargs=dict(img_size=64, embed_dim=32, depth=2, num_heads=2)),
    # Trident: ProxyCLIP's tiny proxy and a tiny timm SAM (1024 input, 2 blocks, the last global)
    'Trident': dict(TINY_PROXY_VFM, sam_pretrained=False,
                    sam_kwargs=dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=[1])),
}


def tiny_config(path: str, data_roots: dict, protocol: str = 'own'):
    """The config at ``path`` with the tiny models, one template, no text cache and synthetic data."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    from clearclip_seg.protocol.methods import METHOD_CARDS, common_setting
    if protocol == 'common' and cfg.get('method') in METHOD_CARDS:
        setting = common_setting(METHOD_CARDS[cfg.method], cfg.benchmark, backbone=cfg.get('backbone'))
        # a dict replaces the config's (as the sweep's --cfg-options do with _delete_)
        cfg.merge_from_dict({k: dict(v, _delete_=True) if isinstance(v, dict) else v
                             for k, v in setting.cfg_options().items() if k not in ('model.method', 'model.last_block')})
    arch, arch_file = TINY if cfg.model.get('method') is None else TINY12
    cfg.model.clip.update(arch=arch, arch_file=arch_file, pretrained=None, precision='fp32')
    method_type = cfg.model.method.get('type') if cfg.model.get('method') is not None else None
    if method_type in TINY_METHOD_MODELS:
        cfg.model.method.update(TINY_METHOD_MODELS[method_type])
    # one template keeps the text side cheap; FLOSS's rankings index the 80 templates, so its configs keep them
    head = cfg.model.get('text_head')
    cfg.model.update(text_cache=False, **({} if head and head.get('type') == 'FLOSS' else dict(templates='a_photo_of')))
    cfg.test_dataloader.dataset.data_root = data_roots[cfg.benchmark]
    return cfg


def fingerprint(cfg) -> dict:
    """sha256 of the config's label maps on its dataset, and the number of images and pixels."""
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS, MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    digest, pixels = hashlib.sha256(), 0
    with torch.no_grad():
        for i in range(len(dataset)):
            out = model.test_step(pseudo_collate([dataset[i]]))[0]
            label = out.pred_sem_seg.data[0].cpu().numpy().astype(np.int16)
            digest.update(np.asarray(label.shape, np.int64).tobytes())
            digest.update(np.ascontiguousarray(label).tobytes())
            pixels += label.size
    return dict(sha256=digest.hexdigest(), images=len(dataset), pixels=int(pixels))


def run(patterns, out: str, protocol: str = 'own') -> int:
    import clearclip_seg
    clearclip_seg.register_all_modules()
    # the configs of the checkout whose package is imported (PYTHONPATH=<checkout> for another commit)
    root = osp.dirname(osp.dirname(osp.abspath(clearclip_seg.__file__)))
    print(f'package and configs: {root}', flush=True)
    from mmengine.registry import init_default_scope
    from clearclip_seg.synthetic import write_benchmark
    init_default_scope('mmseg')
    paths = sorted(p for p in glob.glob(osp.join(root, 'configs', '*', '*.py')) if '_base_' not in p)
    if patterns:
        paths = [p for p in paths if any(s in osp.relpath(p, root) for s in patterns)]
    tmp = tempfile.mkdtemp(prefix='fingerprint-')
    os.environ.setdefault('CLEARCLIP_CACHE', osp.join(tmp, 'cache'))
    roots = {}
    results, seen = {}, {}
    t0 = time.perf_counter()
    for n, path in enumerate(paths, 1):
        from mmengine.config import Config
        bench = Config.fromfile(path).benchmark
        if bench not in roots:
            roots[bench] = osp.join(tmp, bench)
            write_benchmark(bench, roots[bench])
        cfg = tiny_config(path, roots, protocol)
        key = hashlib.sha256(repr((cfg.model.to_dict(), cfg.test_dataloader.dataset.to_dict())).encode()).hexdigest()
        rel = osp.relpath(path, root)
        if key not in seen:
            try:
                seen[key] = fingerprint(cfg)
            except Exception as e:  # a config that fails is a fingerprint too: it must fail the same way
                seen[key] = dict(error=f'{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ""}')
        results[rel] = seen[key]
        print(f'[{n}/{len(paths)}] {rel}: {seen[key].get("sha256", seen[key].get("error"))[:16]}', flush=True)
    with open(out, 'w') as f:
        json.dump(dict(configs=results, distinct=len(seen), seconds=round(time.perf_counter() - t0, 1)), f,
                  indent=1, sort_keys=True)
    print(f'{len(results)} configs ({len(seen)} distinct runs) in {time.perf_counter() - t0:.0f}s -> {out}')
    return 0


def compare(old_path: str, new_path: str) -> int:
    with open(old_path) as f:
        old = json.load(f)['configs']
    with open(new_path) as f:
        new = json.load(f)['configs']
    common = sorted(set(old) & set(new))
    differ = [k for k in common if old[k] != new[k]]
    for k in differ:
        print(f'DIFFERS {k}: {old[k]} -> {new[k]}')
    for k in sorted(set(old) - set(new)):
        print(f'only in {old_path}: {k}')
    for k in sorted(set(new) - set(old)):
        print(f'only in {new_path}: {k}')
    print(f'{len(common) - len(differ)} of {len(common)} common configs identical')
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='*', default=[], help='keep configs whose path contains one of these')
    parser.add_argument('--out', default='fingerprints.json')
    parser.add_argument('--compare', nargs=2, metavar=('OLD', 'NEW'), help='compare two fingerprint files')
    parser.add_argument('--protocol', choices=('own', 'common'), default='own',
                        help='own: the configs as they are; common: method cards under the common protocol')
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    return run(args.only, args.out, args.protocol)


if __name__ == '__main__':
    sys.exit(main())
