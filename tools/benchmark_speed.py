#!/usr/bin/env python
"""Speed, FLOP-efficiency and memory figures for ClearCLIPSegmentor (no pass/fail).

Builds a ``ClearCLIPSegmentor`` with random weights (``pretrained=None``) under
a benchmark's protocol (default voc21: crop 448 / stride 224, images whose
short side was resized to 448) and measures, on synthetic normalised images:

* images/s and windows/s of the batched path (``--max-windows``, default 16)
  and, with ``--baseline``, of the plain one-window-at-a-time path
  (``max_windows=1``) on the same inputs, with their speed ratio, the argmax
  agreement and the max abs difference of the query logits;
* the encoder's achieved GFLOP/s (ViT FLOPs counted analytically) against a
  ``torch.matmul`` peak measured on the same device and dtype in the same run;
* peak memory (CPU: resident-set high-water mark, reset per phase where the
  kernel allows; GPU: ``torch.cuda.max_memory_allocated``);
* the text-classifier build time, cold (fresh cache folder) and cached;
* with ``--compare-precision``: fp32 against a low precision on the same images.

Examples::

    python tools/benchmark_speed.py --baseline                       # ViT-B-16, voc21, fp32 on CPU
    python tools/benchmark_speed.py --compare-precision --precision bf16 --skip-text
    python tools/benchmark_speed.py --text-templates a_photo_of --skip-images
    python tools/benchmark_speed.py --arch ViT-L-14 --vocab cityscapes --image-size 1024x2048 \\
        --protocol-resize --num-images 1 --baseline --skip-text       # Cityscapes protocol: 448x896
    python tools/benchmark_speed.py --arch ViT-L-14 --image-size 1024x2048 --crop 224 --stride 224 \\
        --vocab cityscapes --num-images 1 --warmup 0 --skip-text      # full frame: memory peak
    python tools/benchmark_speed.py --arch-file tests/assets/clearclip-tiny-vit.json --num-images 1 --baseline

Everything printed is also written to ``--json OUT``. The measurement pieces
(``vit_encoder_flops``, ``windows_flops``, ``measure_matmul_peak``,
``measure_paths``, ``measure_encoder_only``, ``agreement``,
``time_text_classifier``, ``PeakMemory``, ...) are importable.

On a shared machine, compare figures within one run: the tool interleaves the
settings it compares, keeps the best of ``--repeats`` and prints the process
CPU time and the load average alongside the wall time.
"""
import argparse
import json
import math
import os
import os.path as osp
import platform
import resource
import shutil
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# Typical VOC images (500x375 / 375x500 / 500x500) after the protocol's resize
# (short side 448): what the segmentor actually sees.
VOC_SIZES = ((448, 597), (597, 448), (448, 448))


# -- geometry -------------------------------------------------------------------
def parse_size(text: str) -> Tuple[int, int]:
    """``'448x597'`` -> (448, 597) (height x width)."""
    try:
        h, w = text.lower().split('x')
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}': expected HxW, e.g. 448x597") from None


def protocol_resize(h: int, w: int, scale=(2048, 448)) -> Tuple[int, int]:
    """MMSeg ``Resize(scale, keep_ratio=True)``: short side to 448 unless the long side passes 2048."""
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def window_shapes(sizes: Sequence[Tuple[int, int]], crop, stride, patch) -> List[Tuple[int, int]]:
    """Padded (patch-multiple) shape of every sliding window over images of ``sizes``."""
    from clearclip_seg.models.slide import patch_padding, window_boxes
    shapes = []
    for h, w in sizes:
        for y1, y2, x1, x2 in window_boxes(h, w, crop, stride):
            left, right, top, bottom = patch_padding(y2 - y1, x2 - x1, patch)
            shapes.append((y2 - y1 + top + bottom, x2 - x1 + left + right))
    return shapes


def synthetic_images(sizes: Sequence[Tuple[int, int]], seed: int = 0,
                     device='cpu') -> List[torch.Tensor]:
    """Smooth random RGB images in [0, 255], CLIP-normalised: (3, H, W) float32 each."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    out = []
    for h, w in sizes:
        low = torch.rand(1, 3, max(2, h // 32), max(2, w // 32), generator=g)
        img = F.interpolate(low, size=(h, w), mode='bilinear', align_corners=False)[0]
        img = (img * 0.8 + 0.2 * torch.rand(3, h, w, generator=g)) * 255.0
        out.append(((img - mean) / std).to(device))
    return out


# -- FLOPs ----------------------------------------------------------------------
def vit_encoder_flops(grid: Tuple[int, int], width: int, layers: int, mlp_width: int,
                      out_dim: int, patch: Tuple[int, int], in_chans: int = 3,
                      last_attn: str = 'qq', last_ffn: bool = False) -> int:
    """Matmul FLOPs (2 x multiply-adds) of one DenseCLIPEncoder forward on one crop.

    Counted: the patch embedding (a conv = a matmul over 3*p*p inputs per patch),
    per full block the q/k/v projection, the two attention matmuls (scores and
    weights @ v, summed over heads = N*N*width each), the output projection and
    the two MLP layers; the last block as configured (only the projections its
    attention mode reads, two matmuls per (a, b) pair of the mode, the output
    projection, the FFN only if on); and ``proj`` on every token. Not counted:
    layer norms, softmax, GELU, additions (a few % at most).
    """
    from clearclip_seg.models.attention import ATTENTION_MODES, needed_projections
    gh, gw = grid
    g = gh * gw
    n = g + 1  # class token
    ph, pw = patch
    flops = 2 * g * (in_chans * ph * pw) * width             # patch embedding
    attn_pair = 2 * n * n * width * 2                         # scores + weights @ v
    full = (2 * n * width * 3 * width + attn_pair + 2 * n * width * width
            + 2 * 2 * n * width * mlp_width)
    flops += (layers - 1) * full
    flops += len(needed_projections(last_attn)) * 2 * n * width * width
    flops += len(ATTENTION_MODES[last_attn]) * attn_pair
    flops += 2 * n * width * width                            # out_proj
    if last_ffn:
        flops += 2 * 2 * n * width * mlp_width
    flops += 2 * n * width * out_dim                          # ln_post(x) @ proj, all tokens
    return int(flops)


def encoder_geometry(encoder) -> dict:
    """The numbers ``vit_encoder_flops`` needs, read from a DenseCLIPEncoder."""
    v = encoder.visual
    blocks = v.transformer.resblocks
    mlp = blocks[0].mlp
    mlp_width = mlp.c_fc.out_features if hasattr(mlp, 'c_fc') else mlp[0].out_features
    return dict(width=v.conv1.out_channels, layers=len(blocks), mlp_width=mlp_width,
                out_dim=v.proj.shape[1], patch=tuple(encoder.patch_size), in_chans=v.conv1.in_channels,
                last_attn=encoder.attn_mode, last_ffn=encoder.ffn)


def windows_flops(encoder, shapes: Sequence[Tuple[int, int]]) -> int:
    """Encoder FLOPs for padded windows of the given shapes."""
    geo = encoder_geometry(encoder)
    ph, pw = geo['patch']
    return sum(vit_encoder_flops((h // ph, w // pw), **geo) for h, w in shapes)


# -- timing / memory helpers ----------------------------------------------------
def synchronize(device) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def _proc_status_kb(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory over a ``with`` block, in MiB.

    GPU: ``torch.cuda.max_memory_allocated`` after a reset. CPU: VmHWM from
    /proc/self/status, reset at entry through /proc/self/clear_refs where the
    kernel allows it (``resettable``); otherwise the process-lifetime
    high-water mark (``ru_maxrss``), which only ever grows.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_mib = None
        self.start_mib = None
        self.kind = None
        self.resettable = False

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mib = torch.cuda.memory_allocated() / 2**20
            self.kind = 'cuda max_memory_allocated'
        else:
            try:
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')  # reset the peak RSS to the current RSS
                self.resettable = True
            except OSError:
                self.resettable = False
            rss = _proc_status_kb('VmRSS')
            self.start_mib = rss / 1024 if rss is not None else None
            self.kind = 'cpu VmHWM' + (' (reset per phase)' if self.resettable else ' (process lifetime)')
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            hwm = _proc_status_kb('VmHWM')
            if hwm is None:
                hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            self.peak_mib = hwm / 1024
        return False

    def as_dict(self) -> dict:
        start = None if self.start_mib is None else round(self.start_mib, 1)
        delta = None if start is None or not (self.resettable or self.device.type == 'cuda') \
            else round(self.peak_mib - self.start_mib, 1)
        return dict(peak_mib=round(self.peak_mib, 1), start_mib=start, delta_mib=delta, kind=self.kind)


def measure_matmul_peak(device='cpu', dtype=torch.float32, n: Optional[int] = None,
                        min_time: float = 1.0, max_single_s: float = 1.0) -> dict:
    """Best achieved GFLOP/s of ``torch.matmul`` on n x n matrices (2 n^3 FLOPs each).

    Two layouts are timed, ``a @ b`` and ``a @ b.T`` (the ``nn.Linear`` weight
    layout; on a CPU without bf16 instructions bf16 ``a @ b`` is >10x slower
    than ``a @ b.T``), and the faster is the peak. Without ``n``: 2048 on CPU /
    8192 on GPU, or less where the dtype is slow: n doubles from 256 while one
    product would stay under ``max_single_s``. Each layout is repeated for
    ``min_time`` (at least 3 times) and its best time kept; a layout too slow
    to grow keeps the rate it had at the size where it dropped out.
    """
    device = torch.device(device)
    g = torch.Generator(device='cpu').manual_seed(0)

    def pair(k):
        return (torch.randn(k, k, generator=g).to(device=device, dtype=dtype),
                torch.randn(k, k, generator=g).to(device=device, dtype=dtype))

    def once(a, b, layout):
        synchronize(device)
        t0 = time.perf_counter()
        torch.matmul(a, b.t() if layout == 'nt' else b)
        synchronize(device)
        return time.perf_counter() - t0

    active = ['nn', 'nt']
    per_layout = {}
    with torch.inference_mode():
        if n is None:  # grow from 256 while one product stays well under max_single_s
            cap, n = (8192 if device.type == 'cuda' else 2048), 256
            while n < cap:
                a, b = pair(n)
                probes = {lay: min(once(a, b, lay) for _ in range(2)) for lay in active}
                fast = [lay for lay in active if probes[lay] * 8 <= max_single_s]
                for lay in active:
                    if lay not in fast and fast:  # too slow to grow: keep its rate at this n
                        per_layout[lay] = 2 * n**3 / probes[lay] / 1e9
                if not fast:
                    break
                active = fast
                n *= 2
        a, b = pair(n)
        for lay in active:
            once(a, b, lay)  # warm-up
            best, spent, reps = float('inf'), 0.0, 0
            while spent < min_time or reps < 3:
                dt = once(a, b, lay)
                best, spent, reps = min(best, dt), spent + dt, reps + 1
                if reps >= 200:
                    break
            per_layout[lay] = 2 * n**3 / best / 1e9
    rates = {k: v for k, v in per_layout.items() if v is not None}
    top = max(rates, key=rates.get)
    return dict(n=n, dtype=str(dtype).replace('torch.', ''), gflops=rates[top], layout=top,
                gflops_by_layout=per_layout)


def _timed(fn, device) -> Tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call."""
    synchronize(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def measure_paths(seg, images: Sequence[torch.Tensor], max_windows_list: Sequence[int], warmup: int = 1,
                  repeats: int = 1) -> List[dict]:
    """Time ``seg.query_logits(images)`` at several ``max_windows``, interleaved.

    One call scores the whole list (windows of all images are grouped by
    shape). Each setting gets ``warmup`` untimed calls; then ``repeats``
    rounds time every setting once in turn (so load from other processes hits
    them alike), and the best wall time per setting is kept. ``cpu_s`` is the
    process CPU time of that call (less sensitive to a busy machine; it counts
    all threads, spinning included). Returns one dict per setting, with the
    query logits of its last call under ``logits``.
    """
    device = images[0].device
    old = seg.test_cfg.get('max_windows', 16)
    crop, stride = seg.test_cfg['crop_size'], seg.test_cfg['stride']
    shapes = window_shapes([tuple(i.shape[-2:]) for i in images], crop, stride, seg.encoder.patch_size)
    flops = windows_flops(seg.encoder, shapes)
    runs = [dict(max_windows=int(m), times_s=[], cpu_times_s=[], mem=[], logits=None) for m in max_windows_list]
    load0 = os.getloadavg()[0] if hasattr(os, 'getloadavg') else None
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
                    with PeakMemory(device) as mem:
                        wall, cpu, r['logits'] = _timed(lambda: seg.query_logits(images), device)
                    r['times_s'].append(wall)
                    r['cpu_times_s'].append(cpu)
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
            time_s=t, times_s=r['times_s'], cpu_s=r['cpu_times_s'][best], cpu_times_s=r['cpu_times_s'],
            images_per_s=len(images) / t, windows_per_s=len(shapes) / t,
            encoder_gflop=flops / 1e9, achieved_gflops=flops / t / 1e9, memory=memory,
            loadavg_1min_at_start=load0, logits=r['logits']))
    return out


def measure_path(seg, images: Sequence[torch.Tensor], max_windows: int, warmup: int = 1,
                 repeats: int = 1) -> dict:
    """``measure_paths`` for one ``max_windows``."""
    return measure_paths(seg, images, [max_windows], warmup, repeats)[0]


def measure_encoder_only(seg, crop_hw: Tuple[int, int], batches: Sequence[int], warmup: int = 1,
                         repeats: int = 1, device='cpu') -> List[dict]:
    """Time the encoder alone on ``b`` random crops of ``crop_hw`` for each ``b`` in ``batches``.

    Interleaved like ``measure_paths``; the best wall time per batch size is kept.
    """
    ph, pw = seg.encoder.patch_size
    h, w = math.ceil(crop_hw[0] / ph) * ph, math.ceil(crop_hw[1] / pw) * pw
    xs = {b: torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device) for b in batches}
    times = {b: [] for b in batches}
    cpus = {b: [] for b in batches}
    with torch.inference_mode():
        for b in batches:
            for _ in range(warmup):
                seg.encoder(xs[b])
        for _ in range(max(1, repeats)):
            for b in batches:
                wall, cpu, _ = _timed(lambda: seg.encoder(xs[b]), device)
                times[b].append(wall)
                cpus[b].append(cpu)
    out = []
    for b in batches:
        i = min(range(len(times[b])), key=times[b].__getitem__)
        t = times[b][i]
        flops = windows_flops(seg.encoder, [(h, w)] * b)
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


def time_text_classifier(seg, vocabulary: str, templates: str, cache_dir: Optional[str] = None) -> dict:
    """Build time of a text classifier: cold (fresh cache folder) then cached (same folder).

    Uses ``seg``'s text tower and cache key (architecture, weights digest for
    random weights, precision), so the cached build includes the key's cost.
    """
    import open_clip

    from clearclip_seg.models.text_classifier import build_text_classifier
    from clearclip_seg.vocab import load_templates, load_vocabulary
    vocab = load_vocabulary(vocabulary)
    temps = load_templates(templates)
    device = seg.query_to_class.device
    clip_model = seg._text_model[0].to(device)
    tokenizer = open_clip.get_tokenizer(seg.arch)
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


# -- building -------------------------------------------------------------------
def build_segmentor(arch: Optional[str], arch_file: Optional[str], precision: str, vocabulary: str,
                    crop: Tuple[int, int], stride: Tuple[int, int], max_windows: int, prob_thd: float,
                    device, seed: int = 0, templates: str = 'a_photo_of', last_block=None):
    """A random-weight ClearCLIPSegmentor on ``device`` (same seed -> same weights)."""
    from clearclip_seg.models import ClearCLIPSegmentor
    torch.manual_seed(seed)
    seg = ClearCLIPSegmentor(
        clip=dict(arch=arch, arch_file=arch_file, pretrained=None, precision=precision),
        last_block=last_block, vocabulary=vocabulary, templates=templates, prob_thd=prob_thd,
        text_cache=False,
        data_preprocessor=dict(type='ClearCLIPDataPreProcessor', mean=list(CLIP_MEAN), std=list(CLIP_STD),
                               bgr_to_rgb=True),
        test_cfg=dict(mode='slide', crop_size=tuple(crop), stride=tuple(stride), max_windows=max_windows))
    return seg.to(device).eval()


def machine_info(device) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
                device=str(device))
    try:
        import open_clip
        info['open_clip'] = open_clip.__version__
    except ImportError:
        pass
    try:
        with open('/proc/cpuinfo') as f:
            names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
        info['cpu'] = names[0] if names else platform.processor()
        info['cpus'] = os.cpu_count()
    except OSError:
        info['cpu'] = platform.processor()
    if torch.device(device).type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    if hasattr(os, 'getloadavg'):
        info['loadavg_at_start'] = list(os.getloadavg())
    return info


# -- CLI ------------------------------------------------------------------------
PROTOCOLS = {  # vocabulary key -> (crop, stride, prob_thd)
    'voc21': (448, 224, 0.5), 'voc20': (448, 224, 0.0), 'context60': (448, 224, 0.15),
    'context59': (448, 224, 0.0), 'coco_object': (448, 224, 0.4), 'coco_stuff164k': (448, 224, 0.0),
    'cityscapes': (224, 224, 0.0), 'ade20k': (448, 224, 0.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Speed / FLOP / memory figures of ClearCLIPSegmentor '
                                            '(random weights, synthetic images).')
    p.add_argument('--arch', default=None, help='open_clip architecture (default ViT-B-16, or the --arch-file one)')
    p.add_argument('--arch-file', default=None, help='JSON architecture to register (e.g. the tiny test one)')
    p.add_argument('--precision', default='fp32', choices=list(DTYPES))
    p.add_argument('--compare-precision', action='store_true',
                   help='also run fp32 and the low --precision (bf16 on CPU / fp16 on GPU if --precision is '
                        'fp32) on the same images: speed-up and agreement with fp32')
    p.add_argument('--device', default=None, help='cpu | cuda (default: cuda when available)')
    p.add_argument('--vocab', default='voc21', help='benchmark key / vocabulary of the image runs (default voc21); '
                                                    'sets crop, stride and prob_thd unless given')
    p.add_argument('--crop', type=int, default=None)
    p.add_argument('--stride', type=int, default=None)
    p.add_argument('--max-windows', type=int, default=16, help='windows per encoder batch (default 16)')
    p.add_argument('--baseline', action='store_true', help='also time the plain path (max_windows=1)')
    p.add_argument('--image-size', type=parse_size, action='append', default=None, metavar='HxW',
                   help='segmentor input size(s), repeatable (default 448x597, 597x448, 448x448: VOC after '
                        'the resize); add --protocol-resize to treat them as raw image sizes')
    p.add_argument('--protocol-resize', action='store_true',
                   help='resize the --image-size sizes as the protocol does (short side 448, long <= 2048)')
    p.add_argument('--num-images', type=int, default=3, help='images (the sizes are cycled; default 3)')
    p.add_argument('--warmup', type=int, default=1, help='untimed passes over the images first (default 1)')
    p.add_argument('--repeats', type=int, default=1, help='timed passes; the best is kept (default 1)')
    p.add_argument('--skip-images', action='store_true', help='only the text-classifier timing')
    p.add_argument('--skip-encoder-only', action='store_true', help='skip the encoder-only timing')
    p.add_argument('--skip-text', action='store_true', help='skip the text-classifier timing')
    p.add_argument('--text-vocab', default='coco_stuff164k', help='vocabulary of the text timing (default '
                                                                  'coco_stuff164k: 171 classes)')
    p.add_argument('--text-templates', default='openai_imagenet',
                   help='templates of the text timing (default openai_imagenet, 80; a_photo_of = 1)')
    p.add_argument('--matmul-size', type=int, default=None, help='n of the n x n matmul peak (default 2048 '
                                                                 'CPU / 8192 GPU)')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, metavar='OUT', help='write every figure to this JSON file')
    return p.parse_args(argv)


def _fmt_mem(m: dict) -> str:
    start = '' if m.get('delta_mib') is None else \
        f" (+{m['delta_mib']:.0f} MiB over the {m['start_mib']:.0f} MiB at the start)"
    return f"{m['peak_mib']:.0f} MiB{start} [{m['kind']}]"


def _print_path(name: str, r: dict) -> None:
    shapes = ', '.join(f'{s} x{n}' for s, n in r['window_shapes'])
    print(f"{name} (max_windows={r['max_windows']}): {r['images']} images, {r['windows']} windows ({shapes})")
    print(f"  time {r['time_s']:.3f} s (best of {len(r['times_s'])}; process CPU {r['cpu_s']:.2f} s) -> "
          f"{r['images_per_s']:.3f} images/s, {r['windows_per_s']:.3f} windows/s")
    print(f"  encoder {r['encoder_gflop']:.1f} GFLOP -> {r['achieved_gflops']:.1f} GFLOP/s achieved")
    print(f"  peak memory {_fmt_mem(r['memory'])}")


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    arch = args.arch or (None if args.arch_file else 'ViT-B-16')
    crop0, stride0, prob_thd = PROTOCOLS.get(args.vocab, (448, 224, 0.0))
    crop = args.crop or crop0
    stride = args.stride or stride0
    sizes = args.image_size or list(VOC_SIZES)
    if args.protocol_resize:
        sizes = [protocol_resize(h, w) for h, w in sizes]
    sizes = [sizes[i % len(sizes)] for i in range(args.num_images)]
    low = args.precision if args.precision != 'fp32' else ('fp16' if device.type == 'cuda' else 'bf16')

    res = dict(machine=machine_info(device),
               config=dict(arch=arch, arch_file=args.arch_file, precision=args.precision, vocab=args.vocab,
                           crop=crop, stride=stride, prob_thd=prob_thd, max_windows=args.max_windows,
                           image_sizes=[f'{h}x{w}' for h, w in sizes], warmup=args.warmup,
                           repeats=args.repeats, seed=args.seed))
    m = res['machine']
    print(f"machine: {m.get('cpu')} ({m.get('cpus')} CPUs, torch threads {m['threads']})"
          + (f", GPU {m['gpu']}" if 'gpu' in m else '') + f"; torch {m['torch']}, device {device}"
          + (f"; load average {m['loadavg_at_start'][0]:.2f}" if 'loadavg_at_start' in m else ''))
    print(f"model: {arch or args.arch_file} random weights, {args.precision}; vocab {args.vocab} "
          f"(crop {crop}, stride {stride}); images {', '.join(res['config']['image_sizes'])}")

    t0 = time.perf_counter()
    seg = build_segmentor(arch, args.arch_file, args.precision, args.vocab, (crop, crop), (stride, stride),
                          args.max_windows, prob_thd, device, seed=args.seed)
    res['build_s'] = time.perf_counter() - t0
    res['config']['arch'] = seg.arch
    geo = encoder_geometry(seg.encoder)
    res['encoder_geometry'] = dict(geo, patch=list(geo['patch']))

    peak = measure_matmul_peak(device, DTYPES[args.precision], n=args.matmul_size)
    res['matmul_peak'] = peak
    lay = ', '.join(f"{k} {v:.1f}" for k, v in peak['gflops_by_layout'].items() if v is not None)
    print(f"matmul peak ({peak['n']}x{peak['n']} {peak['dtype']}): {peak['gflops']:.1f} GFLOP/s "
          f"(a@b / a@b.T: {lay})")

    if not args.skip_images:
        images = synthetic_images(sizes, seed=args.seed, device=device)
        settings = [args.max_windows] + ([1] if args.baseline else [])
        measured = measure_paths(seg, images, settings, args.warmup, args.repeats)
        batched = measured[0]
        _print_path('batched path', batched)
        batched['pct_of_peak'] = 100 * batched['achieved_gflops'] / peak['gflops']
        print(f"  = {batched['pct_of_peak']:.1f} % of the matmul peak")
        base_logits = batched.pop('logits')
        res['batched'] = batched
        if args.baseline:
            plain = measured[1]
            _print_path('plain path', plain)
            plain['pct_of_peak'] = 100 * plain['achieved_gflops'] / peak['gflops']
            print(f"  = {plain['pct_of_peak']:.1f} % of the matmul peak")
            agree = agreement(seg, base_logits, plain.pop('logits'))
            res['plain'] = plain
            res['baseline_ratio'] = batched['images_per_s'] / plain['images_per_s']
            res['baseline_cpu_ratio'] = plain['cpu_s'] / batched['cpu_s']
            res['baseline_agreement'] = agree
            print(f"speed ratio batched/plain: {res['baseline_ratio']:.3f}x "
                  f"(process CPU time ratio {res['baseline_cpu_ratio']:.3f}x)")
            print(f"  argmax agreement {100 * agree['argmax_agreement']:.4f} % (query logits), "
                  f"{100 * agree['label_agreement']:.4f} % (labels); max |logit diff| {agree['max_abs_diff']:.3g}")
        if not args.skip_encoder_only:
            b = min(args.max_windows, batched['windows'])
            enc = measure_encoder_only(seg, (crop, crop), [1, b] if b > 1 else [1], args.warmup, args.repeats,
                                       device)
            for e in enc:
                e['pct_of_peak'] = 100 * e['achieved_gflops'] / peak['gflops']
                print(f"encoder only, batch {e['batch']} x {e['crop']}: {e['windows_per_s']:.3f} windows/s, "
                      f"{e['achieved_gflops']:.1f} GFLOP/s = {e['pct_of_peak']:.1f} % of peak "
                      f"(CPU {e['cpu_s'] / e['batch']:.2f} s/window)")
            res['encoder_only'] = enc

    if not args.skip_text:
        t = time_text_classifier(seg, args.text_vocab, args.text_templates)
        res['text_classifier'] = t
        print(f"text classifier {t['vocabulary']} x {t['templates']} ({t['queries']} queries x "
              f"{t['num_templates']} templates = {t['prompts']} prompts): cold {t['cold_s']:.2f} s, "
              f"cached {t['cached_s']:.3f} s (of which the cache key {t['cached_key_s']:.3f} s"
              f"{': random weights are keyed by a digest of all weights' if not seg.pretrained else ''})")

    if args.compare_precision and not args.skip_images:
        other_prec = low if args.precision == 'fp32' else 'fp32'
        other = build_segmentor(arch, args.arch_file, other_prec, args.vocab, (crop, crop), (stride, stride),
                                args.max_windows, prob_thd, device, seed=args.seed)
        o = measure_path(other, images, args.max_windows, args.warmup, args.repeats)
        _print_path(f'batched path, {other_prec}', o)
        o_logits = o.pop('logits')
        del other
        other_peak = measure_matmul_peak(device, DTYPES[other_prec], n=args.matmul_size)
        o['pct_of_peak'] = 100 * o['achieved_gflops'] / other_peak['gflops']
        print(f"  = {o['pct_of_peak']:.1f} % of the {other_prec} matmul peak ({other_peak['gflops']:.1f} GFLOP/s)")
        runs = {args.precision: (res['batched'], base_logits, peak), other_prec: (o, o_logits, other_peak)}
        lowp = other_prec if args.precision == 'fp32' else args.precision
        (fp32_r, fp32_l, fp32_pk), (low_r, low_l, low_pk) = runs['fp32'], runs[lowp]
        agree = agreement(seg, fp32_l, low_l)
        cmp = dict(low=lowp, fp32_time_s=fp32_r['time_s'], low_time_s=low_r['time_s'],
                   speedup=fp32_r['time_s'] / low_r['time_s'], agreement=agree,
                   fp32_matmul_gflops=fp32_pk['gflops'], low_matmul_gflops=low_pk['gflops'],
                   matmul_speedup=low_pk['gflops'] / fp32_pk['gflops'],
                   fp32_peak_mib=fp32_r['memory']['peak_mib'], low_peak_mib=low_r['memory']['peak_mib'])
        res['precision_compare'] = dict(cmp, other_run=o)
        print(f"precision {lowp} vs fp32: speed-up {cmp['speedup']:.3f}x (matmul peak {low_pk['gflops']:.1f} "
              f"vs {fp32_pk['gflops']:.1f} GFLOP/s = {cmp['matmul_speedup']:.2f}x)")
        print(f"  argmax agreement with fp32 {100 * agree['argmax_agreement']:.3f} % (query logits), "
              f"{100 * agree['label_agreement']:.3f} % (labels); max |logit diff| {agree['max_abs_diff']:.3g}")

    if hasattr(os, 'getloadavg'):
        res['loadavg_at_end'] = list(os.getloadavg())
        print(f"load average at the end {res['loadavg_at_end'][0]:.2f} (other processes share the CPUs when > 0)")
    res['process_peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS (lifetime): {res['process_peak_rss_mib']:.0f} MiB")
    if device.type == 'cuda':
        res['cuda_max_reserved_mib'] = torch.cuda.max_memory_reserved() / 2**20
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2, default=str)
        print(f'figures written to {args.json}')
    return res


def main(argv=None):
    args = parse_args(argv)
    run(args)


if __name__ == '__main__':
    main()
