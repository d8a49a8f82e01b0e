#!/usr/bin/env python
"""Time ProxyCLIP and GEM beside their authors' code, on the same random weights, in one process.

Needs local checkouts of the official code (not part of this project; nothing
of it is imported until a case runs): mc-lan/ProxyCLIP (its bundled open_clip,
segmentor and class files), facebookresearch/dino (the ``vision_transformer.py``
that ProxyCLIP's ``torch.hub.load('facebookresearch/dino:main', 'dino_vitb8')``
returns) and WalBouss/GEM (``gem/gem_wrapper.py``; needs ``einops``).

* ``proxyclip``: whole predictions of one VOC-sized image (375x500 resized to
  336x448; 336/112 windows, VOC20 classes, 80 templates) by our ProxyCLIP config
  and by the official ``ProxyCLIPSegmentation.predict``, the same tiny CLIP and
  the same DINO weights (``--vfm dino``: DINO ViT-B/8 at its real size,
  ``tiny``: a one-block DINO-layout ViT); the official ``.half()`` calls are made
  no-ops (fp32 on the CPU, as the project's official-code fixtures were made).
* ``gem``: the dense logits of one 448x448 window: our GEM's ``_patch_logits``
  against the official ``GEMWrapper``'s ``model.visual`` + normalise + text
  product (the official forward's resize and min-max are left out: the
  harness's slide does its own resize).

Both sides are timed with ``torch.utils.benchmark`` (median and IQR over
blocks) in ``--rounds`` interleaved rounds (ours, then the official code: a
round's two figures saw the same load); the ratio of the best medians and the
per-round ratios are printed, with the agreement of the outputs.

    python tools/compare_official_speed.py --proxyclip PROXYCLIP_CHECKOUT --dino DINO_CHECKOUT \\
        --gem GEM_CHECKOUT --vfm tiny --threads 1
"""
import argparse
import contextlib
import importlib
import importlib.util
import os.path as osp
import sys
import types

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from clearclip_seg.apis import init_segmentor  # noqa: E402
from clearclip_seg.perf.inputs import machine_info, synthetic_images  # noqa: E402

TINY_VFM = dict(img_size=64, embed_dim=32, depth=1, num_heads=2)


def benchmark_call(fn, min_run_time: float):
    """``torch.utils.benchmark`` blocks of ``fn()`` for ``min_run_time`` s (here, not from the package: this
    script also runs against an older checkout of the package, copied into its ``tools/``)."""
    from torch.utils import benchmark
    return benchmark.Timer(stmt='fn()', globals={'fn': fn},
                           num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=min_run_time)


def _tiny_options(arch: str) -> dict:
    return {'model.clip.pretrained': None, 'model.clip.arch': arch,
            'model.clip.arch_file': osp.join(ROOT, 'tests', 'assets', f'{arch}.json'), 'model.text_cache': False}


@contextlib.contextmanager
def _no_half():
    """The official code calls ``.half()`` on the VFM and the windows: fp32 on the CPU instead."""
    saved = torch.Tensor.half, torch.nn.Module.half
    torch.Tensor.half = lambda self, *a, **k: self
    torch.nn.Module.half = lambda self: self
    try:
        yield
    finally:
        torch.Tensor.half, torch.nn.Module.half = saved


def _import_beside(checkout: str, module: str, shadowed: str = 'open_clip'):
    """Import ``module`` from ``checkout`` with its own copy of ``shadowed`` (the installed one is kept for us)."""
    def ours(name):
        return name == shadowed or name.startswith(shadowed + '.')
    saved = {k: m for k, m in sys.modules.items() if ours(k)}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, checkout)
    # ProxyCLIP's myutils imports openpyxl for an Excel logger that prediction never calls
    stub = 'openpyxl' not in sys.modules and importlib.util.find_spec('openpyxl') is None
    if stub:
        sys.modules['openpyxl'] = types.ModuleType('openpyxl')
    try:
        mod = importlib.import_module(module)
        bundled = sys.modules[shadowed]
    finally:
        sys.path.remove(checkout)
        if stub:
            del sys.modules['openpyxl']
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
    return mod, bundled


def _clip_state(seg) -> dict:
    return {k: v.clone() for k, v in seg._text_model[0].state_dict().items()}


def _interleaved(run_ours, run_official, rounds: int, min_run_time: float) -> dict:
    """Each round measures ours, then the official code: a round's two figures saw the same load."""
    pairs = {'ours': [], 'official': []}
    for _ in range(rounds):
        pairs['ours'].append(benchmark_call(run_ours, min_run_time))
        pairs['official'].append(benchmark_call(run_official, min_run_time))
    return pairs


def _report(name: str, pairs, log) -> dict:
    ours = [m.median for m in pairs['ours']]
    official = [m.median for m in pairs['official']]
    per_round = sorted(o / u for o, u in zip(official, ours))
    best = min(official) / min(ours)
    for i, (u, o) in enumerate(zip(pairs['ours'], pairs['official'])):
        log(f'  {name} round {i + 1}: ours median {u.median * 1e3:8.1f} ms (IQR {u.iqr * 1e3:6.1f}, '
            f'{len(u.times)} blocks), official {o.median * 1e3:8.1f} ms (IQR {o.iqr * 1e3:6.1f}, '
            f'{len(o.times)} blocks): {o.median / u.median:.2f}x')
    median_ratio = per_round[len(per_round) // 2]
    log(f'  {name}: ours is {best:.2f}x the speed of the official code (best medians); per round '
        f'{per_round[0]:.2f}-{per_round[-1]:.2f}x, median {median_ratio:.2f}x')
    return dict(ours_s=ours, official_s=official, speed_ratio=best, round_ratios=per_round,
                median_round_ratio=median_ratio)


def proxyclip_case(proxyclip: str, dino: str, vfm: str, arch: str, min_run_time: float, rounds: int = 3,
                   log=print) -> dict:
    from mmseg.structures import SegDataSample
    opts = {**_tiny_options(arch), 'model.method.vfm_pretrained': False}
    if vfm == 'tiny':   # a one-block DINO-layout ViT with DINO's positional-embedding rule
        opts.update({'model.method.vfm': 'vit_small_patch8_224.dino', 'model.method.pos_embed_resize': 'dino_hub',
                     'model.method.vfm_kwargs': dict(**TINY_VFM, dynamic_img_size=True)})
    torch.manual_seed(0)
    seg = init_segmentor(osp.join(ROOT, 'configs', 'proxyclip', 'proxyclip_vit-b16_voc20.py'), device='cpu',
                         cfg_options=opts, build_text=False)
    clip_state = _clip_state(seg)
    seg.build_text_classifier()
    vfm_state = seg.method.load().state_dict()

    sys.path.insert(0, dino)
    try:
        dvt = importlib.import_module('vision_transformer')
    finally:
        sys.path.remove(dino)
    official_vfm = (dvt.VisionTransformer(patch_size=8, qkv_bias=True, num_classes=0, **{
        **TINY_VFM, 'img_size': [TINY_VFM['img_size']]}) if vfm == 'tiny' else dvt.vit_base(patch_size=8, num_classes=0))
    official_vfm.load_state_dict({k: v for k, v in vfm_state.items() if k in official_vfm.state_dict()}, strict=True)
    mod, oc = _import_beside(proxyclip, 'proxyclip_segmentor')
    oc.add_model_config(osp.join(ROOT, 'tests', 'assets', f'{arch}.json'))

    def create_model(name, pretrained=None, precision='fp32'):
        model = oc.create_model(arch, pretrained=None, precision='fp32')
        model.load_state_dict(clip_state, strict=True)
        return model

    mod.create_model = create_model
    hub_load = torch.hub.load
    torch.hub.load = lambda *a, **k: official_vfm
    try:
        with _no_half():
            official = mod.ProxyCLIPSegmentation('openai', arch, 'dino', osp.join(proxyclip, 'configs', 'cls_voc20.txt'),
                                                 device=torch.device('cpu'))
    finally:
        torch.hub.load = hub_load
    image = synthetic_images([(336, 448)], seed=0)[0]
    meta = dict(ori_shape=(375, 500), img_shape=(336, 448))

    def run_ours():
        return seg.predict([image], [SegDataSample(metainfo=meta)])[0].pred_sem_seg.data

    def run_official():
        with _no_half():
            return official.predict(image[None], [SegDataSample(metainfo=meta)])[0].pred_sem_seg.data

    with torch.inference_mode():
        a, b = run_ours(), run_official()
        agree = (a == b).float().mean().item()
        log(f'proxyclip ({arch}, VFM {vfm}): label agreement with the official code {agree:.4%}')
        pairs = _interleaved(run_ours, run_official, rounds, min_run_time)
    return dict(case='proxyclip', vfm=vfm, arch=arch, label_agreement=agree, **_report('proxyclip', pairs, log))


def gem_case(gem: str, arch: str, min_run_time: float, rounds: int = 3, log=print) -> dict:
    import open_clip
    torch.manual_seed(0)
    seg = init_segmentor(osp.join(ROOT, 'configs', 'gem', 'gem_vit-b16_voc20.py'), device='cpu',
                         cfg_options={**_tiny_options(arch), 'model.templates': 'a_photo_of'}, build_text=False)
    clip_state = _clip_state(seg)
    text = seg.build_text_classifier()
    sys.path.insert(0, gem)
    try:
        wrapper_mod = importlib.import_module('gem.gem_wrapper')
    finally:
        sys.path.remove(gem)
    open_clip.add_model_config(osp.join(ROOT, 'tests', 'assets', f'{arch}.json'))
    model = open_clip.create_model(arch, pretrained=None)
    model.load_state_dict(clip_state, strict=True)
    wrapper = wrapper_mod.GEMWrapper(model.eval(), tokenizer=None, depth=seg.method.depth)
    # GEM pins open_clip <= 2.23, whose blocks took (tokens, batch, width); the installed open_clip's are
    # batch-first, and GEM's forward hands them (tokens, batch, width): the unchanged blocks' attention is
    # told so (the GEM blocks transpose for themselves)
    for blk in model.visual.transformer.resblocks:
        if isinstance(getattr(blk, 'attn', None), torch.nn.MultiheadAttention):
            blk.attn.batch_first = False
    crop = synthetic_images([(448, 448)], seed=0)[0][None]
    patch = wrapper.patch_size

    def run_ours():
        return seg._patch_logits(crop)

    def run_official():
        feat_gem, _ = wrapper.model.visual(crop)
        logits = F.normalize(feat_gem, dim=-1)[:, 1:] @ text.T
        return logits.transpose(1, 2).reshape(1, -1, crop.shape[-2] // patch, crop.shape[-1] // patch)

    with torch.inference_mode():
        diff = (run_ours() - run_official()).abs().max().item()
        log(f'gem ({arch}): max abs difference of the patch logits from the official code {diff:.2e}')
        pairs = _interleaved(run_ours, run_official, rounds, min_run_time)
    return dict(case='gem', arch=arch, max_abs_diff=diff, **_report('gem', pairs, log))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--proxyclip', help='checkout of mc-lan/ProxyCLIP (with --dino)')
    p.add_argument('--dino', help='checkout of facebookresearch/dino')
    p.add_argument('--gem', help='checkout of WalBouss/GEM')
    p.add_argument('--vfm', choices=('tiny', 'dino'), default='tiny',
                   help="ProxyCLIP's proxy: a one-block tiny DINO or DINO ViT-B/8 (random weights)")
    p.add_argument('--proxyclip-arch', default='tinyoa')
    p.add_argument('--gem-arch', default='tiny12oa')
    p.add_argument('--min-run-time', type=float, default=3.0, help='seconds per torch.utils.benchmark measurement')
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (ours, official) per case')
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args(argv)
    if bool(args.proxyclip) != bool(args.dino):
        p.exit(2, 'error: --proxyclip and --dino go together (ProxyCLIP loads DINO from its hub code)\n')
    for key in ('proxyclip', 'dino', 'gem'):
        path = getattr(args, key)
        if path and not osp.isdir(path):
            p.exit(2, f'error: --{key} {path}: not a folder (expected a checkout of the official code)\n')
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info('cpu')
    print(f"machine: {info.get('cpu')} ({info.get('cpus')} CPUs, {info['threads']} torch threads), "
          f"torch {info['torch']}, fp32"
          + (f", load average {info['loadavg_at_start'][0]:.2f}" if 'loadavg_at_start' in info else ''))
    out = []
    if args.proxyclip:
        out.append(proxyclip_case(args.proxyclip, args.dino, args.vfm, args.proxyclip_arch, args.min_run_time,
                                  args.rounds))
    if args.gem:
        out.append(gem_case(args.gem, args.gem_arch, args.min_run_time, args.rounds))
    return out


if __name__ == '__main__':
    main()
