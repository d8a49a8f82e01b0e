"""Dense CLIP image encoder for open_clip's own ViT (the ``openclip_vit`` tower kind).

Wraps (does not copy) an ``open_clip`` ``VisionTransformer`` and implements the
``DenseEncoder`` stages from its weights. Blocks 0..L-2 run unchanged; the last
block is recomputed (``DenseEncoder.last_block``) as

    X_attn = ls_1(out_proj(Attn_mode(ln_1(x))))
    y      = X_attn (+ x if residual)
    y      = y (+ ls_2(mlp(ln_2(y))) if ffn)

followed by ``ln_post`` on every token, dropping the class token and ``proj``
(docs/protocol.md, "The method"). With ``attn='qk', residual=True, ffn=True`` this
is exactly open_clip's own forward. Only the work a mode needs is done: the
FFN is skipped when off, and ``identity`` never computes q or k.
"""
import math
from contextlib import contextmanager
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dense_encoder import DenseEncoder, register_tower

_REQUIRED_VISUAL = ('conv1', 'class_embedding', 'positional_embedding', 'ln_pre',
                    'transformer', 'ln_post', 'proj')
_REQUIRED_BLOCK = ('ln_1', 'attn', 'ln_2', 'mlp')


def _check_wrappable(visual: nn.Module) -> None:
    """Fail at wrap time, with a clear message, if open_clip's layout changed."""
    missing = [a for a in _REQUIRED_VISUAL if not hasattr(visual, a)]
    if missing:
        raise TypeError(f'{type(visual).__name__} is not an open_clip VisionTransformer '
                        f'(missing {missing}); only ViT image towers are supported')
    if getattr(visual, 'attn_pool', None) is not None:
        raise TypeError('open_clip ViTs with an attentional pooler (CoCa) are not supported')
    if visual.proj is None:
        raise TypeError('the ViT has no output projection (proj is None)')
    block = visual.transformer.resblocks[-1]
    missing = [a for a in _REQUIRED_BLOCK if not hasattr(block, a)]
    attn = getattr(block, 'attn', None)
    if missing or not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise TypeError(f'last block {type(block).__name__} is not a standard open_clip '
                        'ResidualAttentionBlock with nn.MultiheadAttention (packed in_proj)')


@contextmanager
def _fused_mha():
    """Run ``nn.MultiheadAttention`` through ``scaled_dot_product_attention``.

    In inference, PyTorch's MHA "fast path" materialises the full attention
    matrix on CPU (B x heads x N x N: 30 MB per 448x448 ViT-B window, more than
    the L3 cache here); with it off, MHA calls SDPA, which is tiled. Same
    numbers, ~13% faster per window on the CPUs measured (docs/performance.md).
    The flag is global, so it is restored afterwards.
    """
    mha = getattr(torch.backends, 'mha', None)
    if mha is None or not hasattr(mha, 'set_fastpath_enabled'):
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def _resize_dino(patch_pos: torch.Tensor, native_grid: Tuple[int, int], grid: Tuple[int, int]) -> torch.Tensor:
    """Bicubic with ``scale_factor = ((gh + 0.1) / h0, (gw + 0.1) / w0)`` (the DINO-style offset)."""
    (h0, w0), (gh, gw) = native_grid, grid
    return F.interpolate(patch_pos, scale_factor=((gh + 0.1) / h0, (gw + 0.1) / w0),
                         mode='bicubic', align_corners=False)


def _resize_antialias(patch_pos: torch.Tensor, native_grid: Tuple[int, int],
                      grid: Tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic to ``size=grid`` (timm's / GEM's ``resample_abs_pos_embed``).

    PyTorch's antialiased kernel is not the plain bicubic one (it differs even
    when upsampling), so it is its own mode.
    """
    return F.interpolate(patch_pos, size=tuple(grid), mode='bicubic', align_corners=False, antialias=True)


def _resize_size(patch_pos: torch.Tensor, native_grid: Tuple[int, int], grid: Tuple[int, int]) -> torch.Tensor:
    """Plain bicubic to ``size=grid`` (MMSeg's ``resize``: CLIP-DINOiser's, LPOSS's and FLOSS's MaskCLIP)."""
    return F.interpolate(patch_pos, size=tuple(grid), mode='bicubic', align_corners=False)


# Positional-embedding resampling, picked by name (``pos_interp``).
POS_INTERPOLATIONS = {'dino': _resize_dino, 'antialias': _resize_antialias, 'size': _resize_size}


def interpolate_pos_embed(pos_embed: torch.Tensor, native_grid: Tuple[int, int],
                          grid: Tuple[int, int], mode: str = 'dino') -> torch.Tensor:
    """Resize ViT positional embeddings to a grid of gh x gw patches.

    The class position is kept; patch positions are resized bicubically, by
    default with ``scale_factor = ((gh + 0.1) / h0, (gw + 0.1) / w0)`` (the
    DINO-style offset; output gh x gw), or with ``mode='antialias'`` by
    antialiased bicubic to ``size=(gh, gw)``. Returned unchanged when the grid
    matches.
    """
    if mode not in POS_INTERPOLATIONS:
        raise ValueError(f"unknown positional-embedding interpolation '{mode}': "
                         f'expected one of {list(POS_INTERPOLATIONS)}')
    if tuple(grid) == tuple(native_grid):
        return pos_embed
    h0, w0 = native_grid
    gh, gw = grid
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    dim = pos_embed.shape[-1]
    patch_pos = patch_pos.reshape(1, h0, w0, dim).permute(0, 3, 1, 2)
    resize = POS_INTERPOLATIONS[mode]
    try:
        patch_pos = resize(patch_pos, native_grid, grid)
    except RuntimeError:  # bicubic not implemented for this dtype on this device
        patch_pos = resize(patch_pos.float(), native_grid, grid).to(pos_embed.dtype)
    assert patch_pos.shape[-2:] == (gh, gw), (patch_pos.shape, grid)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(gh * gw, dim)
    return torch.cat([cls_pos, patch_pos], dim=0)


@register_tower
class DenseCLIPEncoder(DenseEncoder):
    """The ``DenseEncoder`` of an open_clip ``VisionTransformer`` (OpenAI, OpenCLIP, MetaCLIP, DFN...).

    Args:
        visual: ``open_clip`` ``VisionTransformer`` (``model.visual``).
        fused_attn: use ``scaled_dot_product_attention``; False runs the
            explicit formula (same numbers; needed when attention maps are read).
    """

    kinds = ('openclip_vit',)
    # tokens ahead of the patch tokens: the class token
    num_prefix_tokens = 1

    def __init__(self, visual: nn.Module, fused_attn: bool = True):
        super().__init__(visual, fused_attn)
        ps = visual.patch_size if hasattr(visual, 'patch_size') else visual.conv1.kernel_size
        self.patch_size = tuple(ps) if isinstance(ps, (tuple, list)) else (ps, ps)
        n = visual.positional_embedding.shape[0] - 1
        grid = getattr(visual, 'grid_size', None)
        self.native_grid = tuple(grid) if grid else (int(math.sqrt(n)),) * 2

    @classmethod
    def kind_of(cls, visual: nn.Module) -> Optional[str]:
        if getattr(visual, 'trunk', None) is None and hasattr(visual, 'transformer') and hasattr(visual, 'conv1'):
            return 'openclip_vit'
        return None

    @classmethod
    def check_tower(cls, visual: nn.Module) -> None:
        _check_wrappable(visual)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.visual.proj.shape[1]

    @property
    def blocks(self):
        """The tower's residual blocks (``nn.ModuleList``)."""
        return self.visual.transformer.resblocks

    # -- stages -------------------------------------------------------------
    def pos_embed(self, grid: Tuple[int, int], mode: str = 'dino') -> torch.Tensor:
        """Positional embeddings for a grid, cached per grid and mode (they are weights)."""
        pe = self.visual.positional_embedding
        return self.cached_positions(pe, grid, mode, lambda: interpolate_pos_embed(pe, self.native_grid, grid, mode))

    def embed(self, x: torch.Tensor, pos_interp: str = 'dino') -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patchify, prepend the class token, add positions (resampled by ``pos_interp``,
        a key of ``POS_INTERPOLATIONS``), ``ln_pre``."""
        v = self.visual
        self.check_input(x)
        x = v.conv1(x.to(self.dtype))
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.pos_embed(grid, pos_interp).to(x.dtype)
        return v.ln_pre(x), grid

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Tokens (B, N, width) through the unchanged blocks ``start..stop-1``."""
        blocks = self.visual.transformer.resblocks[start:stop]
        batch_first = getattr(self.visual.transformer, 'batch_first', True)
        if not batch_first:
            x = x.transpose(0, 1)
        with _fused_mha():
            for blk in blocks:
                x = blk(x)
        return x if batch_first else x.transpose(0, 1)

    def qkv(self, x: torch.Tensor, names=('q', 'k', 'v'), block: int = -1) -> Dict[str, torch.Tensor]:
        """Per-head projections of ``ln_1(x)`` in a block (default: the last), (B, heads, N, d)."""
        block = self.visual.transformer.resblocks[block]
        mha = block.attn
        h = block.ln_1(x)
        B, N, C = h.shape
        heads = mha.num_heads
        w = mha.in_proj_weight.chunk(3, dim=0)
        b = mha.in_proj_bias.chunk(3, dim=0) if mha.in_proj_bias is not None else (None,) * 3
        out = {}
        for i, name in enumerate('qkv'):
            if name in names:
                out[name] = F.linear(h, w[i], b[i]).view(B, N, heads, C // heads).transpose(1, 2)
        return out

    def project_heads(self, o: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Per-head outputs (B, heads, N, d) -> ``ls_1(out_proj(concat))`` (B, N, width) of a block."""
        blk = self.visual.transformer.resblocks[block]
        B, H, N, d = o.shape
        o = blk.attn.out_proj(o.transpose(1, 2).reshape(B, N, H * d))
        return blk.ls_1(o) if hasattr(blk, 'ls_1') else o

    def ffn_branch(self, y: torch.Tensor, block: int = -1) -> torch.Tensor:
        """``ls_2(mlp(ln_2(y)))`` of a block: what its FFN adds to the stream."""
        blk = self.visual.transformer.resblocks[block]
        mlp = blk.mlp(blk.ln_2(y))
        return blk.ls_2(mlp) if hasattr(blk, 'ls_2') else mlp

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """``ln_post`` on every token, then ``proj``: (B, N, width) -> (B, N, dim)."""
        return self.visual.ln_post(tokens) @ self.visual.proj

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's pooled embedding of final tokens (B, N, width) -> (B, dim): the projected class token."""
        return self.head(tokens[:, :1])[:, 0]
