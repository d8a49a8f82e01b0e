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

PAMR is local: after ``num_iter`` steps a pixel depends only on pixels at most
``num_iter * max(dilations)`` rows away (the halo). ``pamr_bands`` therefore
refines a large image a band of rows at a time (``pamr_spans``, ``pamr_band``),
each band computed with its halo (its affinities from the true neighbours, tile
by tile): the same operations on the same values as the whole-image ``pamr``,
without ever holding (queries x H x W) or the neighbour stacks of the
whole image (tests/test_pamr.py compares the two).

This module is plain math; the ``model.postprocess`` wrapper is in ``postprocess.py``.
"""
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..options import check_number

# neighbour offsets (dy, dx) of one dilation, in the order the reference code stacks them
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# all 9 taps of a dilated 3x3 window, raster order (the local standard deviation's samples)
TAPS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))

# bytes of one (channels x H x W) float32 slice propagated at a time (about 4 such tensors live)
_CHUNK_BYTES = 256 * 2 ** 20
# pamr_bands: working memory of one band (its refined rows, affinities and one group of channels)
BAND_BYTES = 512 * 2 ** 20
# pamr_bands: bytes of the neighbour stacks of one affinity tile, and of one propagated slice
TILE_BYTES = 96 * 2 ** 20
SLICE_BYTES = 48 * 2 ** 20
# pamr_bands: channels resized at a time (> 4: the band resize equals F.interpolate from 5 channels on)
RESIZE_CHANNELS = 8
# floats per pixel that pamr_affinity holds at its peak (the 18 taps and 16 neighbours of 3 channels, their
# differences, the affinities): sizes its tiles
_AFFINITY_FLOATS = 220


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


def pamr_affinity(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """Neighbour weights (B, 1, P, H, W) of a guidance image (B, K, H, W); softmax over P."""
    image = _at_least_fp32(image)
    sigma = shifted(image, dilations, TAPS).std(dim=2, keepdim=True)              # (B, K, 1, H, W)
    diff = (image.unsqueeze(2) - shifted(image, dilations, NEIGHBOURS)).abs()     # (B, K, P, H, W)
    aff = (-diff / (1e-8 + 0.1 * sigma)).mean(dim=1, keepdim=True)
    return torch.softmax(aff, dim=2)


def pamr(image: torch.Tensor, logits: torch.Tensor, num_iter: int,
         dilations: Sequence[int]) -> torch.Tensor:
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


def check_dilations_fit(dilations: Sequence[int], size: Tuple[int, int], key: str) -> None:
    """Refuse a dilation not smaller than the image's longer side: all its neighbours would lie outside it."""
    H, W = size
    big = [d for d in dilations if d >= max(H, W)]
    if big:
        raise ValueError(f'{key}={tuple(dilations)!r}: dilation {big[0]} does not fit the {H}x{W} image (every '
                         f'neighbour at that distance lies outside it); expected dilations below {max(H, W)}')


def affinity_rows(image: torch.Tensor, dilations: Sequence[int], lo: int, hi: int,
                  tile_bytes: Optional[int] = None) -> torch.Tensor:
    """Rows ``lo:hi`` of ``pamr_affinity(image, dilations)``, computed tile by tile.

    Each tile is ``pamr_affinity`` of the guidance around it (``max(dilations)``
    pixels of true neighbours on every side that is not the image border), so
    its values are the whole image's, while the neighbour stacks held at a time
    stay within ``tile_bytes``.

    Args:
        image: guidance (1, K, H, W).
        dilations: neighbour distances.
        lo, hi: the rows wanted.
        tile_bytes: the stacks of one tile.

    Returns:
        (1, 1, 8 * len(dilations), hi - lo, W).
    """
    H, W = image.shape[-2:]
    D = max(dilations)
    tile_bytes = TILE_BYTES if tile_bytes is None else tile_bytes
    pixels = max(1, tile_bytes // (4 * _AFFINITY_FLOATS))   # of a tile with its margins
    if pixels >= 4 * D * W:    # whole-width tiles (margins above and below only)
        rows, cols = pixels // W - 2 * D, W
    else:                      # square tiles
        rows = cols = max(1, math.isqrt(pixels) - 2 * D)
    out = torch.empty((1, 1, 8 * len(dilations), hi - lo, W), dtype=torch.promote_types(image.dtype, torch.float32),
                      device=image.device)
    for r0 in range(lo, hi, rows):
        r1 = min(hi, r0 + rows)
        a, b = max(0, r0 - D), min(H, r1 + D)
        for c0 in range(0, W, cols):
            c1 = min(W, c0 + cols)
            e, f = max(0, c0 - D), min(W, c1 + D)
            tile = pamr_affinity(image[..., a:b, e:f], dilations)
            out[..., r0 - lo:r1 - lo, c0:c1] = tile[..., r0 - a:r1 - a, c0 - e:c1 - e]
    return out


def band_rows(num_queries: int, width: int, halo: int, num_neighbours: int, band_bytes: int) -> int:
    """Core rows of one band of ``pamr_band``, so that its working tensors stay near ``band_bytes``.

    A band holds its refined rows (queries), the affinities of its rows and halo
    (neighbours) and one group of resized channels over them. Below 1 where the
    halo alone passes the budget.
    """
    group = min(num_queries, RESIZE_CHANNELS)
    fixed = 4 * width * 2 * halo * (num_neighbours + group)
    per_row = 4 * width * (num_queries + num_neighbours + group)
    return (band_bytes - fixed) // per_row


def pamr_spans(size: Tuple[int, int], num_queries: int, num_iter: int, dilations: Sequence[int],
               band_bytes: Optional[int] = None) -> Optional[List[Tuple[int, int]]]:
    """The bands ``(start, stop)`` of rows that ``pamr_band`` refines one at a time, in order.

    None where ``pamr`` on the whole image (its neighbour stacks and a few
    copies of the logits) fits ``band_bytes``: then bands gain nothing.
    """
    H, W = size
    band_bytes = BAND_BYTES if band_bytes is None else band_bytes
    if 4 * H * W * (_AFFINITY_FLOATS + 4 * num_queries) <= band_bytes:
        return None
    step = band_rows(num_queries, W, num_iter * max(dilations), 8 * len(dilations), band_bytes)
    if step < 1:   # the halo alone passes the budget (dilations near the image size): one band, least work
        return [(0, H)]
    return [(start, min(H, start + step)) for start in range(0, H, step)]


def pamr_band(image: torch.Tensor, rows: Callable[[int, int, int, int], torch.Tensor], num_queries: int,
              start: int, stop: int, num_iter: int, dilations: Sequence[int],
              tile_bytes: Optional[int] = None, slice_bytes: Optional[int] = None) -> torch.Tensor:
    """Rows ``start:stop`` of PAMR on the whole image, (Q, stop - start, W), computed from the band and its halo.

    The logits must already be at the guidance size (``pamr`` resizes them with
    ``align_corners=True``, which at equal size copies them unchanged). The band
    is propagated with ``num_iter * max(dilations)`` rows of halo on either side
    (fewer at the image border, where the replicate padding is the image's own),
    with the whole image's affinities (``affinity_rows``): its rows equal those
    of ``pamr``.

    Args:
        image: guidance (1, K, H, W), or an object with its ``shape`` whose
            ``rows(lo, hi)`` gives its rows (``models.classify.ResizedGuide``).
        rows: ``rows(lo, hi, c0, c1)`` -> query logits of queries ``c0:c1`` on
            image rows ``lo:hi``, (c1 - c0, hi - lo, W), at the guidance size.
        num_queries: Q.
        start, stop: the rows wanted.
        num_iter, dilations: as ``pamr``.
        tile_bytes, slice_bytes: memory of an affinity tile and of one propagated group of channels.
    """
    H, W = image.shape[-2:]
    halo = num_iter * max(dilations)
    lo, hi = max(0, start - halo), min(H, stop + halo)
    slice_bytes = SLICE_BYTES if slice_bytes is None else slice_bytes
    group = min(num_queries, RESIZE_CHANNELS)
    starts = list(range(0, num_queries, group))
    if len(starts) > 1 and num_queries - starts[-1] <= 4:   # a last group of > 4 channels too (RESIZE_CHANNELS)
        starts.pop()
    # the guidance rows the affinities of lo:hi read (max(dilations) more on either side): tiles of them are the
    # tiles of the whole image (affinity_rows), and a lazily resized guidance (ResizedGuide) makes only these
    g0, g1 = max(0, lo - max(dilations)), min(H, hi + max(dilations))
    part = image[:, :, g0:g1] if isinstance(image, torch.Tensor) else image.rows(g0, g1)
    aff = affinity_rows(part, dilations, lo - g0, hi - g0, tile_bytes)
    del part
    out = weights = None
    for c0, c1 in zip(starts, starts[1:] + [num_queries]):
        x = _at_least_fp32(rows(lo, hi, c0, c1))
        if out is None:
            out = torch.empty((num_queries, stop - start, W), dtype=x.dtype, device=x.device)
            weights = [w.to(x.dtype) for w in aff.unbind(dim=2)]    # (1, 1, hi - lo, W) each
            del aff
        per = max(1, slice_bytes // (4 * (hi - lo) * W))
        for s in range(0, c1 - c0, per):
            part = _propagate(x[None, s:s + per], weights, dilations, num_iter)
            out[c0 + s:c0 + s + part.shape[1]] = part[0, :, start - lo:stop - lo]
    return out
