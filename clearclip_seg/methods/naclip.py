"""NACLIP (Hajimiri et al., WACV 2025): neighbourhood-aware key-key attention.

As the authors' evaluation runs it (method card ``sclip_naclip_resclip_pamr.md``,
section 2; official ``clip/model.py`` at v2, ``custom_attn``/``gaussian_window``/
``get_attention_addition``):

* blocks 1..L-1 are CLIP's own; only the last block changes;
* ``attn_strategy`` (the per-head attention weights, s = head_dim ** -0.5):

  - ``naclip`` (default): ``softmax(s K K^T + Ω)``; Ω is added unscaled, the
    same for every head;
  - ``nonly``: ``softmax(Ω · s · m)``, m the mean over heads and token pairs
    of ``|q_p| |k_p'|`` (a scalar per window);
  - ``kk``: ``softmax(s K K^T)``;
  - ``csa``: SCLIP's ``softmax(s Q Q^T) + softmax(s K K^T)`` (needs ``arch='vanilla'``);
  - ``vanilla``: CLIP's ``softmax(s Q K^T)``;

* ``arch``: ``reduced`` (default) keeps only ``out_proj(A V)``: no residual, no
  FFN; ``vanilla`` keeps both (SCLIP's placement);
* Ω (``neighbourhood_bias``): ``Ω_ij = exp(-|p_i - p_j|^2 / (2 σ^2))`` between
  patch positions in (row, column) patch units, σ = ``gaussian_std`` (5 patches);
  unnormalised (diagonal 1), no truncation or renormalisation at the borders,
  and a zero row and column for the class token (which still attends and is
  attended to, with bias 0).

Deliberate differences from the official code, none of which changes a
published number:

* Ω is cached per (grid, σ, dtype, device); the official cache is keyed by
  the grid alone, so changing σ on a live model reused a stale Ω.
* ``nonly``'s m is computed per window; the official code builds its zeros
  tensor for batch 1 only and takes one m over the whole batch.

PAMR (10 iterations, dilations (8, 16)), logit scale 40, 336 short side and
whole-image VOC are protocol settings (``protocol/methods.py``), not part of
the method.
"""
import math
from typing import Dict, Tuple

import torch

from ..options import check_number
from .registry import DenseMethod, register_method
from .sclip import csa_attention

ARCHS = ('reduced', 'vanilla')


def neighbourhood_bias(grid: Tuple[int, int], std: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """NACLIP's Ω (N, N), N = 1 + gh * gw: a Gaussian of patch distance, zero class-token row and column.

    Computed as the official ``gaussian_window`` does, in float32:
    ``exp(-((Δr c)^2 + (Δc c)^2))`` with ``c = 1 / (std sqrt 2)``, then cast to ``dtype``.
    """
    gh, gw = grid
    c = 1.0 / (std * math.sqrt(2.0))
    rows = torch.arange(gh, device=device).repeat_interleave(gw)
    cols = torch.arange(gw, device=device).repeat(gh)
    dr = (rows[:, None] - rows[None, :]).float() * c
    dc = (cols[:, None] - cols[None, :]).float() * c
    out = torch.zeros((gh * gw + 1,) * 2, device=device)
    out[1:, 1:] = torch.exp(-(dr ** 2 + dc ** 2))
    return out.to(dtype)


def cached_neighbourhood_bias(cache: Dict[tuple, torch.Tensor], grid: Tuple[int, int], std: float, dtype,
                              device) -> torch.Tensor:
    """``neighbourhood_bias`` through a one-entry ``cache`` (a method's own dict): windows of a run share a grid."""
    key = (tuple(grid), std, dtype, str(device))
    if key not in cache:
        cache.clear()
        cache[key] = neighbourhood_bias(grid, std, dtype, device)
    return cache[key]


def _kk_logits(t, scale):
    return (t['k'] @ t['k'].transpose(-2, -1)) * scale


def _naclip(t, scale, omega):
    return torch.softmax(_kk_logits(t, scale) + omega, dim=-1)


def _nonly(t, scale, omega):
    qn, kn = t['q'].norm(dim=-1), t['k'].norm(dim=-1)                        # (B, heads, N)
    m = (qn[..., :, None] * kn[..., None, :]).mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    return torch.softmax(omega * (scale * m), dim=-1).expand(-1, t['q'].shape[1], -1, -1)


def _kk(t, scale, omega):
    return torch.softmax(_kk_logits(t, scale), dim=-1)


def _csa(t, scale, omega):
    return csa_attention(t['q'], t['k'])


def _vanilla(t, scale, omega):
    return torch.softmax((t['q'] * scale) @ t['k'].transpose(-2, -1), dim=-1)


# name -> (projections read besides v, attention weights fn, uses Ω)
ATTN_STRATEGIES: Dict[str, tuple] = {
    'naclip': (('k',), _naclip, True),
    'nonly': (('q', 'k'), _nonly, True),
    'kk': (('k',), _kk, False),
    'csa': (('q', 'k'), _csa, False),
    'vanilla': (('q', 'k'), _vanilla, False),
}


@register_method('NACLIP')
class NACLIP(DenseMethod):
    """NACLIP's last block: neighbourhood-biased key-key attention, reduced block.

    Args:
        arch: ``reduced`` (no residual, no FFN; NACLIP's) or ``vanilla`` (both kept).
        attn_strategy: ``naclip | nonly | kk | csa | vanilla`` (see the module docstring).
        gaussian_std: σ of Ω in patches (5.0).
    """

    needs_class_token = True

    def __init__(self, arch: str = 'reduced', attn_strategy: str = 'naclip', gaussian_std: float = 5.0,
                 key: str = 'model.method'):
        if arch not in ARCHS:
            raise ValueError(f'{key}.arch={arch!r}: expected one of {list(ARCHS)}')
        if attn_strategy not in ATTN_STRATEGIES:
            raise ValueError(f'{key}.attn_strategy={attn_strategy!r}: expected one of {list(ATTN_STRATEGIES)}')
        if attn_strategy == 'csa' and arch != 'vanilla':
            # the official set_params asserts it: CSA is SCLIP's, with residual and FFN
            raise ValueError(f"{key}.attn_strategy='csa' needs {key}.arch='vanilla' (got {arch!r})")
        self.arch = arch
        self.attn_strategy = attn_strategy
        self.gaussian_std = check_number(gaussian_std, f'{key}.gaussian_std', low=0, low_open=True)
        self._omega: Dict[tuple, torch.Tensor] = {}

    def omega(self, grid: Tuple[int, int], dtype, device) -> torch.Tensor:
        """Ω for a grid, cached (one entry: windows of a run share their grid)."""
        return cached_neighbourhood_bias(self._omega, grid, self.gaussian_std, dtype, device)

    def attention(self, encoder, tokens: torch.Tensor, grid) -> Tuple[torch.Tensor, torch.Tensor]:
        """The last block's attention weights (B, heads, N, N) and values (B, heads, N, d)."""
        names, weights, uses_omega = ATTN_STRATEGIES[self.attn_strategy]
        t = encoder.qkv(tokens, names + ('v',))
        scale = t['v'].shape[-1] ** -0.5
        omega = self.omega(grid, tokens.dtype, tokens.device) if uses_omega else None
        return weights(t, scale, omega), t['v']

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        tokens, (gh, gw) = encoder.last_block_input(x)
        attn, v = self.attention(encoder, tokens, (gh, gw))
        y = encoder.project_heads(attn @ v)
        if self.arch == 'vanilla':
            y = tokens + y
            y = y + encoder.ffn_branch(y)
        out = encoder.head(y)
        return out[:, 1:].reshape(out.shape[0], gh, gw, -1)
