"""SCLIP (Wang et al., ECCV 2024): correlative self-attention in the last block.

As the authors' evaluation runs it (method card ``sclip_naclip_resclip_pamr.md``,
section 1; official ``clip/model.py::VisionTransformer.forward/custom_attn``):

* blocks 1..L-1 are CLIP's own;
* the last block's attention is CSA, per head::

      A = softmax(s Q Q^T) + softmax(s K K^T)        s = head_dim ** -0.5

  with q, k, v from ``ln_1(x)`` including ``in_proj_bias`` and the class token
  taking part as query and key. The two softmaxes are summed, **not**
  renormalised (rows sum to 2);
* the residual and the FFN are **kept**: ``x' = x + out_proj(A V)``,
  ``x'' = x' + mlp(ln_2(x'))``; then ``ln_post`` and ``proj`` on every token.

This is not the ClearCLIP paper's "SCLIP-style" baseline (preset ``sclip-style``:
the same attention *without* residual and FFN, under ClearCLIP's protocol).
SCLIP's own protocol (336 short side, 224/112 windows not padded, logit scale
40/50/65, ``area_thd`` on VOC21, PAMR off) lives in ``protocol/methods.py``.

``residual`` and ``ffn`` are switches for ablations; the defaults are SCLIP's.
SCLIP's own whole-image branch (used by no SCLIP config) resizes the patch grid
once, straight to the original size; here whole-image mode always stretches
over the input first, then resizes (NACLIP's two steps; docs/protocol.md, "Other methods").
The attention is computed with the explicit formula in the official order
(``(Q Q^T) s`` then softmax, sum, then ``@ V``), not through a fused kernel,
so fp32 numbers follow the reference to rounding.
"""
import torch

from ..options import check_bool
from .registry import DenseMethod, register_method


def csa_attention(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """SCLIP's correlative self-attention weights (..., N, N) from per-head q, k (..., N, d)."""
    scale = q.shape[-1] ** -0.5
    return (torch.softmax((q @ q.transpose(-2, -1)) * scale, dim=-1)
            + torch.softmax((k @ k.transpose(-2, -1)) * scale, dim=-1))


@register_method('SCLIP')
class SCLIP(DenseMethod):
    """SCLIP's last block: CSA attention, residual and FFN kept.

    Args:
        residual: keep the last block's residual connection (True, SCLIP's).
        ffn: keep the last block's feed-forward network (True, SCLIP's).
    """

    needs_class_token = True

    def __init__(self, residual: bool = True, ffn: bool = True, key: str = 'model.method'):
        self.residual = check_bool(residual, f'{key}.residual')
        self.ffn = check_bool(ffn, f'{key}.ffn')

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        tokens, (gh, gw) = encoder.last_block_input(x)
        t = encoder.qkv(tokens, ('q', 'k', 'v'))
        y = encoder.project_heads(csa_attention(t['q'], t['k']) @ t['v'])
        if self.residual:
            y = tokens + y
        if self.ffn:
            y = y + encoder.ffn_branch(y)
        out = encoder.head(y)
        return out[:, 1:].reshape(out.shape[0], gh, gw, -1)
