"""ITACLIP (Aydın et al., CVPRW 2025): intermediate attention in the last block, image engineering.

As the authors' evaluation runs it (method card ``itaclip_trident_cliptrase.md``,
sections 1.2-1.3; official repository m-arda-aydn/ITACLIP at 521a33c,
``clip/model.py::VisionTransformer.forward`` and ``itaclip_segmentor.py::forward_feature``):

* **Last block.** Blocks 1..L-1 run unchanged. From the normed input of blocks
  ``intermediate_layers`` (0-based 6, 7, 9: the official 1-based [7, 8, 10],
  hard-coded for every depth) the per-head map::

      A = softmax(s Q Q^T) + softmax(s K K^T)        s = head_dim ** -0.5

  is computed (CLS included as query and key; rows sum to 2) and averaged over
  those blocks. The last block's own map A_L (same formula) is mixed as
  ``0.5 * A_L + 0.5 * mean``, not renormalised; its output keeps the
  **residual** and drops the **FFN**: ``x + out_proj(A V)``, then ``ln_post``
  and ``proj`` on every token. ``attn_self=False`` uses softmax(s Q K^T) instead.
* **Image engineering** (``img_engineering``). Each window is encoded five
  times: as it is, in grayscale, blurred, flipped upside down and flipped
  left-right. Grayscale (0.2989 R + 0.587 G + 0.114 B, repeated to three
  channels) and the Gaussian blur (11 x 11, sigma 5, reflection at the window
  border) act on the *normalised* window, as the official torchvision
  transforms do. Each pass's tokens are L2-normalised; the first three are
  averaged (not renormalised) before the text product; the two flipped
  passes' logits are flipped back. Per window::

      L = alpha * L_base + (1 - alpha) * (vflip(L_v) + hflip(L_h)) / 2

  with ``alpha = img_eng_coefficient``.

Choices:

* The fusion is done on the patch grid; the official code upsamples each map
  to the window first and flips after. Bilinear resizing (``align_corners=False``)
  is linear and commutes with flips, so the two are the same up to float
  rounding (tests/test_itaclip.py checks both).
* A flipped window is flipped whole, then cut to whole patches, as conv1 cuts
  the official flipped crop (``patch_fit='truncate'`` in the card).
* The official ``torch.manual_seed(0)`` before every window (the transforms are
  deterministic) is left out: the global random state is not touched.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..options import check_bool, check_number
from .registry import DenseMethod, register_method, truncate_to_patches

# torchvision's Grayscale (ITU-R 601-2 luma), applied to the normalised channels
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# torchvision's GaussianBlur(kernel_size=11, sigma=5) of the official first-category views
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``0.2989 R + 0.587 G + 0.114 B`` of (B, 3, H, W), repeated to three channels."""
    r, g, b = x.unbind(dim=-3)
    gray = GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b
    return gray.unsqueeze(-3).expand_as(x)


def gaussian_kernel(size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA, dtype=torch.float32, device=None):
    """The (size, size) Gaussian kernel: outer product of ``exp(-t^2 / (2 sigma^2))``, t = -(size-1)/2..,
    each factor normalised to sum 1."""
    t = torch.linspace(-(size - 1) / 2, (size - 1) / 2, steps=size)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = (g / g.sum()).to(device=device, dtype=dtype)
    return g[:, None] * g[None, :]


def gaussian_blur(x: torch.Tensor, size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Per-channel Gaussian blur of (B, C, H, W), reflection padding (edge not repeated) of size // 2."""
    c = x.shape[-3]
    kernel = gaussian_kernel(size, sigma, x.dtype, x.device).expand(c, 1, size, size)
    half = size // 2
    if min(x.shape[-2:]) <= half:
        raise ValueError(f'window {tuple(x.shape[-2:])} is too small for the {size} x {size} blur of ITACLIP\'s '
                         f'image engineering (reflection needs more than {half} pixels per side)')
    return F.conv2d(F.pad(x, (half, half, half, half), mode='reflect'), kernel, groups=c)


def self_attention(t, attn_self: bool) -> torch.Tensor:
    """Per-head map (B, heads, N, N): softmax(s QQ^T) + softmax(s KK^T), or softmax(s QK^T)."""
    q, k = t['q'], t['k']
    scale = q.shape[-1] ** -0.5
    if attn_self:
        return (torch.softmax((q @ q.transpose(-2, -1)) * scale, dim=-1)
                + torch.softmax((k @ k.transpose(-2, -1)) * scale, dim=-1))
    return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)


def fuse_views(base: torch.Tensor, vflipped: torch.Tensor, hflipped: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * base + (1 - alpha) * (vflip(vflipped) + hflip(hflipped)) / 2`` on (B, Q, h, w) maps."""
    back = (vflipped.flip(-2) + hflipped.flip(-1)) / 2
    return alpha * base + (1 - alpha) * back


@register_method('ITACLIP')
class ITACLIP(DenseMethod):
    """ITACLIP's last block (intermediate attention mixed in, residual kept, FFN dropped) and its five views.

    Args:
        intermediate_layers: 0-based blocks whose attention maps are averaged into
            the last block's ((6, 7, 9): the official 1-based [7, 8, 10], for any depth).
        attn_self: qq + kk attention (True, every official config) or softmax(qk).
        img_engineering: encode each window five times and fuse (True in every config).
        img_eng_coefficient: alpha, the weight of the unflipped views (0.75, the
            class default; 0.7 for VOC21 and Cityscapes in the card).
        key: config key named in errors.
    """

    needs_class_token = True

    def __init__(self, intermediate_layers: Sequence[int] = (6, 7, 9), attn_self: bool = True,
                 img_engineering: bool = True, img_eng_coefficient: float = 0.75, key: str = 'model.method'):
        if isinstance(intermediate_layers, int) or not intermediate_layers:
            raise ValueError(f'{key}.intermediate_layers={intermediate_layers!r}: expected a non-empty list of '
                             'block indices')
        self.intermediate_layers = tuple(check_number(i, f'{key}.intermediate_layers', low=0, integer=True)
                                         for i in intermediate_layers)
        if len(set(self.intermediate_layers)) != len(self.intermediate_layers):
            raise ValueError(f'{key}.intermediate_layers={list(intermediate_layers)}: a block is listed twice')
        self.attn_self = check_bool(attn_self, f'{key}.attn_self')
        self.img_engineering = check_bool(img_engineering, f'{key}.img_engineering')
        self.img_eng_coefficient = check_number(img_eng_coefficient, f'{key}.img_eng_coefficient', low=0, high=1)
        self._key = key

    def bind(self, encoder) -> None:
        self.check_tower(encoder)
        last_frozen = encoder.num_blocks - 2
        if max(self.intermediate_layers) > last_frozen:
            raise ValueError(f'{self._key}.intermediate_layers={list(self.intermediate_layers)}: the tower has '
                             f'{encoder.num_blocks} blocks, so ITACLIP can read blocks 0..{last_frozen} '
                             '(the default (6, 7, 9) needs at least 11)')

    # -- stages ---------------------------------------------------------------------------
    def tokens(self, encoder, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Every token (B, N, dim) of the projected output, L2-normalised, and the grid."""
        tokens, grid = encoder.embed(truncate_to_patches(x, encoder.patch_size))
        maps: List[torch.Tensor] = []
        start = 0
        for i in sorted(self.intermediate_layers):
            tokens = encoder.run_blocks(tokens, start, i)
            maps.append(self_attention(encoder.qkv(tokens, ('q', 'k'), block=i), self.attn_self))
            tokens = encoder.run_blocks(tokens, i, i + 1)   # the block itself runs unchanged
            start = i + 1
        tokens = encoder.run_blocks(tokens, start, encoder.num_blocks - 1)
        t = encoder.qkv(tokens, ('q', 'k', 'v'))
        attn = 0.5 * self_attention(t, self.attn_self) + 0.5 * torch.stack(maps).mean(dim=0)
        y = tokens + encoder.project_heads(attn @ t['v'])   # residual kept, FFN dropped
        return F.normalize(encoder.head(y).float(), dim=-1), grid

    @staticmethod
    def _logits(feats: torch.Tensor, text: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        logits = feats[:, 1:] @ text.to(feats.dtype).t()
        return logits.transpose(1, 2).reshape(feats.shape[0], -1, *grid)

    def views(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The five views of windows (B, 3, H, W): as is, gray, blur, upside down, left-right."""
        return [x, grayscale(x), gaussian_blur(x), x.flip(-2), x.flip(-1)]

    # -- DenseMethod ------------------------------------------------------------------------
    def patch_logits(self, encoder, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if not self.img_engineering:
            feats, grid = self.tokens(encoder, x)
            return self._logits(feats, text, grid)
        b = x.shape[0]
        feats, grid = self.tokens(encoder, torch.cat(self.views(x)))   # one batch of 5B windows
        plain, gray, blur, vflip, hflip = feats.split(b)
        base = self._logits(torch.stack((plain, gray, blur)).mean(dim=0), text, grid)   # not renormalised
        return fuse_views(base, self._logits(vflip, text, grid), self._logits(hflip, text, grid),
                          self.img_eng_coefficient)

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        if self.img_engineering:
            raise NotImplementedError('ITACLIP with img_engineering fuses logits of five views: '
                                      'use patch_logits(encoder, x, text)')
        feats, (gh, gw) = self.tokens(encoder, x)
        return feats[:, 1:].reshape(feats.shape[0], gh, gw, -1)

    def options(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()
                if not k.startswith('_')}
