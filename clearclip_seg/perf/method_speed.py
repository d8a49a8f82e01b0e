"""Images/s of every method relative to ClearCLIP: random weights, synthetic images, one machine.

Each method is built from its generated config (``configs/<card>/<card>_vit-b16_<benchmark>.py``)
with random weights (the same seed, so the same CLIP for all) and timed on the
same synthetic images, whole predictions included (windows, the method's
passes, resize to the original size, PAMR where on, classification):

* ``protocol='common'`` (default): every method under ClearCLIP's protocol
  (448 short side, 448/224 windows, no PAMR), so the ratio is the method's own
  cost;
* ``protocol='own'``: each method under its own card (resize, windows, PAMR),
  what a reproduction of its published numbers costs.

ProxyCLIP's proxy model is built at its real size with random weights. Methods
are measured one after another (one model in memory at a time); ClearCLIP is
measured first and again last, and both figures are printed, so a drift of the
machine's load shows. The CPU model, threads and load average are printed
beside the figures.
"""
import gc
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..apis import init_segmentor, load_config
from ..protocol.constants import config_path
from ..protocol.methods import DENSE_CARDS, METHOD_CARDS, common_setting
from ..records import atomic_write_json
from ..repo_root import ROOT
from .inputs import VOC_RAW_SIZES, machine_info, protocol_resize, synthetic_images
from .timing import timed

PROTOCOLS = ('common', 'own')


def _options(card: Optional[str], benchmark: str, protocol: str, arch: Optional[str], arch_file: Optional[str],
             precision: str) -> Tuple[str, dict]:
    """(config path, overrides) of one method: random weights, cheap text classifier, the protocol asked for."""
    name = card or 'clearclip'
    opts = {'model.clip.pretrained': None, 'model.clip.precision': precision, 'model.text_cache': False,
            'model.templates': 'a_photo_of'}   # the text classifier is built before timing: one template suffices
    if arch is not None:
        opts['model.clip.arch'] = arch
    if arch_file is not None:
        opts['model.clip.arch_file'] = arch_file
    if card is not None:
        if protocol == 'common':
            opts.update(common_setting(METHOD_CARDS[card], benchmark).cfg_options())
            opts.pop('model.last_block')
            opts.pop('model.method')
        if card == 'proxyclip':  # the proxy ViT at its real size, random weights (no download)
            opts['model.method.vfm_pretrained'] = False
    return osp.join(ROOT, config_path(name, 'vit-b16', benchmark)), opts


def _resize_short(cfg) -> Tuple[int, int]:
    for t in cfg.test_dataloader.dataset.pipeline:
        if t.get('type') == 'Resize':
            return tuple(t['scale'])
    raise ValueError('config has no Resize step in test_dataloader.dataset.pipeline')


def _time_method(card: Optional[str], benchmark: str, protocol: str, raw_sizes: Sequence[Tuple[int, int]],
                 arch, arch_file, precision: str, device, warmup: int, repeats: int, seed: int) -> dict:
    from mmseg.structures import SegDataSample
    config, opts = _options(card, benchmark, protocol, arch, arch_file, precision)
    scale = _resize_short(load_config(config, opts))
    sizes = [protocol_resize(h, w, scale) for h, w in raw_sizes]
    images = synthetic_images(sizes, seed=seed, device=device)
    torch.manual_seed(seed)
    seg = init_segmentor(config, device=device, cfg_options=opts, build_text=True)
    tc = seg.test_cfg

    def predict():
        samples = [SegDataSample(metainfo=dict(ori_shape=raw, img_shape=tuple(i.shape[-2:])))
                   for raw, i in zip(raw_sizes, images)]
        return seg.predict(images, samples)

    with torch.inference_mode():
        for _ in range(warmup):
            predict()
        walls, cpus = [], []
        for _ in range(max(1, repeats)):
            wall, cpu, _ = timed(predict, device)
            walls.append(wall)
            cpus.append(cpu)
    best = min(range(len(walls)), key=walls.__getitem__)
    out = dict(method=card or 'clearclip', type=seg.method.method_name, config=osp.relpath(config, ROOT),
               resize=list(scale), mode=tc['mode'], crop=list(tc['crop_size']), stride=list(tc['stride']),
               pamr=seg.postprocess is not None, images=len(images), time_s=walls[best], times_s=walls,
               cpu_s=cpus[best], images_per_s=len(images) / walls[best])
    return out


def method_speed(methods: Optional[Sequence[str]] = None, protocol: str = 'common', benchmark: str = 'voc21',
                 arch: Optional[str] = None, arch_file: Optional[str] = None, precision: str = 'fp32',
                 device=None, num_images: int = 2, raw_sizes: Sequence[Tuple[int, int]] = VOC_RAW_SIZES,
                 warmup: int = 1, repeats: int = 1, seed: int = 0, threads: Optional[int] = None,
                 json_path: Optional[str] = None, log: Callable[[str], None] = print) -> dict:
    """Images/s of ClearCLIP and each method, and each one's ratio to ClearCLIP.

    Args:
        methods: method cards to measure (default: all of ``METHOD_CARDS``).
        protocol: ``common`` (ClearCLIP's windows for all) or ``own`` (each card's).
        benchmark: whose configs (vocabulary, thresholds, per-benchmark options) are used.
        arch, arch_file: override the configs' ViT-B/16 (e.g. the tiny test tower).
        precision: ``fp32 | fp16 | bf16``.
        device: ``cpu | cuda`` (default: cuda when available).
        num_images: synthetic images (``raw_sizes`` cycled: VOC-sized by default).
        warmup, repeats: untimed and timed passes per method (best kept).
        seed: weights and images seed.
        threads: ``torch.set_num_threads``.
        json_path: also write the figures here.
        log: where lines are printed.

    Returns:
        ``machine``, ``protocol``, ``benchmark``, ``results`` (one dict per
        measurement: method, settings, time, images/s, ``relative`` to ClearCLIP).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol '{protocol}': expected one of {PROTOCOLS}")
    methods = list(DENSE_CARDS) if methods is None else list(methods)
    unknown = [m for m in methods if m not in METHOD_CARDS]
    if unknown:
        raise ValueError(f'unknown method card(s) {unknown} (--methods): expected some of {list(METHOD_CARDS)}')
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    sizes = [raw_sizes[i % len(raw_sizes)] for i in range(num_images)]
    machine = machine_info(device)
    log(f"machine: {machine.get('cpu')} ({machine.get('cpus')} CPUs, {machine['threads']} torch threads)"
        + (f", GPU {machine['gpu']}" if 'gpu' in machine else '') + f", torch {machine['torch']}"
        + (f", load average {machine['loadavg_at_start'][0]:.2f}" if 'loadavg_at_start' in machine else ''))
    log(f'{protocol} protocol, {benchmark} configs, {precision}, {len(sizes)} image(s) of raw size '
        + ', '.join(f'{h}x{w}' for h, w in sizes) + f', warm-up {warmup}, best of {max(1, repeats)}')
    results: List[Dict] = []
    order = [None] + methods + [None]   # ClearCLIP first and last: the drift of the machine shows
    for card in order:
        r = _time_method(card, benchmark, protocol, sizes, arch, arch_file, precision, device, warmup, repeats,
                         seed)
        gc.collect()   # one model in memory at a time
        results.append(r)
        windows = 'whole' if r['mode'] == 'whole' else f"{r['crop'][0]}/{r['stride'][0]}"
        log(f"  {r['method']:<10} {r['images_per_s']:8.3f} images/s  ({r['time_s']:.2f} s; short side "
            f"{min(r['resize'])}, windows {windows}, PAMR {'on' if r['pamr'] else 'off'})")
    base = (results[0]['images_per_s'] + results[-1]['images_per_s']) / 2
    for r in results:
        r['relative'] = r['images_per_s'] / base
    log('relative to ClearCLIP (mean of its two measurements): ' + ', '.join(
        f"{r['method']} {r['relative']:.2f}x" for r in results[1:-1]))
    if 'loadavg_at_start' in machine and hasattr(os, 'getloadavg'):
        log(f'load average at the end: {os.getloadavg()[0]:.2f}')
    report = dict(machine=machine, protocol=protocol, benchmark=benchmark, precision=precision,
                  raw_sizes=[list(s) for s in sizes], results=results)
    if json_path:
        atomic_write_json(report, json_path)
    return report
