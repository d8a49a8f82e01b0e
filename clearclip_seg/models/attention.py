"""Attention variants for CLIP's last block, picked by name.

Every mode is ``sum_i softmax(a_i b_i^T * head_dim**-0.5) v`` over a small list
of (a, b) pairs drawn from {q, k, v}; ``identity`` has no pairs and returns
``v`` (each token attends only to itself, as in MaskCLIP). Keeping the modes as
data means one fused path (``scaled_dot_product_attention``) and one plain
path (explicit softmax) serve them all, and the two can be tested against
each other.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

ATTENTION_MODES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    'qk': (('q', 'k'),),                 # vanilla CLIP
    'qq': (('q', 'q'),),                 # ClearCLIP
    'kk': (('k', 'k'),),
    'vv': (('v', 'v'),),
    'qq+kk': (('q', 'q'), ('k', 'k')),   # SCLIP-style
    'identity': (),                      # MaskCLIP
}


def check_mode(mode: str) -> str:
    if mode not in ATTENTION_MODES:
        raise ValueError(
            f"unknown attention mode '{mode}' (model.last_block.attn): "
            f"expected one of {list(ATTENTION_MODES)}")
    return mode


def needed_projections(mode: str) -> Tuple[str, ...]:
    """Which of q, k, v a mode reads: ``identity`` never computes q or k."""
    used = {name for pair in ATTENTION_MODES[check_mode(mode)] for name in pair} | {'v'}
    return tuple(n for n in 'qkv' if n in used)


def attention_weights(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain ``softmax(a b^T * d**-0.5)`` for tensors shaped (..., N, d)."""
    scale = a.shape[-1] ** -0.5
    return torch.softmax((a * scale) @ b.transpose(-2, -1), dim=-1)


def attention_map(mode: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The (..., N, N) matrix a mode applies to ``v`` (a sum of softmaxes)."""
    t = {'q': q, 'k': k, 'v': v}
    pairs = ATTENTION_MODES[check_mode(mode)]
    if not pairs:
        n = v.shape[-2]
        return torch.eye(n, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], n, n)
    return sum(attention_weights(t[a], t[b]) for a, b in pairs)


def attend(mode: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           fused: bool = True) -> torch.Tensor:
    """Apply an attention mode to per-head tensors shaped (B, heads, N, d).

    Args:
        mode: a key of ``ATTENTION_MODES``.
        q, k, v: per-head projections (``q``/``k`` may be None when the mode
            does not read them).
        fused: use ``F.scaled_dot_product_attention`` (same result as the plain
            formula, less memory, faster); ``False`` runs the explicit formula.
    """
    t = {'q': q, 'k': k, 'v': v}
    out = None
    for a, b in ATTENTION_MODES[check_mode(mode)]:
        if fused:
            o = F.scaled_dot_product_attention(t[a], t[b], v)
        else:
            o = attention_weights(t[a], t[b]) @ v
        out = o if out is None else out + o
    return v if out is None else out
