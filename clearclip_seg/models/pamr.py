"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020).

As SCLIP, NACLIP and ResCLIP run it (method cards, section 4):

1. the logits are resized to the guidance size, bilinear with ``align_corners=True``;
2. neighbours of a pixel are the 8 pixels at offsets ``d * (dy, dx)`` around it for
   every dilation ``d``, taken from a replicate-padded copy (16 for (8, 16); the
   centre is not a neighbour);
3. per guidance channel k, ``sigma_k`` is the unbiased standard deviation of the
   9 taps (centre included) of every dilation: 18 samples for (8, 16);
4. the affinity to neighbour n is ``mean_k -|x_k(p) - x_k(n)| / (1e-8 + 0.1 sigma_k(p))``,
   softmaxed over the neighbours; it is computed once from the image;
5. ``num_iter`` times, every logit becomes the affinity-weighted sum of its
   neighbours' logits (no self term).

Channels never mix, so the propagation runs over groups of channels at a time:
memory stays bounded for many queries at large sizes, with the same numbers.
The neighbours are added one at a time in the reference's order, never stacked.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ..options import check_number
from .postprocess import PostProcessor, register_postprocessor

# neighbour offsets (dy, dx) of one dilation, in the order the reference code stacks them
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# all 9 taps of a dilated 3x3 window, raster order (the local standard deviation's samples)
TAPS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))

# bytes of one (channels x H x W) float32 slice propagated at a time (about 4 such tensors live)
_CHUNK_BYTES = 256 * 2 ** 20


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # the reference code runs PAMR in fp32 even under an fp16 network
    return x.to(torch.promote_types(x.dtype, torch.float32))


def shifted(x: torch.Tensor, dilations: Sequence[int], offsets) -> torch.Tensor:
    """Values at ``p + d * offset`` for every dilation and offset, replicate at the borders.

    Args:
        x: (B, C, H, W).
        dilations: the dilations d, in order.
        offsets: (dy, dx) pairs, in order.

    Returns:
        (B, C, len(dilations) * len(offsets), H, W), dilation-major.
    """
    H, W = x.shape[-2:]
    out = []
    for d in dilations:
        padded = F.pad(x, [d] * 4, mode='replicate')
        for dy, dx in offsets:
            out.append(padded[..., d + dy * d:d + dy * d + H, d + dx * d:d + dx * d + W])
    return torch.stack(out, dim=2)


def pamr_affinity(image: torch.Tensor, dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """Neighbour weights (B, 1, P, H, W) of a guidance image (B, K, H, W); softmax over P."""
    image = _at_least_fp32(image)
    sigma = shifted(image, dilations, TAPS).std(dim=2, keepdim=True)              # (B, K, 1, H, W)
    diff = (image.unsqueeze(2) - shifted(image, dilations, NEIGHBOURS)).abs()     # (B, K, P, H, W)
    aff = (-diff / (1e-8 + 0.1 * sigma)).mean(dim=1, keepdim=True)
    return torch.softmax(aff, dim=2)


def pamr(image: torch.Tensor, logits: torch.Tensor, num_iter: int = 10,
         dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """Refine logits with PAMR, guided by ``image``.

    Args:
        image: guidance (B, K, H, W), e.g. the normalised network input resized
            to the output size.
        logits: (B, C, h, w); resized to (H, W) first (bilinear, align_corners=True).
        num_iter: propagation steps.
        dilations: neighbour distances in pixels.

    Returns:
        logits (B, C, H, W) in float32 (float64 inputs stay float64).
    """
    H, W = image.shape[-2:]
    logits = F.interpolate(_at_least_fp32(logits), size=(H, W), mode='bilinear', align_corners=True)
    if num_iter == 0:
        return logits
    aff = pamr_affinity(image, dilations).to(logits.dtype)
    weights = [aff[:, :, n] for n in range(aff.shape[2])]              # (B, 1, H, W) each
    B, C = logits.shape[:2]
    per_chunk = max(1, _CHUNK_BYTES // (4 * H * W * B))
    out = [_propagate(part, weights, dilations, num_iter) for part in logits.split(per_chunk, dim=1)]
    return out[0] if len(out) == 1 else torch.cat(out, dim=1)


def _propagate(x: torch.Tensor, weights, dilations: Sequence[int], num_iter: int) -> torch.Tensor:
    """``num_iter`` times: x(p) <- sum_n w_n(p) x(p + offset_n), summed in neighbour order.

    Adding the weighted neighbours one at a time, in order, gives the same sums as
    stacking them and reducing over the neighbour axis (the reference's
    ``(m * w).sum(2)``) without materialising the 16 shifted copies.
    """
    H, W = x.shape[-2:]
    for _ in range(num_iter):
        acc, n = None, 0
        for d in dilations:
            padded = F.pad(x, [d] * 4, mode='replicate')
            for dy, dx in NEIGHBOURS:
                term = padded[..., d + dy * d:d + dy * d + H, d + dx * d:d + dx * d + W] * weights[n]
                acc = term if acc is None else acc.add_(term)
                n += 1
        x = acc
    return x


def check_dilations(value, key: str) -> Tuple[int, ...]:
    """A non-empty sequence of positive integer dilations."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f'{key}={value!r}: expected a non-empty list of positive integers')
    return tuple(check_number(d, key, low=1, integer=True) for d in value)


@register_postprocessor('PAMR')
class PAMRPostProcessor(PostProcessor):
    """PAMR on the raw query logits at the original size (``model.postprocess``).

    Args:
        num_iter: propagation steps (10, NACLIP's default; positive integer).
        dilations: neighbour distances in pixels ((8, 16)).
        key: the config key named in errors.
    """

    def __init__(self, num_iter: int = 10, dilations: Sequence[int] = (8, 16), key: str = 'model.postprocess'):
        self.num_iter = check_number(num_iter, f'{key}.num_iter', low=1, integer=True)
        self.dilations = check_dilations(dilations, f'{key}.dilations')

    def __call__(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return pamr(image, logits, self.num_iter, self.dilations)
