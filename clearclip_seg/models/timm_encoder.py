"""Dense features from open_clip towers built on a timm trunk (SigLIP/SigLIP2, EVA02, PE).

open_clip wraps these as ``TimmModel``: ``visual.trunk`` is a timm
``VisionTransformer`` (SigLIP: fused qkv, q/k norms, no class token, an
attention-pool "MAP" head) or ``Eva`` (EVA02, PE: fused or separate q/k/v,
rotary position embeddings, layer scale, class and register tokens), and
``visual.head`` an optional extra projection. ``TimmCLIPEncoder`` implements
the ``DenseEncoder`` stages (``embed``, ``run_blocks``, ``qkv``,
``project_heads``, ``ffn_branch``, ``head``, ``pooled``) as a sibling of the
open_clip ViT's ``DenseCLIPEncoder``, so the methods of
``clearclip_seg.methods`` run on it unchanged (tower kinds ``timm_vit`` and
``timm_eva``).

What differs from the open_clip ViT, and how it is handled:

* q and k are returned after the trunk's ``q_norm``/``k_norm`` and its rotary
  embedding (patch tokens only, prefix tokens untouched, as the trunk does),
  so every q-q, k-k or q-k product sees the same q and k as the trunk's own
  attention; grouped k/v heads are repeated to the query heads.
* the attention output goes through the block's output norm (EVA02's
  ``scale_attn_inner``), ``proj`` and layer scale (``ls1`` / ``gamma_1``).
* zero, one or several prefix tokens (class, registers): ``num_prefix_tokens``.
* absolute positions are resized per grid as for the open_clip ViT (the
  prefix rows kept); rotary embeddings are recomputed for the grid.
* the dense projection (``head``) is the trunk's final norm, then per token
  what the pooled path does after pooling (``fc_norm``, the trunk's ``head``
  and open_clip's ``visual.head``). With a MAP head, a token goes through the
  pool's value path instead of the pool (docs/protocol.md, "Backbones"):
  ``map_head='full'``: ``u = proj(W_v t + b_v)``, ``u + mlp(norm(u))``;
  ``map_head='proj'``: ``u`` alone. This is what the pool returns for an
  image whose tokens all equal ``t`` (attention weights are then uniform over
  identical values), the analogue of MaskCLIP's value-embedding trick.
"""
import copy
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dense_encoder import DenseEncoder, register_tower
from .encoder import interpolate_pos_embed

# Dense projection through a MAP (attention-pool) head, picked by name.
MAP_HEADS = ('full', 'proj')


def _timm_classes():
    from timm.layers import Attention, AttentionPoolLatent, AttentionRope, PatchEmbed
    from timm.models.eva import Eva, EvaAttention, EvaBlock
    from timm.models.vision_transformer import Block, VisionTransformer
    return dict(trunks=(VisionTransformer, Eva), blocks=(Block, EvaBlock),
                attns=(Attention, EvaAttention, AttentionRope), pool=AttentionPoolLatent, patch=PatchEmbed)


def check_timm_tower(visual: nn.Module) -> None:
    """Fail at wrap time, in one line, on a timm-trunk layout this encoder does not know."""
    trunk = getattr(visual, 'trunk', None)
    if trunk is None or not hasattr(visual, 'head'):
        raise TypeError(f'{type(visual).__name__} is not an open_clip TimmModel (no trunk/head)')
    c = _timm_classes()
    name = type(trunk).__name__
    if not isinstance(trunk, c['trunks']):
        raise TypeError(f'timm trunk {name} is not supported: expected a timm VisionTransformer or Eva '
                        '(ConvNeXt/ResNet trunks have no patch tokens)')
    if not isinstance(trunk.patch_embed, c['patch']) or not isinstance(trunk.patch_embed.proj, nn.Conv2d):
        raise TypeError(f'{name}.patch_embed is {type(trunk.patch_embed).__name__}: expected a timm PatchEmbed '
                        'with a Conv2d (hybrid stems are not supported)')
    for i, blk in enumerate(trunk.blocks):
        if not isinstance(blk, c['blocks']):
            raise TypeError(f'{name}.blocks[{i}] is {type(blk).__name__}: expected a pre-norm timm Block or '
                            'EvaBlock (post-norm and parallel blocks are not supported)')
        attn = blk.attn
        if not isinstance(attn, c['attns']):
            raise TypeError(f'{name}.blocks[{i}].attn is {type(attn).__name__}: expected timm Attention, '
                            'EvaAttention or AttentionRope')
        if getattr(attn, 'gate', None) is not None:
            raise TypeError(f'{name}.blocks[{i}].attn is gated: gated attention is not supported')
    if 'pool' in dict(visual.head.named_children()):
        raise TypeError('open_clip TimmModel with an attention-pool adapter head (timm_pool abs_attn/rot_attn) '
                        'is not supported')
    pool = getattr(trunk, 'attn_pool', None)
    if pool is not None:
        if not isinstance(pool, c['pool']):
            raise TypeError(f'{name}.attn_pool is {type(pool).__name__}: expected AttentionPoolLatent (MAP)')
        if pool.pos_embed is not None:
            raise TypeError(f'{name}.attn_pool has its own position embedding: not supported')


def resize_abs_pos(pos: torch.Tensor, num_prefix: int, native_grid: Tuple[int, int],
                   grid: Tuple[int, int], mode: str = 'dino') -> torch.Tensor:
    """Resize absolute positions (num_prefix + h0*w0, C) to a grid, the prefix rows kept.

    The patch rows are resampled exactly as for the open_clip ViT
    (``interpolate_pos_embed``, which keeps one leading row).
    """
    if tuple(grid) == tuple(native_grid):
        return pos
    kw = {} if mode == 'dino' else dict(mode=mode)
    if num_prefix == 0:  # give it a leading row to keep, then drop it
        return interpolate_pos_embed(torch.cat([pos[:1] * 0, pos]), native_grid, grid, **kw)[1:]
    return torch.cat([pos[:num_prefix - 1], interpolate_pos_embed(pos[num_prefix - 1:], native_grid, grid, **kw)])


def rope_for_grid(rope: nn.Module, grid: Tuple[int, int]) -> torch.Tensor:
    """The trunk's rotary embedding recomputed for a grid (the cached one at its own grid)."""
    native = getattr(rope, 'feat_shape', None)
    if native is not None and tuple(native) == tuple(grid):
        return rope.get_embed()
    if native is None:  # no cache: built from the frequency bands per shape
        return rope.get_embed(shape=list(grid))
    # a cached rope ignores ``shape``; a copy re-cached for this grid keeps the trunk's untouched
    other = copy.deepcopy(rope)
    other.update_feat_shape(list(grid))
    return other.get_embed()


def _layer_scale(blk: nn.Module, y: torch.Tensor, which: int) -> torch.Tensor:
    """timm Block's ``ls1``/``ls2`` or EvaBlock's ``gamma_1``/``gamma_2``."""
    ls = getattr(blk, f'ls{which}', None)
    if ls is not None:
        return ls(y)
    gamma = getattr(blk, f'gamma_{which}', None)
    return y if gamma is None else gamma * y


def _projections(attn: nn.Module) -> Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """(weight, bias) of q, k and v, whether fused (``qkv``, EVA's split biases) or separate."""
    fused = getattr(attn, 'qkv', None)
    if fused is None:
        return {n: (getattr(attn, f'{n}_proj').weight, getattr(attn, f'{n}_proj').bias) for n in 'qkv'}
    bias = fused.bias
    if bias is None and getattr(attn, 'q_bias', None) is not None:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))  # EvaAttention: zero k bias buffer
    weights = fused.weight.chunk(3, dim=0)
    biases = bias.chunk(3, dim=0) if bias is not None else (None,) * 3
    return {n: (weights[i], biases[i]) for i, n in enumerate('qkv')}


@register_tower
class TimmCLIPEncoder(DenseEncoder):
    """The ``DenseEncoder`` of an open_clip timm-trunk tower.

    Args:
        visual: open_clip ``TimmModel`` (``model.visual``) whose trunk is a timm
            ``VisionTransformer`` or ``Eva``.
        fused_attn: as ``DenseEncoder``.
        map_head: dense projection through a MAP head, ``'full'`` (value path,
            output projection and the head's norm/MLP residual; default) or
            ``'proj'`` (no MLP). Unused by towers without a MAP head.
    """

    kinds = ('timm_vit', 'timm_eva')
    tower_options = ('map_head',)

    def __init__(self, visual: nn.Module, fused_attn: bool = True, map_head: str = 'full'):
        if map_head not in MAP_HEADS:
            raise ValueError(f"unknown MAP-head projection '{map_head}' (model.clip.map_head): "
                             f'expected one of {list(MAP_HEADS)}')
        super().__init__(visual, fused_attn)
        self.map_head = map_head
        pe = visual.trunk.patch_embed
        self.patch_size = tuple(pe.patch_size)
        self.native_grid = tuple(pe.grid_size)
        self._rope_cache: Dict[tuple, torch.Tensor] = {}
        self._grid: Optional[Tuple[int, int]] = None
        self._embed_dim: Optional[int] = None

    @classmethod
    def kind_of(cls, visual: nn.Module) -> Optional[str]:
        trunk = getattr(visual, 'trunk', None)
        if trunk is None:
            return None
        from timm.models.eva import Eva
        from timm.models.vision_transformer import VisionTransformer
        if isinstance(trunk, Eva):
            return 'timm_eva'
        if isinstance(trunk, VisionTransformer):
            return 'timm_vit'
        raise TypeError(f'timm trunk {type(trunk).__name__} is not supported: expected a timm '
                        'VisionTransformer (SigLIP) or Eva (EVA02, PE); convolutional trunks have no patch tokens')

    @classmethod
    def check_tower(cls, visual: nn.Module) -> None:
        check_timm_tower(visual)

    # -- layout ---------------------------------------------------------------
    @property
    def trunk(self) -> nn.Module:
        return self.visual.trunk

    @property
    def num_prefix_tokens(self) -> int:
        """Class and register tokens ahead of the patch tokens (0 for SigLIP)."""
        return int(self.trunk.num_prefix_tokens)

    @property
    def dtype(self) -> torch.dtype:
        return self.trunk.patch_embed.proj.weight.dtype

    @property
    def embed_dim(self) -> int:
        if self._embed_dim is None:
            width = self.trunk.patch_embed.proj.out_channels
            with torch.no_grad():
                probe = torch.zeros(1, 1, width, dtype=self.dtype, device=self.trunk.patch_embed.proj.weight.device)
                self._embed_dim = int(self.head(probe).shape[-1])
        return self._embed_dim

    @property
    def blocks(self):
        return self.trunk.blocks

    # -- positions ------------------------------------------------------------
    def pos_embed(self, grid: Tuple[int, int], mode: str = 'dino') -> Optional[torch.Tensor]:
        """Absolute positions for a grid (prefix rows first when the trunk embeds them), or None."""
        pe = self.trunk.pos_embed
        if pe is None:
            return None
        npt = 0 if self.trunk.no_embed_class else self.num_prefix_tokens
        return self.cached_positions(pe, grid, mode, lambda: resize_abs_pos(pe[0], npt, self.native_grid, grid, mode))

    def rope(self, grid: Optional[Tuple[int, int]] = None) -> Optional[torch.Tensor]:
        """The rotary embedding for a grid (default: the last embedded one), or None."""
        rope = getattr(self.trunk, 'rope', None)
        if rope is None:
            return None
        grid = tuple(grid or self._grid)
        buf = getattr(rope, 'bands', None)
        key = (grid, None if buf is None else (buf.device, buf.dtype))
        if key not in self._rope_cache:
            self._rope_cache.clear()
            self._rope_cache[key] = rope_for_grid(rope, grid)
        return self._rope_cache[key]

    def _rope_for(self, x: torch.Tensor, block: int) -> Optional[torch.Tensor]:
        if getattr(self.trunk, 'rope', None) is None:
            return None
        n = x.shape[1] - self.num_prefix_tokens
        grid = self._grid
        if grid is None or grid[0] * grid[1] != n:
            # not the window this encoder last embedded: only a square grid can be inferred
            side = int(round(n ** 0.5))
            if side * side != n:
                raise ValueError(f'{x.shape[1]} tokens do not match the last embedded grid {self._grid} '
                                 f'(+{self.num_prefix_tokens} prefix tokens): rotary positions are unknown; '
                                 'call embed() on the window first')
            grid = (side, side)
        rope = self.rope(grid)
        if getattr(self.trunk, 'rope_mixed', False):  # one embedding per depth
            rope = rope[block % self.num_blocks]
        return rope

    # -- stages -------------------------------------------------------------
    def embed(self, x: torch.Tensor, pos_interp: str = 'dino') -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patchify, prepend the prefix tokens, add positions, ``norm_pre``; remembers the grid."""
        t = self.trunk
        self.check_input(x)
        # the trunk's PatchEmbed asserts its training size; its conv and norm take any multiple
        x = t.patch_embed.proj(x.to(self.dtype))
        grid = tuple(x.shape[-2:])
        x = t.patch_embed.norm(x.flatten(2).transpose(1, 2))
        prefix = [tok.to(x.dtype).expand(x.shape[0], -1, -1) for tok in (t.cls_token, t.reg_token)
                  if tok is not None]
        pos = self.pos_embed(grid, pos_interp)
        if t.no_embed_class:  # positions for the patches only, prefix tokens added after
            x = x + pos.to(x.dtype) if pos is not None else x
            x = torch.cat(prefix + [x], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1)
            x = x + pos.to(x.dtype) if pos is not None else x
        self._grid = grid
        return t.norm_pre(x), grid

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Tokens (B, N, width) through the unchanged blocks ``start..stop-1``."""
        for i in range(*slice(start, stop).indices(self.num_blocks)):
            blk = self.trunk.blocks[i]
            rope = self._rope_for(x, i)
            x = blk(x) if rope is None else blk(x, rope=rope)
        return x

    def qkv(self, x: torch.Tensor, names=('q', 'k', 'v'), block: int = -1) -> Dict[str, torch.Tensor]:
        """Per-head q, k, v of ``norm1(x)`` in a block, (B, heads, N, d).

        q and k come after the trunk's q/k norms and rotary embedding, so any
        product of them is the one the trunk's attention would form.
        """
        blk = self.trunk.blocks[block]
        attn = blk.attn
        h = blk.norm1(x)
        B, N, _ = h.shape
        lin = _projections(attn)
        rope = self._rope_for(x, block) if {'q', 'k'} & set(names) else None
        npt = getattr(attn, 'num_prefix_tokens', self.num_prefix_tokens)
        groups = attn.num_heads // getattr(attn, 'num_kv_heads', attn.num_heads)
        out = {}
        for name in 'qkv':
            if name not in names:
                continue
            w, b = lin[name]
            t = F.linear(h, w, b).view(B, N, -1, attn.head_dim).transpose(1, 2)
            if name in 'qk':
                t = (attn.q_norm if name == 'q' else attn.k_norm)(t)
                if rope is not None:
                    from timm.layers import apply_rot_embed_cat
                    half = getattr(attn, 'rotate_half', False)
                    t = torch.cat([t[:, :, :npt], apply_rot_embed_cat(t[:, :, npt:], rope, half=half)],
                                  dim=2).type_as(t)
            if name != 'q' and groups > 1:  # grouped-query attention: one k/v head per group of q heads
                t = t.repeat_interleave(groups, dim=1)
            out[name] = t
        return out

    def project_heads(self, o: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Per-head outputs (B, heads, N, d) -> layer-scaled ``proj(norm(concat))`` (B, N, width)."""
        blk = self.trunk.blocks[block]
        B, H, N, d = o.shape
        y = blk.attn.proj(blk.attn.norm(o.transpose(1, 2).reshape(B, N, H * d)))
        return _layer_scale(blk, y, 1)

    def ffn_branch(self, y: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Layer-scaled ``mlp(norm2(y))`` of a block: what its FFN adds to the stream."""
        blk = self.trunk.blocks[block]
        return _layer_scale(blk, blk.mlp(blk.norm2(y)), 2)

    def map_value(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token MAP value path (tokens already through the trunk's final norm)."""
        pool = self.trunk.attn_pool
        width = pool.kv.weight.shape[0] // 2
        bias = pool.kv.bias[width:] if pool.kv.bias is not None else None
        u = pool.proj(F.linear(tokens, pool.kv.weight[width:], bias))  # heads concatenated as in the pool
        if self.map_head == 'full' and pool.mlp is not None:
            u = u + pool.mlp(pool.norm(u))
        return u

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Dense projection of every token: (B, N, width) -> (B, N, dim).

        The trunk's final norm, the MAP value path when the trunk pools with
        MAP, then what follows the pool: ``fc_norm``, the trunk's ``head``,
        open_clip's ``visual.head``.
        """
        t = self.trunk
        x = t.norm(tokens)
        if getattr(t, 'attn_pool', None) is not None:
            x = self.map_value(x)
        x = t.head(t.fc_norm(x))
        return self.visual.head(x)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's own pooled embedding of final tokens (B, N, width) -> (B, dim)."""
        return self.visual.head(self.trunk.forward_head(self.trunk.norm(tokens)))
