"""Build an open_clip model from a config: architecture, weights, precision.

``arch`` is any open_clip architecture name (``ViT-B-16``, ``ViT-L-14``,
``ViT-B-16-quickgelu``, ...) or one registered from a JSON file (``arch_file``,
through open_clip's own ``add_model_config``). ``pretrained`` is an open_clip
tag (downloaded through open_clip's cache when online) or a local checkpoint
file; ``None`` keeps random weights (tests, speed benchmarks).
"""
import hashlib
import logging
import os
from typing import Optional, Tuple

import torch

logger = logging.getLogger(__name__)

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def resolve_precision(precision: str, device) -> str:
    """``'auto'`` is the paper's fp16 on a GPU and fp32 on a CPU."""
    if precision == 'auto':
        return 'fp16' if torch.device(device).type == 'cuda' else 'fp32'
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (model.clip.precision): "
                         f"expected one of {['auto', *PRECISIONS]}")
    return precision


def register_arch_file(path: str) -> str:
    """Register a JSON architecture with open_clip; returns its name (the file stem)."""
    import open_clip
    if not os.path.isfile(path):
        raise FileNotFoundError(f"architecture file '{path}' (model.clip.arch_file) not found: "
                                'expected an open_clip JSON config with embed_dim, vision_cfg, text_cfg')
    name = os.path.splitext(os.path.basename(path))[0]
    if name not in open_clip.list_models():
        open_clip.add_model_config(path)
    if name not in open_clip.list_models():
        raise ValueError(f"architecture file '{path}' was not accepted by open_clip: "
                         'expected keys embed_dim, vision_cfg and text_cfg')
    return name


def weights_identity(arch: str, pretrained: Optional[str]) -> Optional[str]:
    """A string that changes whenever the weights do (for caches); None if random."""
    if not pretrained:
        return None
    if os.path.isfile(pretrained):
        st = os.stat(pretrained)
        return f'file:{os.path.abspath(pretrained)}:{st.st_size}:{st.st_mtime_ns}'
    return f'tag:{arch}:{pretrained}'


def _check_pretrained(arch: str, pretrained: str) -> dict:
    import open_clip
    if os.path.isfile(pretrained):
        return {}
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        looks_like_path = os.sep in pretrained or pretrained.endswith(('.pt', '.pth', '.bin', '.safetensors'))
        if looks_like_path:
            raise FileNotFoundError(f"checkpoint file '{pretrained}' (model.clip.pretrained) not found")
        raise ValueError(f"unknown pretrained tag '{pretrained}' for '{arch}' (model.clip.pretrained): "
                         f'expected a local checkpoint file or one of {tags}')
    return open_clip.get_pretrained_cfg(arch, pretrained)


def create_clip(arch: str, pretrained: Optional[str] = None, arch_file: Optional[str] = None,
                precision: str = 'fp32', device='cpu', quick_gelu: Optional[bool] = None,
                cache_dir: Optional[str] = None) -> Tuple[torch.nn.Module, str]:
    """Create an open_clip model in eval mode.

    Args:
        arch: open_clip architecture name; may be None when ``arch_file`` is given.
        pretrained: open_clip tag, local checkpoint path, or None (random weights).
        arch_file: JSON architecture to register first (its stem is its name).
        precision: ``fp32 | fp16 | bf16`` (open_clip's own mixed-precision cast,
            which mirrors OpenAI's), already resolved from ``'auto'``.
        device: where the weights go.
        quick_gelu: force QuickGELU on/off; None follows the tag (OpenAI and
            MetaCLIP weights were trained with QuickGELU, and a GELU model on
            those weights is silently wrong).
        cache_dir: open_clip download cache.

    Returns:
        (model, arch name).
    """
    import open_clip
    if arch_file:
        registered = register_arch_file(arch_file)
        arch = arch or registered
    if not arch:
        raise ValueError('no CLIP architecture given: set model.clip.arch or model.clip.arch_file')
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown CLIP architecture '{arch}' (model.clip.arch): expected an open_clip "
                         "name such as 'ViT-B-16', 'ViT-L-14', 'ViT-B-16-quickgelu' "
                         '(open_clip.list_models()), or a JSON file in model.clip.arch_file')
    tag_cfg = _check_pretrained(arch, pretrained) if pretrained else {}
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get('quick_gelu', False))
    try:
        model = open_clip.create_model(arch, pretrained=pretrained or None, precision=precision,
                                       device=device, force_quick_gelu=quick_gelu,
                                       cache_dir=cache_dir)
    except RuntimeError as e:
        if pretrained and not os.path.isfile(pretrained):
            raise RuntimeError(
                f"could not load weights '{pretrained}' for '{arch}' (offline, or download failed: "
                f'{str(e).splitlines()[0][:200]}); download them once where online, or set '
                'model.clip.pretrained=/path/to/checkpoint (.pt/.bin/.safetensors)') from e
        raise
    return model.eval(), arch


def state_digest(module: torch.nn.Module) -> str:
    """Hash of a module's tensors: identity for random (un-tagged) weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
