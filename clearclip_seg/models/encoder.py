"""Dense CLIP image encoder: an open_clip ViT whose last block is switchable.

Wraps (does not copy) an ``open_clip`` ``VisionTransformer``. Blocks 0..L-2 run
unchanged; the last block is recomputed from its own weights as

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

from .attention import attend, attention_map, check_mode, needed_projections

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


# Positional-embedding resampling, picked by name (``pos_interp``).
POS_INTERPOLATIONS = {'dino': _resize_dino, 'antialias': _resize_antialias}


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


class DenseCLIPEncoder(nn.Module):
    """Patch features from an open_clip ViT with a configurable last block.

    Args:
        visual: ``open_clip`` ``VisionTransformer`` (``model.visual``).
        attn: attention of the last block, a key of ``ATTENTION_MODES``
            (``qk | qq | kk | vv | qq+kk | identity``). Default ``qq`` (ClearCLIP).
        residual: keep the last block's residual connection. Default False.
        ffn: keep the last block's feed-forward network. Default False.
        fused_attn: use ``scaled_dot_product_attention``; False runs the
            explicit formula (same numbers; needed when attention maps are read).
    """

    # tokens ahead of the patch tokens (the class token); timm-trunk towers have 0 to several
    num_prefix_tokens = 1

    def __init__(self, visual: nn.Module, attn: str = 'qq', residual: bool = False,
                 ffn: bool = False, fused_attn: bool = True):
        super().__init__()
        _check_wrappable(visual)
        self.visual = visual
        self.attn_mode = check_mode(attn)
        self.residual = bool(residual)
        self.ffn = bool(ffn)
        self.fused_attn = fused_attn
        ps = visual.patch_size if hasattr(visual, 'patch_size') else visual.conv1.kernel_size
        self.patch_size = tuple(ps) if isinstance(ps, (tuple, list)) else (ps, ps)
        n = visual.positional_embedding.shape[0] - 1
        grid = getattr(visual, 'grid_size', None)
        self.native_grid = tuple(grid) if grid else (int(math.sqrt(n)),) * 2
        self._pos_cache: Dict[tuple, torch.Tensor] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def embed_dim(self) -> int:
        return self.visual.proj.shape[1]

    # -- stages -------------------------------------------------------------
    def pos_embed(self, grid: Tuple[int, int], mode: str = 'dino') -> torch.Tensor:
        """Positional embeddings for a grid, cached per grid and mode (they are weights)."""
        pe = self.visual.positional_embedding
        key = (tuple(grid), mode, pe.dtype, pe.device, pe.data_ptr(), pe._version)
        if torch.is_grad_enabled():
            return interpolate_pos_embed(pe, self.native_grid, grid, mode)
        if key not in self._pos_cache:
            self._pos_cache.clear()  # one live entry per grid would also do; keep it tiny
            self._pos_cache[key] = interpolate_pos_embed(pe, self.native_grid, grid, mode)
        return self._pos_cache[key]

    def embed(self, x: torch.Tensor, pos_interp: str = 'dino') -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patchify, prepend the class token, add positions (resampled by ``pos_interp``,
        a key of ``POS_INTERPOLATIONS``), ``ln_pre``."""
        v = self.visual
        ph, pw = self.patch_size
        if x.shape[-2] % ph or x.shape[-1] % pw:
            raise ValueError(f'input {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}')
        x = v.conv1(x.to(self.dtype))
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.pos_embed(grid, pos_interp).to(x.dtype)
        return v.ln_pre(x), grid

    @property
    def blocks(self):
        """The tower's residual blocks (``nn.ModuleList``)."""
        return self.visual.transformer.resblocks

    @property
    def num_blocks(self) -> int:
        return len(self.visual.transformer.resblocks)

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

    def last_block_input(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Tokens entering the last block (B, 1 + gh*gw, width) and the grid."""
        x, grid = self.embed(x)
        return self.run_blocks(x, 0, self.num_blocks - 1), grid

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

    def attention_branch(self, x: torch.Tensor, mode: Optional[str] = None) -> torch.Tensor:
        """X_attn: the last block's attention output for ``mode`` (default: the encoder's), before any residual."""
        mode = self.attn_mode if mode is None else check_mode(mode)
        t = self.qkv(x, needed_projections(mode))
        o = attend(mode, t.get('q'), t.get('k'), t['v'], fused=self.fused_attn)
        return self.project_heads(o)

    def last_block(self, x: torch.Tensor, attn: Optional[str] = None, residual: Optional[bool] = None,
                   ffn: Optional[bool] = None) -> torch.Tensor:
        """The last block with the given switches (defaults: the encoder's own)."""
        residual = self.residual if residual is None else residual
        ffn = self.ffn if ffn is None else ffn
        y = self.attention_branch(x, attn)
        if residual:
            y = x + y
        if ffn:
            y = y + self.ffn_branch(y)
        return y

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """``ln_post`` on every token, then ``proj``: (B, N, width) -> (B, N, dim)."""
        return self.visual.ln_post(tokens) @ self.visual.proj

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's pooled embedding of final tokens (B, N, width) -> (B, dim): the projected class token."""
        return self.head(tokens[:, :1])[:, 0]

    # -- public -------------------------------------------------------------
    def forward(self, x: torch.Tensor, return_cls: bool = False):
        """Projected patch features.

        Args:
            x: normalised images (B, 3, H, W), H and W multiples of the patch size.
            return_cls: also return the projected class token (B, dim).

        Returns:
            (B, gh, gw, dim) patch features (not normalised), and the class
            token if asked.
        """
        tokens, (gh, gw) = self.last_block_input(x)
        out = self.head(self.last_block(tokens))
        patches = out[:, 1:].reshape(out.shape[0], gh, gw, -1)
        return (patches, out[:, 0]) if return_cls else patches

    def decompose(self, x: torch.Tensor, mode: Optional[str] = None,
                  attn_map: bool = False) -> Dict[str, torch.Tensor]:
        """The last block's residual and attention components (paper Sec. 3) of images.

        ``decompose_tokens`` of the tokens entering the last block, plus their ``grid``.

        Args:
            x: normalised images (B, 3, H, W), H and W multiples of the patch size.
            mode: attention mode of ``x_attn`` (default: the encoder's).
            attn_map: also return the attention matrix.
        """
        x_res, grid = self.last_block_input(x)
        return dict(self.decompose_tokens(x_res, mode, attn_map), grid=grid)

    def decompose_tokens(self, x_res: torch.Tensor, mode: Optional[str] = None,
                         attn_map: bool = False) -> Dict[str, torch.Tensor]:
        """The last block split into its terms, from the tokens entering it::

            X_sum  = X_res + X_attn          X_attn = ls_1(out_proj(Attn_mode(ln_1(X_res))))
            output = X_sum + FFN(X_sum)      (residual and FFN on)

        Args:
            x_res: tokens entering the last block (B, N, width): the residual stream.
            mode: attention mode of ``x_attn`` (default: the encoder's); the
                encoder itself is not changed.
            attn_map: also return the attention matrix.

        Returns:
            ``x_res``; ``x_attn`` (the attention branch, no residual);
            ``x_res+x_attn`` (the block's output with the residual on and the
            FFN off); ``ffn`` (``ls_2(mlp(ln_2(x_res + x_attn)))``, what the FFN
            adds to that sum); ``output`` (the block under this encoder's
            residual and FFN switches, with ``mode``); with ``attn_map`` the
            (B, heads, N, N) matrix (a sum of softmaxes for ``qq+kk``).
        """
        mode = self.attn_mode if mode is None else check_mode(mode)
        x_attn = self.attention_branch(x_res, mode)
        total = x_res + x_attn
        ffn = self.ffn_branch(total)
        y = total if self.residual else x_attn
        if self.ffn:
            y = y + (ffn if self.residual else self.ffn_branch(y))
        out = {'x_res': x_res, 'x_attn': x_attn, 'x_res+x_attn': total, 'ffn': ffn, 'output': y}
        if attn_map:
            t = self.qkv(x_res)
            out['attn_map'] = attention_map(mode, t['q'], t['k'], t['v'])
        return out
