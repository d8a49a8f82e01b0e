"""Timing the segmentor's scoring paths, the encoder alone and the text classifier.

Settings compared in one run are interleaved (each repeat times every
setting once in turn), so load from other processes hits them alike; the
best wall time per setting is kept, with the process CPU time of that call.
"""
import os
import shutil
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

import torch

from ..flops import last_block_of, windows_flops
from ..models.slide import padded_window_shapes
from ..models.text_classifier import build_text_classifier
from ..models.towers import load_tokenizer
from ..vocab import load_templates, load_vocabulary
from .inputs import load_average
from .memory import PeakMemory
from .timing import benchmark_call, check_repeat, synchronize, timed


def measure_paths(seg, images: Sequence[torch.Tensor], max_windows_list: Sequence[int], warmup: int = 1,
                  repeats: int = 1, min_run_time: float = 0.0) -> List[dict]:
    """Time ``seg.query_logits(images)`` at several ``max_windows``, interleaved.

    One call scores the whole list (windows of all images are grouped by
    shape). Each setting gets ``warmup`` untimed calls; then ``repeats``
    rounds measure every setting once in turn with ``torch.utils.benchmark``
    (blocks of calls for at least ``min_run_time`` s: a median and its IQR per
    round); the best round's median is ``time_s``, and rounds of one setting
    whose medians differ by more than their IQRs give a warning
    (``timing_warning``). ``cpu_s`` is the process CPU time per call (less
    sensitive to a busy machine; it counts all threads, spinning included).
    ``seg.test_cfg['max_windows']`` is restored afterwards.

    Args:
        seg: a ``ClearCLIPSegmentor`` in slide mode.
        images: normalised images (3, H, W), on the segmentor's device.
        max_windows_list: the settings to compare.
        warmup, repeats: untimed and timed calls per setting.

    Returns:
        One dict per setting, with the query logits of its last call under ``logits``.
    """
    device = images[0].device
    old = seg.test_cfg.get('max_windows', 16)
    crop, stride = seg.test_cfg['crop_size'], seg.test_cfg['stride']
    shapes = padded_window_shapes([tuple(i.shape[-2:]) for i in images], crop, stride, seg.encoder.patch_size)
    flops = windows_flops(seg.encoder, shapes, last_block_of(seg.method))
    runs = [dict(max_windows=int(m), times_s=[], iqrs_s=[], cpu_times_s=[], mem=[], logits=None)
            for m in max_windows_list]
    load0 = load_average()
    try:
        with torch.inference_mode():
            seg.build_text_classifier()
            for r in runs:
                seg.test_cfg['max_windows'] = r['max_windows']
                for _ in range(warmup):
                    seg.query_logits(images)
            for _ in range(max(1, repeats)):
                for r in runs:
                    seg.test_cfg['max_windows'] = r['max_windows']
                    r['logits'] = None
                    calls = []

                    def call():
                        calls.append(1)
                        r['logits'] = seg.query_logits(images)

                    c0 = time.process_time()
                    with PeakMemory(device) as mem:
                        m = benchmark_call(call, min_run_time, device)
                    r['times_s'].append(m.median)
                    r['iqrs_s'].append(m.iqr)
                    r['cpu_times_s'].append((time.process_time() - c0) / len(calls))
                    r['mem'].append(mem.as_dict())
    finally:
        seg.test_cfg['max_windows'] = old
    out = []
    for r in runs:
        best = min(range(len(r['times_s'])), key=r['times_s'].__getitem__)
        t = r['times_s'][best]
        memory = max(r['mem'], key=lambda m: m['peak_mib'])
        out.append(dict(
            max_windows=r['max_windows'], images=len(images), windows=len(shapes),
            window_shapes=sorted({f'{h}x{w}': shapes.count((h, w)) for h, w in shapes}.items()),
            time_s=t, times_s=r['times_s'], iqrs_s=r['iqrs_s'], cpu_s=r['cpu_times_s'][best],
            cpu_times_s=r['cpu_times_s'],
            timing_warning=check_repeat(f"max_windows={r['max_windows']}", r['times_s'], r['iqrs_s']),
            images_per_s=len(images) / t, windows_per_s=len(shapes) / t,
            encoder_gflop=flops / 1e9, achieved_gflops=flops / t / 1e9, memory=memory,
            loadavg_1min_at_start=load0, logits=r['logits']))
    return out


def measure_path(seg, images: Sequence[torch.Tensor], max_windows: int, warmup: int = 1,
                 repeats: int = 1, min_run_time: float = 0.0) -> dict:
    """``measure_paths`` for one ``max_windows``."""
    return measure_paths(seg, images, [max_windows], warmup, repeats, min_run_time)[0]


def measure_encoder_only(seg, crop_hw: Tuple[int, int], batches: Sequence[int], warmup: int = 1,
                         repeats: int = 1, device='cpu') -> List[dict]:
    """Time the encoder alone on ``b`` random crops of ``crop_hw`` (padded to the patch size) per ``b`` in ``batches``.

    Interleaved like ``measure_paths``; the best wall time per batch size is kept.
    """
    (h, w), = padded_window_shapes([tuple(crop_hw)], crop_hw, crop_hw, seg.encoder.patch_size)
    switches = last_block_of(seg.method)  # the encoder holds no switches: the method's (LastBlock's) own
    xs = {b: torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device) for b in batches}
    times = {b: [] for b in batches}
    cpus = {b: [] for b in batches}
    with torch.inference_mode():
        for b in batches:
            for _ in range(warmup):
                seg.encoder(xs[b], **switches)
        for _ in range(max(1, repeats)):
            for b in batches:
                wall, cpu, _ = timed(lambda: seg.encoder(xs[b], **switches), device)
                times[b].append(wall)
                cpus[b].append(cpu)
    out = []
    for b in batches:
        i = min(range(len(times[b])), key=times[b].__getitem__)
        t = times[b][i]
        flops = windows_flops(seg.encoder, [(h, w)] * b, switches)
        out.append(dict(batch=b, crop=f'{h}x{w}', time_s=t, times_s=times[b], cpu_s=cpus[b][i],
                        windows_per_s=b / t, encoder_gflop=flops / 1e9, achieved_gflops=flops / t / 1e9))
    return out


def agreement(seg, logits_a: Sequence[torch.Tensor], logits_b: Sequence[torch.Tensor]) -> dict:
    """How closely two sets of query logits (Q, H, W) agree.

    ``argmax_agreement``: fraction of pixels with the same query argmax;
    ``label_agreement``: fraction with the same label after ``seg.classify``
    (softmax x logit scale, synonym max, ``prob_thd``); ``max_abs_diff`` of the logits.
    """
    same_q = same_l = total = 0
    max_diff = 0.0
    for a, b in zip(logits_a, logits_b):
        a, b = a.float(), b.float()
        max_diff = max(max_diff, (a - b).abs().max().item())
        same_q += (a.argmax(0) == b.argmax(0)).sum().item()
        same_l += (seg.classify(a)[1] == seg.classify(b)[1]).sum().item()
        total += a[0].numel()
    return dict(argmax_agreement=same_q / total, label_agreement=same_l / total, max_abs_diff=max_diff,
                pixels=total)


def time_text_classifier(seg, vocabulary, templates, cache_dir: Optional[str] = None) -> dict:
    """Build time of a text classifier: cold (fresh cache folder) then cached (same folder).

    Uses ``seg``'s text tower and cache key (architecture, weights digest for
    random weights, precision), so the cached build includes the key's cost.

    Args:
        seg: a ``ClearCLIPSegmentor``.
        vocabulary, templates: what to embed (names, paths or lists).
        cache_dir: the cache folder; None uses a temporary one, removed afterwards.
    """
    vocab = load_vocabulary(vocabulary)
    temps = load_templates(templates)
    device = seg.query_to_class.device
    clip_model = seg._text_model[0].to(device)
    tokenizer = load_tokenizer(seg.arch, getattr(seg, 'tokenizer_path', None))  # the segmentor's own
    own = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix='clearclip-textcache-')
    out = dict(vocabulary=vocabulary, templates=templates, queries=len(vocab.queries),
               num_templates=len(temps), prompts=len(vocab.queries) * len(temps))
    seg_cache = seg.text_cache
    try:
        seg.text_cache = cache_dir  # the key ignores the folder; keep seg's other settings
        with torch.inference_mode():
            for phase in ('cold', 'cached'):
                synchronize(device)
                t0 = time.perf_counter()
                key = seg.text_cache_key()
                out[f'{phase}_key_s'] = time.perf_counter() - t0
                emb = build_text_classifier(clip_model, tokenizer, vocab.queries, temps, device,
                                            key_parts=key, cache_dir=cache_dir)
                synchronize(device)
                out[f'{phase}_s'] = time.perf_counter() - t0
        out['embeddings'] = list(emb.shape)
        out['cache_files'] = len(os.listdir(cache_dir))
    finally:
        seg.text_cache = seg_cache
        if own:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return out
