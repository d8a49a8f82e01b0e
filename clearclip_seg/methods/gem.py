"""GEM (Grounding Everything Module, Bousselham et al., CVPR 2024) as a registered method.

The last ``depth - 1`` blocks (6 by default: blocks 7-12 of ViT-B/16, 19-24 of
ViT-L/14) each add a self-self attention branch next to the unchanged tower.
With z_l the ordinary residual stream and s the first GEM block::

    x_gem = z_{s-1};   for l = s..L:  x_gem = x_gem + SS_l(ln_1^l(z_{l-1}))
    features = ln_post(x_gem) @ proj, class token dropped

so the branch reads the *original* stream, never its own, and has no MLP. SS_l
projects Y = ln_1(z_{l-1}) (class token included) to per-head q, k, v and, for
each p in (q, k, v), normalises, runs ``ss_attn_iter`` rounds of
``p <- softmax(t p^ p^T) p^`` and ends with A_p = softmax(t p^ p^T) on the
normalised result; the output is out_proj(mean_p A_p v) with the raw v. The
inverse temperature t is ``ss_attn_temp`` or, by default, mean_tokens ||Y||_2
/ sqrt(d_head): one scalar per window and block.

Choices (read from WalBouss/GEM's ``gem/`` and ClearCLIP's harness, mc-lan/ClearCLIP):

* **Harness.** GEM's authors ship no segmentation benchmark; the published
  per-benchmark mIoU (ClearCLIP's Table 2, "GEM" rows) come from ClearCLIP's
  mmseg harness with its copy of GEM, so that is the protocol followed: the
  ClearCLIP protocol (resize 448, slide 448/224, Cityscapes 224/224, 80
  templates, logit scale 50, ClearCLIP's background thresholds), no min-max
  normalisation, no background softmax recipe.
* **ignore_residual.** ClearCLIP's copy adds ``ignore_residual``: True keeps only
  the last block's SS output (the "GEM + ClearCLIP" rows, as far as the card
  can tell). The default is False, GEM as its authors define it ("GEM" rows).
  With True only the last block's SS branch is computed (the others cannot
  reach the output).
* **Positional embeddings** are resampled the way GEM does (``pos_interp=
  'antialias'``: antialiased bicubic to the grid), not with the DINO-style
  offset the other methods use: at 448 x 448 windows it changes every token.
* **Sharing.** In GEM blocks q, k and v are projected once and feed both the
  ordinary attention (for z_l) and the SS branch; the last block's ordinary
  attention and MLP are never computed (nothing reads them).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from ..models.encoder import POS_INTERPOLATIONS
from ..options import check_bool, check_number
from .registry import DenseMethod, register_method


def _scaled_self_scores(p: torch.Tensor, inv_temp) -> torch.Tensor:
    """``(p p^T) * inv_temp``, scaled in place when that gives the same dtype (bit for bit the same numbers,
    one (N, N) matrix fewer per call: a fresh matrix of that size costs page faults on a CPU)."""
    scores = p @ p.transpose(-2, -1)
    if not torch.is_tensor(inv_temp) or torch.result_type(scores, inv_temp) == scores.dtype:
        return scores.mul_(inv_temp)
    return scores * inv_temp


def self_self_weights(p: torch.Tensor, inv_temp, iters: int = 1) -> torch.Tensor:
    """GEM's self-self attention matrix of one projection p (B, heads, N, d) -> (B, heads, N, N)."""
    for _ in range(iters):
        p = F.normalize(p, dim=-1)
        p = torch.softmax(_scaled_self_scores(p, inv_temp), dim=-1) @ p
    p = F.normalize(p, dim=-1)
    return torch.softmax(_scaled_self_scores(p, inv_temp), dim=-1)


def self_self_attention(y: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        temp: Optional[float] = None, iters: int = 1) -> torch.Tensor:
    """Per-head SS output (B, heads, N, d): mean over p in (v, k, q) of A_p v.

    Args:
        y: the block's ``ln_1`` output (B, N, C): its token norms set the
            adaptive inverse temperature when ``temp`` is None.
        q, k, v: per-head projections of ``y``.
        temp: fixed inverse temperature (GEM's ``ss_attn_temp``), or None.
        iters: GEM's ``ss_attn_iter``.
    """
    if temp is None:
        inv_temp = y.norm(dim=-1).mean(dim=-1).view(-1, 1, 1, 1) * q.shape[-1] ** -0.5
    else:
        inv_temp = temp
    # summed in GEM's order (v, k, q) so rounding matches (in place: the same sums)
    out = self_self_weights(v, inv_temp, iters) @ v
    out += self_self_weights(k, inv_temp, iters) @ v
    out += self_self_weights(q, inv_temp, iters) @ v
    return out.div_(3)


@register_method('GEM')
class GEM(DenseMethod):
    """GEM: a self-self attention path over the last ``depth - 1`` blocks.

    Args:
        depth: GEM's ``gem_depth`` (7): the last ``depth - 1`` blocks get the SS branch.
        ss_attn_iter: self-self iterations before the final assignment (1).
        ss_attn_temp: fixed inverse temperature; None = adaptive (GEM's default).
        ignore_residual: keep only the last block's SS output (ClearCLIP's variant).
        pos_interp: positional-embedding resampling, ``'antialias'`` (GEM's) or ``'dino'``.
    """

    needs_class_token = True
    # the SS branch reads open_clip's ``ln_1`` and packed ``in_proj`` (GEM's own rounding)
    tower_kinds = ('openclip_vit',)

    def __init__(self, depth: int = 7, ss_attn_iter: int = 1, ss_attn_temp: Optional[float] = None,
                 ignore_residual: bool = False, pos_interp: str = 'antialias', key: str = 'model.method'):
        self._key = key
        self.depth = check_number(depth, f'{key}.depth', low=2, integer=True)
        self.ss_attn_iter = check_number(ss_attn_iter, f'{key}.ss_attn_iter', low=0, integer=True)
        self.ss_attn_temp = (None if ss_attn_temp is None
                             else check_number(ss_attn_temp, f'{key}.ss_attn_temp', low=0, low_open=True))
        self.ignore_residual = check_bool(ignore_residual, f'{key}.ignore_residual')
        if pos_interp not in POS_INTERPOLATIONS:
            raise ValueError(f'{key}.pos_interp={pos_interp!r}: expected one of {list(POS_INTERPOLATIONS)}')
        self.pos_interp = pos_interp

    def first_block(self, num_blocks: int) -> int:
        """0-idx of the first GEM block."""
        if self.depth - 1 > num_blocks:
            raise ValueError(f'{self._key}.depth={self.depth}: expected <= {num_blocks + 1} '
                             f'for a {num_blocks}-block tower')
        return num_blocks - (self.depth - 1)

    def bind(self, encoder) -> None:
        self.check_tower(encoder)
        self.first_block(encoder.num_blocks)

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        L = encoder.num_blocks
        s = self.first_block(L)
        z, (gh, gw) = encoder.embed(x, self.pos_interp)
        z = encoder.run_blocks(z, 0, s)
        gem = None if self.ignore_residual else z
        for i in range(s, L):
            last = i == L - 1
            if self.ignore_residual and not last:  # this block's SS cannot reach the output
                z = encoder.run_blocks(z, i, i + 1)
                continue
            blk = encoder.blocks[i]
            y = blk.ln_1(z)
            q, k, v = self._project(blk, y)
            ss = encoder.project_heads(self_self_attention(y, q, k, v, self.ss_attn_temp, self.ss_attn_iter), i)
            gem = ss if self.ignore_residual else gem + ss
            if not last:  # the ordinary block, from the same q, k, v
                z = z + encoder.project_heads(F.scaled_dot_product_attention(q, k, v), i)
                z = z + encoder.ffn_branch(z, i)
        out = encoder.head(gem)
        return out[:, 1:].reshape(out.shape[0], gh, gw, -1)

    @staticmethod
    def _project(blk, y: torch.Tensor):
        """Per-head q, k, v (B, heads, N, d) from one packed in_proj of ``y``."""
        mha = blk.attn
        B, N, C = y.shape
        qkv = F.linear(y, mha.in_proj_weight, mha.in_proj_bias)
        # one copy into (3, B, heads, N, d): the nine N x N products and normalisations that read q, k and v
        # then run on contiguous operands (same numbers, fewer hidden copies)
        qkv = qkv.view(B, N, 3, mha.num_heads, C // mha.num_heads).permute(2, 0, 3, 1, 4).contiguous()
        return qkv[0], qkv[1], qkv[2]
