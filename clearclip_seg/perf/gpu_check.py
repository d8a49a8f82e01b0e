"""A GPU check in one command (``tools/benchmark_speed.py --gpu-check``), a few minutes on one GPU.

For ViT-B/16 and ViT-L/14 (random weights, synthetic VOC-sized images, the
VOC21 protocol: 448 windows, stride 224) in fp32, fp16 and bf16 it measures
images/s and windows/s of the whole scoring path, the encoder alone, the peak
GPU memory and the agreement of the labels with fp32's on the same images.
From those speeds it estimates the wall time of the whole paper (the suites
``main``, ``baselines``, ``ablation`` and ``backbones`` at the protocol's image
counts) with and without shared passes (``clearclip_seg.sweep.cost``).

``tiny=True`` runs the same code on a tiny random ViT (written to a temporary
JSON architecture), so it finishes in seconds on a CPU and CI can test it.
"""
import json
import os
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

import torch

from ..records import atomic_write_json
from ..sweep.cost import paper_cost
from .inputs import VOC_SIZES, benchmark_slide, build_segmentor, machine_info, synthetic_images
from .paths import agreement, measure_encoder_only, measure_path

GPU_ARCHS = ('ViT-B-16', 'ViT-L-14')
PRECISIONS = ('fp32', 'fp16', 'bf16')
# A tiny ViT for the CPU run: 3 blocks of width 64, patch 16 (the estimate still uses real ViT FLOPs).
TINY_NAME = 'gpu-check-tiny-vit'
TINY_ARCH = dict(embed_dim=32, vision_cfg=dict(image_size=64, layers=3, width=64, head_width=16, patch_size=16),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))


def _write_tiny_arch(folder: str) -> str:
    path = os.path.join(folder, f'{TINY_NAME}.json')
    with open(path, 'w') as f:
        json.dump(TINY_ARCH, f)
    return path


def precision_supported(precision: str, device) -> Optional[str]:
    """None when ``precision`` runs on ``device``, else why not."""
    device = torch.device(device)
    if device.type == 'cuda' and precision == 'bf16' and not torch.cuda.is_bf16_supported():
        return 'this GPU has no bf16 support'
    return None


def _fmt_h(seconds: float) -> str:
    return f'{seconds / 3600:.1f} h' if seconds >= 3600 else f'{seconds / 60:.1f} min'


def gpu_check(device=None, tiny: bool = False, archs: Optional[Sequence[str]] = None,
              precisions: Sequence[str] = PRECISIONS, num_images: int = 8, max_windows: Optional[int] = None,
              warmup: int = 1, seed: int = 0, json_path: Optional[str] = None,
              log: Callable[[str], None] = print) -> dict:
    """Speed, memory and fp16/bf16 agreement per backbone and precision, and the whole-paper estimate.

    Args:
        device: ``cuda`` (default when there is one) or ``cpu``.
        tiny: a tiny random ViT instead of ``archs`` (for CPUs and CI).
        archs: open_clip architectures (default ViT-B-16 and ViT-L-14).
        precisions: measured in this order; fp32 first gives the agreement reference.
        num_images: synthetic images, VOC sizes after the resize, cycled.
        max_windows: windows per encoder batch (default 16 on a GPU, 1 on a CPU).
        warmup: untimed passes first.
        seed: weights and images.
        json_path: also write the figures there.
        log: where the lines go.

    Returns:
        ``machine``, ``results[arch][precision]`` and ``estimate[precision]``.
    """
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    max_windows = max_windows or (16 if device.type == 'cuda' else 1)
    crop, stride, prob_thd = benchmark_slide('voc21')
    sizes = [VOC_SIZES[i % len(VOC_SIZES)] for i in range(num_images)]
    t_start = time.perf_counter()
    out = dict(machine=machine_info(device), settings=dict(tiny=tiny, num_images=num_images, max_windows=max_windows,
                                                           crop=crop, stride=stride, sizes=sizes),
               results={}, estimate={})
    log(f"gpu check on {out['machine'].get('gpu', out['machine'].get('cpu'))} ({device}), "
        f'{num_images} images {sorted(set(sizes))}, crop {crop} stride {stride}, max_windows {max_windows}')
    tmp = tempfile.mkdtemp(prefix='clearclip-gpucheck-') if tiny else None
    try:
        targets = [(TINY_NAME, _write_tiny_arch(tmp))] if tiny else [(a, None) for a in (archs or GPU_ARCHS)]
        for arch, arch_file in targets:
            out['results'][arch] = _measure_arch(arch, arch_file, precisions, device, sizes, crop, stride,
                                                 prob_thd, max_windows, warmup, seed, log)
    finally:
        if tmp:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    for precision in precisions:
        speeds = {arch: dict(s_per_gflop=r[precision]['s_per_gflop'], overhead_s=r[precision]['overhead_s'])
                  for arch, r in out['results'].items() if 'error' not in r.get(precision, {'error': 1})}
        if not speeds:
            continue
        est = paper_cost(speeds)
        out['estimate'][precision] = est
        log(f"whole paper at {precision}: {est['runs']} runs, {est['windows']:,} windows: "
            f"{_fmt_h(est['separate_s'])} one run at a time, {_fmt_h(est['shared_s'])} with shared passes "
            f"({est['ratio']:.1f}x)" + (' [tiny-model speed applied to the real backbones\' FLOPs]' if tiny else ''))
    out['wall_s'] = time.perf_counter() - t_start
    log(f"gpu check done in {out['wall_s']:.0f}s")
    if json_path:
        atomic_write_json(out, json_path)
    return out


def _measure_arch(arch, arch_file, precisions, device, sizes, crop, stride, prob_thd, max_windows, warmup,
                  seed, log) -> Dict[str, dict]:
    results: Dict[str, dict] = {}
    ref = None  # fp32 logits: the agreement reference
    images = synthetic_images(sizes, seed=seed, device=device)
    for precision in precisions:
        why = precision_supported(precision, device)
        if why:
            results[precision] = dict(error=why)
            log(f'{arch} {precision}: skipped ({why})')
            continue
        try:
            seg = build_segmentor(None if arch_file else arch, arch_file, precision, 'voc21', (crop, crop),
                                  (stride, stride), max_windows, prob_thd, device, seed=seed)
            path = measure_path(seg, images, max_windows, warmup=warmup, repeats=1)
            batch = min(max_windows, path['windows'])
            enc = measure_encoder_only(seg, (crop, crop), [batch], warmup=warmup, repeats=1, device=device)[0]
        except (RuntimeError, ValueError) as e:  # a dtype this device cannot run: say so, keep going
            results[precision] = dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}')
            log(f'{arch} {precision}: failed ({results[precision]["error"]})')
            continue
        logits = path.pop('logits')
        enc_s_per_window = enc['time_s'] / enc['batch']
        r = dict(images_per_s=path['images_per_s'], windows_per_s=path['windows_per_s'],
                 windows=path['windows'], achieved_gflops=path['achieved_gflops'],
                 encoder_windows_per_s=enc['windows_per_s'], encoder_gflops=enc['achieved_gflops'],
                 s_per_gflop=1.0 / enc['achieved_gflops'],
                 overhead_s=max(0.0, 1.0 / path['windows_per_s'] - enc_s_per_window),
                 peak_memory_mib=path['memory']['peak_mib'], memory_kind=path['memory']['kind'])
        if precision == 'fp32' or ref is None:
            ref = [t.float() for t in logits]
            r['label_agreement_vs_fp32'] = 1.0 if precision == 'fp32' else None
        else:
            agree = agreement(seg, ref, logits)
            r['label_agreement_vs_fp32'] = agree['label_agreement']
            r['argmax_agreement_vs_fp32'] = agree['argmax_agreement']
            r['max_abs_diff_vs_fp32'] = agree['max_abs_diff']
        results[precision] = r
        agree = r.get('label_agreement_vs_fp32')
        log(f"{arch} {precision}: {r['images_per_s']:.2f} images/s, {r['windows_per_s']:.2f} windows/s "
            f"(encoder {r['encoder_windows_per_s']:.2f} windows/s, {r['encoder_gflops']:.0f} GFLOP/s), "
            f"peak memory {r['peak_memory_mib']:.0f} MiB"
            + ('' if agree is None or precision == 'fp32' else f', labels {100 * agree:.2f} % = fp32'))
        del seg, logits
        if torch.device(device).type == 'cuda':
            torch.cuda.empty_cache()
    return results
