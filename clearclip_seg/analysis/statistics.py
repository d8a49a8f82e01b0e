"""Per-window statistics of the last block: component norms and attention entropy (paper Figs. 2-3)."""
import math
from typing import Dict, Optional, Sequence

import torch

from ..models.attention import attention_map, check_mode
from .components import LastBlockInputCache


def frobenius_norm(tokens: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of each token matrix, in float64.

    Args:
        tokens: (B, N, C) tokens (all N tokens, the class token included).

    Returns:
        (B,) float64 norms ``sqrt(sum_ij x_ij^2)``.
    """
    return torch.linalg.matrix_norm(tokens.double(), ord='fro', dim=(-2, -1))


def normalized_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of each attention row, in float64.

    ``H(p) = -sum_j p_j log p_j / log N`` with ``0 log 0 = 0``: 1 for a uniform
    row, 0 for a one-hot row (identity attention). Rows are divided by their
    sum first, so a sum of softmaxes (``qq+kk``, rows summing to 2) is read as
    the average of its two distributions.

    Args:
        attn: (..., N_query, N) non-negative attention weights.

    Returns:
        (..., N_query) float64 entropies in [0, 1].
    """
    p = attn.double()
    n = p.shape[-1]
    p = p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    if n < 2:
        return torch.zeros(p.shape[:-1], dtype=torch.float64, device=p.device)
    return -torch.xlogy(p, p).sum(dim=-1) / math.log(n)


def qkv_float64(encoder, x_res: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The last block's per-head q, k, v (B, heads, N, d), cast to float64."""
    return {name: t.double() for name, t in encoder.qkv(x_res).items()}


def attention_map_float64(encoder, x_res: torch.Tensor, mode: str,
                          qkv: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """The last block's attention matrix for ``mode``, computed in float64.

    The projections come from the model in its own precision; the scaled
    products and the softmax are done in float64.

    Args:
        encoder: a ``DenseEncoder``.
        x_res: tokens entering the last block (B, N, C).
        mode: attention mode.
        qkv: :func:`qkv_float64` of ``x_res``, to share between modes.

    Returns:
        (B, heads, N, N) float64 attention weights (a sum of softmaxes for ``qq+kk``).
    """
    t = qkv if qkv is not None else qkv_float64(encoder, x_res)
    return attention_map(check_mode(mode), t['q'], t['k'], t['v'])


@torch.no_grad()
def window_statistics(encoder, windows: Sequence[torch.Tensor], modes: Sequence[str],
                      cache: Optional[LastBlockInputCache] = None) -> Dict[str, Dict]:
    """Norms and attention entropy of the last block, averaged over an image's windows.

    Args:
        encoder: a ``DenseEncoder``.
        windows: (1, 3, h, w) padded windows of one image (``slide.iter_windows``).
        modes: attention modes.
        cache: reuse blocks 0..L-2 across passes (:class:`LastBlockInputCache`).

    Returns:
        Per mode: ``x_res_norm``, ``x_attn_norm`` (Frobenius norms over all
        tokens, mean over windows), ``attn_to_res`` (mean of the per-window
        ratio), ``entropy`` (normalised entropy, mean over heads, query tokens
        and windows) and ``entropy_per_head`` (list, mean over query tokens and
        windows).
    """
    acc = {m: dict(x_res_norm=0.0, x_attn_norm=0.0, attn_to_res=0.0, entropy=0.0, entropy_per_head=None)
           for m in modes}
    count = 0
    last_block_input = cache or encoder.last_block_input
    for win in windows:
        x_res, _ = last_block_input(win)
        res_norm = frobenius_norm(x_res)
        qkv = qkv_float64(encoder, x_res)
        for m in modes:
            attn_norm = frobenius_norm(encoder.attention_branch(x_res, m))
            ent = normalized_entropy(attention_map_float64(encoder, x_res, m, qkv))  # (B, heads, N)
            a = acc[m]
            a['x_res_norm'] += res_norm.sum().item()
            a['x_attn_norm'] += attn_norm.sum().item()
            a['attn_to_res'] += (attn_norm / res_norm).sum().item()
            a['entropy'] += ent.mean(dim=(1, 2)).sum().item()
            per_head = ent.mean(dim=2).sum(dim=0)
            a['entropy_per_head'] = per_head if a['entropy_per_head'] is None else a['entropy_per_head'] + per_head
        count += win.shape[0]
    if not count:
        raise ValueError('no windows to analyse')
    out = {}
    for m, a in acc.items():
        out[m] = dict(x_res_norm=a['x_res_norm'] / count, x_attn_norm=a['x_attn_norm'] / count,
                      attn_to_res=a['attn_to_res'] / count, entropy=a['entropy'] / count,
                      entropy_per_head=(a['entropy_per_head'] / count).tolist())
    return out
