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

Every card of ``METHOD_CARDS`` is measured unless some are named (methods
added later are picked up). A method's vision foundation model (ProxyCLIP's
proxy, any method keyword ``*pretrained``) is built at its real size with
random weights. Methods are measured one after another (one model in memory at
a time) with ``torch.utils.benchmark`` (median and IQR per repeat); ClearCLIP
is measured first and again last, both figures are printed, and a warning says
when they differ by more than their noise (the machine's load changed). The
CPU model is printed beside every figure, with the case's peak memory.
"""
import inspect
import gc
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..apis import init_segmentor, load_config
from ..methods.registry import get_method_class
from ..protocol.constants import config_path
from ..protocol.methods import DENSE_CARDS, METHOD_CARDS, common_setting
from ..records import atomic_write_json
from ..repo_root import ROOT
from .inputs import VOC_RAW_SIZES, machine_info, protocol_resize, synthetic_images
from .memory import PeakMemory
from .stages import stage_breakdown
from .timing import benchmark_call, check_repeat

PROTOCOLS = ('common', 'own')


def _options(card: Optional[str], benchmark: str, protocol: str, arch: Optional[str], arch_file: Optional[str],
             precision: str) -> Tuple[str, dict]:
    """(config path, overrides) of one method: random weights, cheap text classifier, the protocol asked for."""
    name = card or 'clearclip'
    opts = {'model.clip.pretrained': None, 'model.clip.precision': precision, 'model.text_cache': False,
            'model.templates': 'a_photo_of'}   # the text classifier is built before timing: one template suffices
    if arch is not None or arch_file is not None:   # arch None with a file: the file's architecture
        opts['model.clip.arch'] = arch
    if arch_file is not None:
        opts['model.clip.arch_file'] = arch_file
    backbone = 'vit-b16'
    if card is not None:
        c = METHOD_CARDS[card]
        # a card without ViT-B/16 configs runs on its authors' backbone (LPOSS: OpenCLIP ViT-B/16), and a
        # card limited to some benchmarks (FLOSS) on its first one when asked for another
        backbone = backbone if backbone in c.backbones else c.backbones[0]
        benchmark = benchmark if c.covers(benchmark) else c.benchmarks[0]
        if protocol == 'common':
            opts.update(common_setting(c, benchmark, backbone=backbone).cfg_options())
            opts.pop('model.last_block')
            opts.pop('model.method')
        opts.update(_random_vfm(config_path(name, backbone, benchmark), opts))
    return osp.join(ROOT, config_path(name, backbone, benchmark)), opts


def _random_vfm(config: str, opts: dict) -> dict:
    """``{'model.method.<key>': False}`` for each ``*pretrained`` keyword of the config's method (no download)."""
    method = load_config(osp.join(ROOT, config), opts).model.get('method')
    if not method:
        return {}
    cls = get_method_class(method['type'])
    keys = [k for k in inspect.signature(cls.__init__).parameters if k.endswith('pretrained')]
    return {f'model.method.{k}': False for k in keys}


def _resize_short(cfg) -> Tuple[int, int]:
    for t in cfg.test_dataloader.dataset.pipeline:
        if t.get('type') == 'ShortSideCentreCrop' and t.get('size') is not None:   # CLIPtrase's own protocol
            return (t['size'], t['size'])
    for t in cfg.test_dataloader.dataset.pipeline:
        if t.get('type') == 'Resize':
            return tuple(t['scale'])
    raise ValueError('config has no Resize step in test_dataloader.dataset.pipeline')


def _time_method(card: Optional[str], benchmark: str, protocol: str, raw_sizes: Sequence[Tuple[int, int]],
                 arch, arch_file, precision: str, device, warmup: int, repeats: int, seed: int,
                 min_run_time: float = 0.0, stages: bool = False) -> dict:
    from mmseg.structures import SegDataSample
    config, opts = _options(card, benchmark, protocol, arch, arch_file, precision)
    cfg = load_config(config, opts)
    scale = _resize_short(cfg)
    if any(t.get('type') == 'ShortSideCentreCrop' and t.get('size') is not None
           for t in cfg.test_dataloader.dataset.pipeline):
        raw_sizes = [scale] * len(raw_sizes)   # only the central square is predicted (and scored)
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
        medians, iqrs = [], []
        with PeakMemory(device) as mem:
            for _ in range(max(1, repeats)):
                m = benchmark_call(predict, min_run_time, device)
                medians.append(m.median)
                iqrs.append(m.iqr)
    best = min(range(len(medians)), key=medians.__getitem__)
    name = card or 'clearclip'
    out = dict(method=name, type=seg.method.method_name, config=osp.relpath(config, ROOT),
               resize=list(scale), mode=tc['mode'], crop=list(tc['crop_size']), stride=list(tc['stride']),
               max_windows=seg.max_windows(device), pamr=seg.postprocess is not None, images=len(images),
               time_s=medians[best], iqr_s=iqrs[best], times_s=medians, iqrs_s=iqrs,
               images_per_s=len(images) / medians[best], memory=mem.as_dict(),
               timing_warning=check_repeat(name, medians, iqrs))
    if stages:
        out['stages_s'] = stage_breakdown(seg, predict, device)
    return out


def method_speed(methods: Optional[Sequence[str]] = None, protocol: str = 'common', benchmark: str = 'voc21',
                 arch: Optional[str] = None, arch_file: Optional[str] = None, precision: str = 'fp32',
                 device=None, num_images: int = 2, raw_sizes: Sequence[Tuple[int, int]] = VOC_RAW_SIZES,
                 warmup: int = 1, repeats: int = 1, min_run_time: float = 0.0, stages: bool = False,
                 seed: int = 0, threads: Optional[int] = None,
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
        warmup, repeats: untimed passes, and ``torch.utils.benchmark`` measurements per method (the best
            median is kept).
        min_run_time: seconds of calls per measurement (at least one block).
        stages: also time one more prediction by stage (``perf.stages``: trunk blocks, VFM forward, the
            method's rest, classify, and the text classifier's cold build).
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
    cpu = f"{machine.get('cpu')}, {machine['threads']} threads" + (f", GPU {machine['gpu']}"
                                                                  if 'gpu' in machine else '')
    results: List[Dict] = []
    order = [None] + methods + [None]   # ClearCLIP first and last: the drift of the machine shows
    for card in order:
        r = _time_method(card, benchmark, protocol, sizes, arch, arch_file, precision, device, warmup, repeats,
                         seed, min_run_time, stages)
        gc.collect()   # one model in memory at a time
        results.append(r)
        windows = 'whole' if r['mode'] == 'whole' else f"{r['crop'][0]}/{r['stride'][0]}"
        log(f"  {r['method']:<10} {r['images_per_s']:8.3f} images/s  (median {r['time_s']:.2f} s, IQR "
            f"{r['iqr_s']:.2f} s; short side {min(r['resize'])}, windows {windows}, max_windows "
            f"{r['max_windows']}, PAMR {'on' if r['pamr'] else 'off'}; peak {r['memory']['peak_mib']:.0f} MiB) "
            f"[{cpu}]")
        if stages:
            st = r['stages_s']
            log('             by stage (one prediction, s): ' + ', '.join(
                f'{k} {v:.3f}' for k, v in st.items() if k != 'windows'))
    first, last = results[0], results[-1]
    drift = check_repeat('clearclip (first and last)', [first['time_s'], last['time_s']],
                         [first['iqr_s'], last['iqr_s']])
    base = (first['images_per_s'] + last['images_per_s']) / 2
    for r in results:
        r['relative'] = r['images_per_s'] / base
    log('relative to ClearCLIP (mean of its two measurements): ' + ', '.join(
        f"{r['method']} {r['relative']:.2f}x" for r in results[1:-1]))
    if 'loadavg_at_start' in machine and hasattr(os, 'getloadavg'):
        log(f'load average at the end: {os.getloadavg()[0]:.2f}')
    report = dict(machine=machine, protocol=protocol, benchmark=benchmark, precision=precision,
                  arch=arch, arch_file=arch_file, raw_sizes=[list(s) for s in sizes], results=results,
                  clearclip_drift_warning=drift)
    if json_path:
        atomic_write_json(report, json_path)
    return report
