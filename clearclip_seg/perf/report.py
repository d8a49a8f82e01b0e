"""The speed report: every figure of one run, printed as it is measured and returned as a dict.

``tools/benchmark_speed.py`` is the command line over ``speed_report``; its
flags are this function's keywords.
"""
import os
import time
from typing import Callable, Optional, Sequence, Tuple

import torch

from ..protocol import constants
from ..records import atomic_write_json
from ..flops import encoder_geometry, last_block_of
from .inputs import (DTYPES, benchmark_slide, bf16_advice, build_segmentor, machine_info, protocol_resize,
                     synthetic_images, voc_sizes)
from .memory import process_peak_rss_mib
from .paths import agreement, measure_encoder_only, measure_path, measure_paths, time_text_classifier
from .profile import op_breakdown
from .timing import measure_matmul_peak


def _fmt_mem(m: dict) -> str:
    start = '' if m.get('delta_mib') is None else \
        f" (+{m['delta_mib']:.0f} MiB over the {m['start_mib']:.0f} MiB at the start)"
    return f"{m['peak_mib']:.0f} MiB{start} [{m['kind']}]"


def _print_path(log, name: str, r: dict, cpu: str = '') -> None:
    shapes = ', '.join(f'{s} x{n}' for s, n in r['window_shapes'])
    best = min(range(len(r['times_s'])), key=r['times_s'].__getitem__)
    log(f"{name} (max_windows={r['max_windows']}): {r['images']} images, {r['windows']} windows ({shapes})")
    log(f"  time {r['time_s']:.3f} s (median, IQR {r['iqrs_s'][best]:.3f} s; best of {len(r['times_s'])}; "
        f"process CPU {r['cpu_s']:.2f} s) -> {r['images_per_s']:.3f} images/s, {r['windows_per_s']:.3f} "
        f"windows/s [{cpu}]")
    log(f"  encoder {r['encoder_gflop']:.1f} GFLOP -> {r['achieved_gflops']:.1f} GFLOP/s achieved")
    log(f"  peak memory {_fmt_mem(r['memory'])}")


def _pct_of_peak(log, r: dict, peak: dict, what: str = 'the matmul peak') -> None:
    r['pct_of_peak'] = 100 * r['achieved_gflops'] / peak['gflops']
    log(f"  = {r['pct_of_peak']:.1f} % of {what}")


def speed_report(arch: Optional[str] = None, arch_file: Optional[str] = None, precision: str = 'fp32',
                 compare_precision: bool = False, device=None, vocab: str = 'voc21',
                 crop: Optional[int] = None, stride: Optional[int] = None, max_windows='auto',
                 min_run_time: float = 0.0,
                 baseline: bool = False, image_size: Optional[Sequence[Tuple[int, int]]] = None,
                 protocol_resize_sizes: bool = False, num_images: int = 3, warmup: int = 1, repeats: int = 1,
                 skip_images: bool = False, skip_encoder_only: bool = False, skip_text: bool = False,
                 profile: bool = False,
                 text_vocab: str = 'coco_stuff164k', text_templates: Optional[str] = None,
                 matmul_size: Optional[int] = None, threads: Optional[int] = None, seed: int = 0,
                 json_path: Optional[str] = None, log: Callable[[str], None] = print) -> dict:
    """Measure speed, FLOP efficiency and memory of a random-weight segmentor on synthetic images.

    Args:
        arch, arch_file: open_clip architecture (default ViT-B-16, or the file's).
        precision: ``fp32 | fp16 | bf16``.
        compare_precision: also run fp32 and a low precision (bf16 on CPU / fp16 on GPU) on the same images.
        device: ``cpu | cuda``; None picks the GPU when there is one.
        vocab: benchmark key / vocabulary of the image runs: sets crop, stride and prob_thd.
        crop, stride: override the benchmark's.
        max_windows: windows per encoder batch of the batched path (``'auto'``: the segmentor's
            default for the device and precision, so the default path is the one timed).
        min_run_time: seconds of calls per ``torch.utils.benchmark`` measurement (at least one block).
        baseline: also time the plain path (``max_windows=1``).
        image_size: segmentor input sizes (H, W), cycled over ``num_images``; default VOC after the resize.
        protocol_resize_sizes: treat ``image_size`` as raw image sizes and resize them as the protocol does.
        num_images, warmup, repeats: images, untimed passes, timed passes (the best is kept).
        skip_images, skip_encoder_only, skip_text: leave out those figures.
        profile: also break one batched pass down by kind of work (``perf.profile``).
        text_vocab, text_templates: what the text-classifier timing embeds (templates None:
            the protocol's, ``protocol.constants.TEMPLATES``).
        matmul_size: n of the n x n matmul peak (default 2048 on CPU / 8192 on GPU).
        threads: ``torch.set_num_threads``.
        seed: weights and images.
        json_path: also write every figure there.
        log: where the lines go.

    Returns:
        Every figure, as written to ``json_path``.
    """
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    arch = arch or (None if arch_file else 'ViT-B-16')
    crop0, stride0, prob_thd = benchmark_slide(vocab)
    crop = crop or crop0
    stride = stride or stride0
    sizes = list(image_size or voc_sizes())
    if protocol_resize_sizes:
        sizes = [protocol_resize(h, w) for h, w in sizes]
    sizes = [sizes[i % len(sizes)] for i in range(num_images)]
    low = precision if precision != 'fp32' else ('fp16' if device.type == 'cuda' else 'bf16')

    def build(prec):
        return build_segmentor(arch, arch_file, prec, vocab, (crop, crop), (stride, stride), max_windows,
                               prob_thd, device, seed=seed)

    res = dict(machine=machine_info(device),
               config=dict(arch=arch, arch_file=arch_file, precision=precision, vocab=vocab,
                           crop=crop, stride=stride, prob_thd=prob_thd, max_windows=max_windows,
                           image_sizes=[f'{h}x{w}' for h, w in sizes], warmup=warmup,
                           repeats=repeats, seed=seed))
    m = res['machine']
    log(f"machine: {m.get('cpu')} ({m.get('cpus')} CPUs, torch threads {m['threads']})"
        + (f", GPU {m['gpu']}" if 'gpu' in m else '') + f"; torch {m['torch']}, device {device}"
        + (f"; load average {m['loadavg_at_start'][0]:.2f}" if 'loadavg_at_start' in m else ''))
    if device.type == 'cpu':
        res['bf16_advice'] = bf16_advice(m.get('bf16_units'))
        log(res['bf16_advice'])
    log(f"model: {arch or arch_file} random weights, {precision}; vocab {vocab} "
        f"(crop {crop}, stride {stride}); images {', '.join(res['config']['image_sizes'])}")

    t0 = time.perf_counter()
    seg = build(precision)
    res['build_s'] = time.perf_counter() - t0
    res['config']['arch'] = seg.arch
    max_windows = seg.max_windows(device)   # 'auto' resolved as the segmentor resolves it
    res['config']['max_windows_resolved'] = max_windows
    cpu = f"{m.get('cpu')}, {m['threads']} threads" + (f", GPU {m['gpu']}" if 'gpu' in m else '')
    geo = encoder_geometry(seg.encoder, last_block_of(seg.method))
    res['encoder_geometry'] = dict(geo, patch=list(geo['patch']))

    peak = measure_matmul_peak(device, DTYPES[precision], n=matmul_size)
    res['matmul_peak'] = peak
    lay = ', '.join(f"{k} {v:.1f}" for k, v in peak['gflops_by_layout'].items() if v is not None)
    log(f"matmul peak ({peak['n']}x{peak['n']} {peak['dtype']}): {peak['gflops']:.1f} GFLOP/s "
        f"(a@b / a@b.T: {lay})")

    if not skip_images:
        images = synthetic_images(sizes, seed=seed, device=device)
        measured = measure_paths(seg, images, [max_windows] + ([1] if baseline else []), warmup, repeats,
                                 min_run_time)
        batched = measured[0]
        _print_path(log, 'batched path', batched, cpu)
        _pct_of_peak(log, batched, peak)
        base_logits = batched.pop('logits')
        res['batched'] = batched
        if profile:
            res['profile'] = op_breakdown(seg, images, max_windows, log=log)
        if baseline:
            plain = measured[1]
            _print_path(log, 'plain path', plain, cpu)
            _pct_of_peak(log, plain, peak)
            agree = agreement(seg, base_logits, plain.pop('logits'))
            res['plain'] = plain
            res['baseline_ratio'] = batched['images_per_s'] / plain['images_per_s']
            res['baseline_cpu_ratio'] = plain['cpu_s'] / batched['cpu_s']
            res['baseline_agreement'] = agree
            log(f"speed ratio batched/plain: {res['baseline_ratio']:.3f}x "
                f"(process CPU time ratio {res['baseline_cpu_ratio']:.3f}x)")
            log(f"  argmax agreement {100 * agree['argmax_agreement']:.4f} % (query logits), "
                f"{100 * agree['label_agreement']:.4f} % (labels); max |logit diff| {agree['max_abs_diff']:.3g}")
        if not skip_encoder_only:
            b = min(max_windows, batched['windows'])
            enc = measure_encoder_only(seg, (crop, crop), [1, b] if b > 1 else [1], warmup, repeats, device)
            for e in enc:
                e['pct_of_peak'] = 100 * e['achieved_gflops'] / peak['gflops']
                log(f"encoder only, batch {e['batch']} x {e['crop']}: {e['windows_per_s']:.3f} windows/s, "
                    f"{e['achieved_gflops']:.1f} GFLOP/s = {e['pct_of_peak']:.1f} % of peak "
                    f"(CPU {e['cpu_s'] / e['batch']:.2f} s/window)")
            res['encoder_only'] = enc

    if not skip_text:
        t = time_text_classifier(seg, text_vocab, text_templates or constants.TEMPLATES)
        res['text_classifier'] = t
        log(f"text classifier {t['vocabulary']} x {t['templates']} ({t['queries']} queries x "
            f"{t['num_templates']} templates = {t['prompts']} prompts): cold {t['cold_s']:.2f} s, "
            f"cached {t['cached_s']:.3f} s (of which the cache key {t['cached_key_s']:.3f} s"
            f"{': random weights are keyed by a digest of all weights' if not seg.pretrained else ''})")

    if compare_precision and not skip_images:
        other_prec = low if precision == 'fp32' else 'fp32'
        other = build(other_prec)
        o = measure_path(other, images, max_windows, warmup, repeats, min_run_time)
        _print_path(log, f'batched path, {other_prec}', o, cpu)
        o_logits = o.pop('logits')
        del other
        other_peak = measure_matmul_peak(device, DTYPES[other_prec], n=matmul_size)
        _pct_of_peak(log, o, other_peak, f"the {other_prec} matmul peak ({other_peak['gflops']:.1f} GFLOP/s)")
        runs = {precision: (res['batched'], base_logits, peak), other_prec: (o, o_logits, other_peak)}
        lowp = other_prec if precision == 'fp32' else precision
        (fp32_r, fp32_l, fp32_pk), (low_r, low_l, low_pk) = runs['fp32'], runs[lowp]
        agree = agreement(seg, fp32_l, low_l)
        cmp = dict(low=lowp, fp32_time_s=fp32_r['time_s'], low_time_s=low_r['time_s'],
                   speedup=fp32_r['time_s'] / low_r['time_s'], agreement=agree,
                   fp32_matmul_gflops=fp32_pk['gflops'], low_matmul_gflops=low_pk['gflops'],
                   matmul_speedup=low_pk['gflops'] / fp32_pk['gflops'],
                   fp32_peak_mib=fp32_r['memory']['peak_mib'], low_peak_mib=low_r['memory']['peak_mib'])
        res['precision_compare'] = dict(cmp, other_run=o)
        log(f"precision {lowp} vs fp32: speed-up {cmp['speedup']:.3f}x (matmul peak {low_pk['gflops']:.1f} "
            f"vs {fp32_pk['gflops']:.1f} GFLOP/s = {cmp['matmul_speedup']:.2f}x)")
        log(f"  argmax agreement with fp32 {100 * agree['argmax_agreement']:.3f} % (query logits), "
            f"{100 * agree['label_agreement']:.3f} % (labels); max |logit diff| {agree['max_abs_diff']:.3g}")
        if cmp['speedup'] < 1:
            log(f'  {lowp} is slower than fp32 on this {device.type.upper()}: keep model.clip.precision=fp32')

    if hasattr(os, 'getloadavg'):
        res['loadavg_at_end'] = list(os.getloadavg())
        log(f"load average at the end {res['loadavg_at_end'][0]:.2f} (other processes share the CPUs when > 0)")
    res['process_peak_rss_mib'] = process_peak_rss_mib()
    log(f"process peak RSS (lifetime): {res['process_peak_rss_mib']:.0f} MiB")
    if device.type == 'cuda':
        res['cuda_max_reserved_mib'] = torch.cuda.max_memory_reserved() / 2**20
    if json_path:
        atomic_write_json(res, json_path)
        log(f'figures written to {json_path}')
    return res
