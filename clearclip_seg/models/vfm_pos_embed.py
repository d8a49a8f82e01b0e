"""The positional-embedding resize of the code a method's authors load, on a timm ViT.

A ViT trained on one grid (DINO ViT-B/8: 28 x 28) needs its patch position
embeddings resized for other windows, and the libraries resize them
differently, so the same weights give different features off the training
grid. A method that loads its vision model through timm gets timm's resize;
to match the authors' numbers it must get theirs. The rules (``RULES``):

* ``timm``: timm's own ``resample_abs_pos_embed``: bicubic to the target
  size, antialiased, in float32 (the model is left as timm builds it).
* ``dino_hub``: DINO's ``VisionTransformer.interpolate_pos_encoding``
  (facebookresearch/dino, the ``torch.hub`` models): the (1, C, M, M) grid
  of patch embeddings is resized bicubically (no antialias) with
  ``scale_factor = ((H//p + 0.1) / M, (W//p + 0.1) / M)``, not to a size, so
  the sampling positions follow the +0.1 scale; in the parameters' dtype.
* ``dinov2_hub``: DINOv2's ``interpolate_pos_encoding`` with the settings
  its hub gives the ``*_reg`` backbones (``interpolate_offset=0.0``,
  ``interpolate_antialias=True``, facebookresearch/dinov2 ``hub/backbones.py``):
  bicubic to the size (H//p, W//p), antialiased, in float32, then cast to
  the tokens' dtype. The register tokens get no position embedding (timm's
  ``no_embed_class`` layout).
* ``mae``: MAE's ``interpolate_pos_embed`` (ProxyCLIP's ``mae/pos_embed.py``),
  applied there once when the checkpoint loads: bicubic to the size, no
  antialias, in float32.

Every rule leaves the embedding as it is on the training grid (the hub
code's test, token count equal and H == W, is the same test here: timm's
patch embedding takes only multiples of the patch size). The class token's
embedding is never resized. The rule replaces the model's ``_pos_embed``
step on the instance (timm's own class is untouched); it needs
``dynamic_img_size=True``.
"""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .encoder import POS_INTERPOLATIONS


def _resize_bicubic(patch_pos: torch.Tensor, native_grid, grid) -> torch.Tensor:
    """Plain bicubic to ``size=grid`` (MAE's ``interpolate_pos_embed``)."""
    return F.interpolate(patch_pos, size=tuple(grid), mode='bicubic', align_corners=False)


# how the (1, C, M, M) grid is resized: the CLIP towers' two modes (models/encoder.py) and MAE's
_RESIZE = {**POS_INTERPOLATIONS, 'bicubic': _resize_bicubic}

# rule: resize (a key of _RESIZE); float32: interpolate in float32 (else in the parameters' dtype)
RULES: Dict[str, Optional[dict]] = {
    'timm': None,
    'dino_hub': dict(resize='dino', float32=False),
    'dinov2_hub': dict(resize='antialias', float32=True),
    'mae': dict(resize='bicubic', float32=True),
}


def resize_patch_pos_embed(patch_pos: torch.Tensor, grid, rule: str) -> torch.Tensor:
    """Patch position embeddings (1, M*M, C) resized to ``grid`` (gh, gw) by ``rule`` -> (1, gh*gw, C)."""
    spec = RULES[rule]
    n, dim = patch_pos.shape[1], patch_pos.shape[2]
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f'pos_embed_resize={rule!r}: the position embedding has {n} patch entries, '
                         'not a square grid')
    gh, gw = int(grid[0]), int(grid[1])
    src = patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2)
    out = _RESIZE[spec['resize']](src.float() if spec['float32'] else src, (m, m), (gh, gw))
    if tuple(out.shape[-2:]) != (gh, gw):  # the hub code asserts the same
        raise RuntimeError(f'pos_embed_resize={rule!r}: resized to {tuple(out.shape[-2:])}, expected {(gh, gw)}')
    return out.permute(0, 2, 3, 1).reshape(1, gh * gw, dim).to(patch_pos.dtype)


def _version(t: torch.Tensor) -> int:
    """The in-place version counter of a tensor (-1 for an inference tensor, which has none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def use_pos_embed_rule(model, rule: str, key: str = 'pos_embed_resize'):
    """Give a timm ViT (``dynamic_img_size=True``) the positional-embedding resize ``rule``; returns it."""
    if rule not in RULES:
        raise ValueError(f'{key}={rule!r}: expected one of {sorted(RULES)}')
    if RULES[rule] is None:
        return model
    if not getattr(model, 'dynamic_img_size', False) or getattr(model, 'pos_embed', None) is None:
        raise ValueError(f'{key}={rule!r} needs a timm ViT with an absolute position embedding built with '
                         f'dynamic_img_size=True, not {type(model).__name__}')

    cache = {}   # resized patch positions per grid: they are weights (ViT-B/8 at 42 x 42: 40 ms a window saved)

    def pos_embed(x: torch.Tensor) -> torch.Tensor:
        B, gh, gw, C = x.shape
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        prefix_pos, patch_pos = model.pos_embed[:, :prefix], model.pos_embed[:, prefix:]
        if gh * gw != patch_pos.shape[1] or gh != gw:   # not the training grid
            p = model.pos_embed   # a move, cast or load of the weights empties the cache
            stamp = (p.dtype, p.device, p.data_ptr(), _version(p))
            if cache.get('stamp') != stamp:
                cache.clear()
                cache['stamp'] = stamp
            if (gh, gw) not in cache:
                cache[(gh, gw)] = resize_patch_pos_embed(patch_pos, (gh, gw), rule)
            patch_pos = cache[(gh, gw)]
        x = x.reshape(B, gh * gw, C)
        tokens = [t.expand(B, -1, -1) for t in (model.cls_token, model.reg_token) if t is not None]
        if model.no_embed_class:  # prefix tokens carry no position embedding
            x = torch.cat(tokens + [x + patch_pos.to(x.dtype)], dim=1)
        else:
            x = torch.cat(tokens + [x], dim=1) + torch.cat([prefix_pos, patch_pos], dim=1).to(x.dtype)
        return model.pos_drop(x)

    model._pos_embed = pos_embed
    model.pos_embed_resize = rule
    return model
