"""What a sweep costs, in encoder passes and (with a measured speed) in wall time.

A run costs one encoder forward per window. A shared pass runs the frozen
blocks 0..L-2 (the *trunk*) once per window for all its runs, and each run's
last block and head (``ln_post`` + ``proj``) on those tokens. Costs are counted
in matmul FLOPs (``clearclip_seg.flops.vit_encoder_flops``: patch embedding,
attention and MLP matmuls; layer norms, softmax and the per-pixel scoring are
not counted, a few % of a window), and expressed in *encoder passes*: one pass
is one full forward of one run over one image.

The whole-paper estimate (``paper_cost``) reads the suites
(``clearclip_seg.suites``), the protocol's image counts and windows per image
at typical image sizes (``TYPICAL_IMAGE_SIZE``: an estimate, the real sizes
vary), and groups runs as ``tools/benchmark.py`` does: same backbone, same
image set, same windows.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..protocol import constants
from ..protocol.benchmarks import BACKBONES, BENCHMARKS
from ..protocol.constants import RESIZE
from ..protocol.presets import PRESETS
from ..suites import suite_runs

# Typical raw image size (H, W) per benchmark, for windows-per-image estimates only:
# VOC / Context images are mostly 500 x 375, COCO 640 x 480, ADE20K mostly 4:3 with
# a short side near 512, Cityscapes 1024 x 2048.
TYPICAL_IMAGE_SIZE: Dict[str, Tuple[int, int]] = {k: tuple(b.typical_size) for k, b in BENCHMARKS.items()}
# A ViT-B/16-like tower, for costs of towers whose geometry cannot be read (timm trunks).
_FALLBACK_GEOMETRY = dict(width=768, layers=12, mlp_width=3072, out_dim=512, patch=(16, 16), in_chans=3)


def vision_geometry(arch: Optional[str], arch_file: Optional[str] = None) -> Optional[dict]:
    """Width, layers, MLP width, output dim and patch of an open_clip ViT, from its JSON config.

    Returns:
        The keywords of ``vit_encoder_flops`` (but the grid and the last block), or
        None for a tower that is not a plain open_clip ViT.
    """
    cfg = None
    if arch_file and os.path.isfile(arch_file):
        with open(arch_file) as f:
            cfg = json.load(f)
    elif arch:
        try:
            import open_clip
            cfg = open_clip.get_model_config(arch)
        except Exception:  # an unknown name: no geometry, the caller falls back
            cfg = None
    vision = (cfg or {}).get('vision_cfg') or {}
    if not vision.get('width') or not vision.get('layers') or vision.get('timm_model_name'):
        return None
    width, patch = int(vision['width']), vision.get('patch_size', 16)
    patch = tuple(patch) if isinstance(patch, (list, tuple)) else (int(patch), int(patch))
    return dict(width=width, layers=int(vision['layers']), mlp_width=int(width * vision.get('mlp_ratio', 4.0)),
                out_dim=int(cfg.get('embed_dim', width)), patch=patch, in_chans=3)


def split_flops(geometry: Optional[dict], window: Tuple[int, int], attn: Optional[str] = None,
                ffn: Optional[bool] = None) -> Tuple[int, int]:
    """(trunk, head) matmul FLOPs of one window: blocks 0..L-2 with the patch embedding, and
    the last block (``attn``, ``ffn``; None: ClearCLIP's, the protocol's) with ``proj``."""
    clearclip = constants.CLEARCLIP_LAST_BLOCK
    attn = clearclip['attn'] if attn is None else attn
    ffn = bool(clearclip['ffn']) if ffn is None else ffn
    from ..flops import vit_encoder_flops  # lazy: it imports torch; the runner plans without it
    geo = dict(geometry or _FALLBACK_GEOMETRY)
    ph, pw = geo['patch']
    grid = (max(1, window[0] // ph), max(1, window[1] // pw))
    full = vit_encoder_flops(grid, last_attn=attn, last_ffn=ffn, **geo)
    one_block = vit_encoder_flops(grid, last_attn=attn, last_ffn=ffn, **{**geo, 'layers': 1})
    embed = 2 * grid[0] * grid[1] * geo['in_chans'] * ph * pw * geo['width']
    trunk = full - one_block + embed
    return trunk, full - trunk


def pass_factor(trunk: float, heads: Sequence[float]) -> Tuple[float, float]:
    """(shared, separate) cost of K runs on one image, in encoder passes.

    Separate runs cost K passes. A shared pass costs its trunk once plus every
    run's head, counted in passes of the runs' mean full forward.
    """
    k = len(heads)
    mean_full = trunk + sum(heads) / k
    return (trunk + sum(heads)) / mean_full, float(k)


def window_shapes(benchmark: str, size: Optional[Tuple[int, int]] = None) -> List[Tuple[int, int]]:
    """Window shapes the encoder sees for a typical image of ``benchmark`` (after the resize, padded)."""
    from ..models.slide import padded_window_shapes  # lazy: the models import torch; the runner plans without them
    b = BENCHMARKS[benchmark]
    h, w = size or TYPICAL_IMAGE_SIZE.get(benchmark, (375, 500))
    long_max, short_max = max(RESIZE), min(RESIZE)
    f = min(long_max / max(h, w), short_max / min(h, w))
    resized = (int(h * f + 0.5), int(w * f + 0.5))
    return padded_window_shapes([resized], b.crop, b.stride, 1)


@dataclass
class GroupCost:
    """One shared pass of the estimate: a backbone on one image set, summed over its images and windows."""
    backbone: str
    arch: str
    image_set: str
    benchmarks: List[str]
    images: int
    runs: int = 0
    windows: int = 0                 # windows over all images
    trunk_flops: float = 0.0         # blocks 0..L-2 over all windows (once per pass)
    head_flops: List[float] = field(default_factory=list)   # per run: last block + proj over all windows
    heads: List[Tuple[str, bool]] = field(default_factory=list)


def _last_block_of(run) -> Tuple[str, bool, bool]:
    """(attn, residual, ffn) of a suite's run: its preset's (ClearCLIP's without one), changed by its options."""
    lb = dict(PRESETS[run.preset if run.preset in PRESETS else 'clearclip'].last_block)
    for name in ('attn', 'residual', 'ffn'):
        lb[name] = run.options.get(f'model.last_block.{name}', lb[name])
    return lb['attn'], bool(lb['residual']), bool(lb['ffn'])


def image_set_of(benchmark: str) -> str:
    """The image set a benchmark reads (VOC21 and VOC20 read the same one)."""
    b = BENCHMARKS[benchmark]
    return f'{b.data_root}/{b.img_dir}' + (f' ({b.ann_file})' if b.ann_file else '')


PAPER_SUITES = ('main', 'baselines', 'ablation', 'backbones')


def paper_groups(suites: Iterable[str] = PAPER_SUITES) -> List[GroupCost]:
    """The shared passes of the whole paper (runs grouped as ``tools/benchmark.py`` groups them)."""
    groups: Dict[tuple, GroupCost] = {}
    seen = set()
    for suite in suites:
        for run in suite_runs(suite):
            b = BENCHMARKS[run.benchmark]
            arch = BACKBONES[run.backbone][0]
            # the same run asked by two suites (ClearCLIP ViT-B/16 in main and baselines) runs once
            what = (run.backbone, run.benchmark, _last_block_of(run), run.preset)
            if what in seen:
                continue
            seen.add(what)
            key = (run.backbone, image_set_of(run.benchmark), b.crop, b.stride)
            g = groups.setdefault(key, GroupCost(run.backbone, arch, key[1], [], b.num_images))
            if run.benchmark not in g.benchmarks:
                g.benchmarks.append(run.benchmark)
            g.runs += 1
            attn, _, ffn = _last_block_of(run)
            g.heads.append((attn, ffn))
    for g in groups.values():
        geo = vision_geometry(g.arch)
        shapes = window_shapes(g.benchmarks[0])
        g.windows = g.images * len(shapes)
        g.trunk_flops = g.images * sum(split_flops(geo, sh)[0] for sh in shapes)
        g.head_flops = [g.images * sum(split_flops(geo, sh, a, f)[1] for sh in shapes) for a, f in g.heads]
    return list(groups.values())


def paper_cost(speeds: Dict[str, dict], suites: Iterable[str] = PAPER_SUITES) -> dict:
    """Estimated wall time of the whole paper, with and without shared passes.

    A run's time is its encoder FLOPs at the measured rate plus a fixed
    per-window cost for everything else (upsampling, softmax, labels: measured
    as the whole path's time per window minus the encoder's). A shared pass
    pays the trunk once and every run's head and per-window cost.

    Args:
        speeds: per open_clip arch (``'ViT-B-16'``, ``'ViT-L-14'``): ``s_per_gflop``
            (encoder seconds per GFLOP) and ``overhead_s`` (seconds per window
            outside the encoder). An arch missing here takes the entry with the
            same patch size and closest width.
        suites: the suites counted (default: the whole paper).

    Returns:
        ``groups`` (one row per shared pass), ``runs``, ``windows``,
        ``shared_s``, ``separate_s``, their ``ratio``, and the encoder passes
        (``shared_passes``, ``separate_passes``: images x runs, the trunk
        counted once per pass in the shared figure, by FLOPs).
    """
    groups = paper_groups(suites)
    total = dict(shared_s=0.0, separate_s=0.0, shared_passes=0.0, separate_passes=0.0, runs=0, windows=0)
    rows = []
    for g in groups:
        speed = _rate_for(g.arch, speeds)
        rate, over = speed['s_per_gflop'] / 1e9, speed.get('overhead_s', 0.0)
        heads = sum(g.head_flops)
        shared_s = (g.trunk_flops + heads) * rate + g.runs * g.windows * over
        separate_s = (g.runs * g.trunk_flops + heads) * rate + g.runs * g.windows * over
        passes = g.images * g.runs
        total['shared_s'] += shared_s
        total['separate_s'] += separate_s
        total['separate_passes'] += passes
        total['shared_passes'] += passes * (g.trunk_flops + heads) / (g.runs * g.trunk_flops + heads)
        total['runs'] += g.runs
        total['windows'] += g.runs * g.windows
        rows.append(dict(backbone=g.backbone, image_set=g.image_set, benchmarks=g.benchmarks, runs=g.runs,
                         images=g.images, windows=g.windows, shared_s=shared_s, separate_s=separate_s))
    total['ratio'] = total['separate_s'] / total['shared_s'] if total['shared_s'] else None
    total['groups'] = rows
    return total


def _rate_for(arch: str, table: Dict[str, dict]) -> dict:
    if arch in table:
        return table[arch]
    base = arch.replace('-quickgelu', '')
    if base in table:
        return table[base]
    geo = vision_geometry(arch) or _FALLBACK_GEOMETRY
    best = None
    for name, rate in table.items():
        other = vision_geometry(name) or _FALLBACK_GEOMETRY
        score = (other['patch'] != geo['patch'], abs(other['width'] - geo['width']))
        if best is None or score < best[0]:
            best = (score, rate)
    if best is None:
        raise ValueError(f"no measured speed for '{arch}': expected one of {sorted(table)}")
    return best[1]
