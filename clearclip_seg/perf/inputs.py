"""What the speed figures run on: image sizes, synthetic images and a random-weight segmentor."""
import os
import os.path as osp
import platform
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..apis import init_segmentor
from ..models.clip_loader import PRECISIONS as DTYPES  # noqa: F401  (precision name -> dtype, one table)
from ..protocol import benchmarks as _benchmarks
from ..protocol import constants as _constants
from ..repo_root import ROOT

# Typical VOC images (H x W): landscape, portrait, square.
VOC_RAW_SIZES: Tuple[Tuple[int, int], ...] = ((375, 500), (500, 375), (500, 500))
# The model config the segmentor is built from (ClearCLIP's defaults), overridden per run.
MODEL_CONFIG = osp.join(ROOT,
                        'configs', '_base_', 'models', 'clearclip_vit-b16.py')


def parse_size(text: str) -> Tuple[int, int]:
    """``'448x597'`` -> (448, 597) (height x width).

    Raises:
        ValueError: not of the form HxW.
    """
    try:
        h, w = text.lower().split('x')
        return int(h), int(w)
    except ValueError:
        raise ValueError(f"size '{text}': expected HxW, e.g. 448x597") from None


def protocol_resize(h: int, w: int, scale: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """MMSeg ``Resize(scale, keep_ratio=True)``: by default the protocol's (the short side to 448 unless
    the long side would pass 2048), read from ``protocol.constants.RESIZE`` when called."""
    scale = _constants.RESIZE if scale is None else scale
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def voc_sizes() -> List[Tuple[int, int]]:
    """Typical VOC images after the protocol's resize: what the segmentor actually sees (448x597, ...)."""
    return [protocol_resize(h, w) for h, w in VOC_RAW_SIZES]


# The same, as the resize stood at import time.
VOC_SIZES: Tuple[Tuple[int, int], ...] = tuple(voc_sizes())


def benchmark_slide(vocab: str) -> Tuple[int, int, float]:
    """(crop, stride, prob_thd) of a benchmark key; ClearCLIP's crop and stride and no threshold otherwise."""
    b = _benchmarks.BENCHMARKS.get(vocab)
    return (b.crop, b.stride, b.prob_thd) if b else (_constants.SLIDE_CROP, _constants.SLIDE_STRIDE, 0.0)


def synthetic_images(sizes: Sequence[Tuple[int, int]], seed: int = 0,
                     device='cpu') -> List[torch.Tensor]:
    """Smooth random RGB images in [0, 255], CLIP-normalised: (3, H, W) float32 each."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(_constants.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(_constants.CLIP_STD).view(3, 1, 1)
    out = []
    for h, w in sizes:
        low = torch.rand(1, 3, max(2, h // 32), max(2, w // 32), generator=g)
        img = F.interpolate(low, size=(h, w), mode='bilinear', align_corners=False)[0]
        img = (img * 0.8 + 0.2 * torch.rand(3, h, w, generator=g)) * 255.0
        out.append(((img - mean) / std).to(device))
    return out


def build_segmentor(arch: Optional[str], arch_file: Optional[str], precision: str, vocabulary,
                    crop: Tuple[int, int], stride: Tuple[int, int], max_windows: int, prob_thd: float,
                    device, seed: int = 0, templates: str = 'a_photo_of', last_block: Optional[dict] = None):
    """A random-weight segmentor from ClearCLIP's model config, through ``init_segmentor``.

    The same seed gives the same weights. The text cache is off (random
    weights) and the text classifier is built on first use, so that building
    and text timings stay apart.

    Args:
        arch, arch_file: open_clip architecture name and/or JSON file.
        precision: ``fp32 | fp16 | bf16 | auto``.
        vocabulary, templates: of the text classifier.
        crop, stride, max_windows: the slide settings.
        prob_thd: the background threshold.
        device: where the model runs.
        seed: torch seed before the weights are drawn.
        last_block: ``attn``/``residual``/``ffn`` switches (default: the config's, ClearCLIP's).
    """
    options = {'model.clip.arch': arch, 'model.clip.arch_file': arch_file, 'model.clip.pretrained': None,
               'model.clip.precision': precision, 'model.vocabulary': vocabulary, 'model.templates': templates,
               'model.prob_thd': prob_thd, 'model.text_cache': False,
               'model.test_cfg': dict(mode='slide', crop_size=tuple(crop), stride=tuple(stride),
                                      max_windows=max_windows)}
    if last_block is not None:
        options['model.last_block'] = dict(last_block)
    torch.manual_seed(seed)
    return init_segmentor(MODEL_CONFIG, device=device, cfg_options=options, build_text=False)


# /proc/cpuinfo flags of CPU instructions that compute in bf16: AMX tiles (matrix units) and
# AVX-512 BF16 dot products. Without either, torch emulates bf16 and it is slower than fp32.
BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')


def cpu_bf16_units(cpuinfo: str = '/proc/cpuinfo') -> Optional[List[str]]:
    """The bf16 flags of ``BF16_CPU_FLAGS`` this CPU reports; None where the flags can't be read."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
                    return [name for name in BF16_CPU_FLAGS if name in flags]
    except OSError:
        pass
    return None


def bf16_advice(units: Optional[List[str]]) -> str:
    """One line on whether bf16 pays on this CPU, from ``cpu_bf16_units``."""
    if units is None:
        return 'bf16 units: unknown (no /proc/cpuinfo flags); compare --compare-precision before using bf16'
    if 'amx_bf16' in units:
        return (f"bf16 units: {', '.join(units)} (AMX matrix units): model.clip.precision=bf16 is the fast "
                'CPU setting here (labels checked against fp32 by --compare-precision)')
    if units:
        return (f"bf16 units: {', '.join(units)} only (no AMX): bf16 may gain a little over fp32; "
                'measure with --compare-precision before using it')
    return ('bf16 units: none (no amx_bf16 / avx512_bf16 in /proc/cpuinfo): bf16 is emulated and slower '
            'than fp32 on this CPU; keep model.clip.precision=fp32')


def load_average() -> Optional[float]:
    """The one-minute load average (None where the system has none): printed beside timings."""
    return os.getloadavg()[0] if hasattr(os, 'getloadavg') else None


def machine_info(device) -> dict:
    """Python/torch versions, threads, CPU (and GPU) name, load average: printed beside every figure."""
    info = dict(python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
                device=str(device))
    try:
        import open_clip
        info['open_clip'] = open_clip.__version__
    except ImportError:
        pass
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        info['cpu'] = names[0] if names else platform.processor()
        info['cpus'] = os.cpu_count()
    except OSError:
        info['cpu'] = platform.processor()
    info['bf16_units'] = cpu_bf16_units()
    if torch.device(device).type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    if hasattr(os, 'getloadavg'):
        info['loadavg_at_start'] = list(os.getloadavg())
    return info
