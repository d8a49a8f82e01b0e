"""From query logits to labels: scale, softmax, synonyms, area and probability thresholds.

The rule (docs/protocol.md, "Scoring"; ``area_thd`` is SCLIP's, docs/protocol.md "Other methods")::

    P      = softmax over queries of (logit_scale * logits)
    P_c    = max over the queries of class c            (synonyms, after the softmax)
    area_thd (optional): classes 1..C-1 whose argmax area is not above
             area_thd x the total area of classes 1..C-1 get P_c = 0
             (background, class 0, is never suppressed; pixels go to the next best class)
    label  = argmax_c P_c, and 0 where max_c P_c < prob_thd

``classify_tiled`` applies the same rule while resizing to the original image
size, a band of rows at a time, so a 4000 x 6000 image with 171 queries never
holds a (Q, H, W) map. The band resize reproduces ``F.interpolate(bilinear,
align_corners=False)`` operation by operation (same source rows and weights,
the width pass by ``F.interpolate`` itself, one fused multiply-add per output
as ATen's CPU kernel), so probabilities and labels equal the full-map path
bit for bit on the CPU (tests/test_classify.py); maps that fit one band take
the full path itself.
Area thresholds and PAMR need the whole map and take the full path.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

# working memory of one band (logits, scaled probabilities, class probabilities), in bytes
TILE_BYTES = 128 * 2 ** 20
# Maps that fit one band, or are narrow, or have <= 4 queries go through F.interpolate whole:
# ATen resizes <= 4 channels with a separable kernel and very small maps with other loops,
# whose roundings the band resize does not reproduce (checked equal for widths >= 64).
MIN_BAND_QUERIES = 4
MIN_BAND_WIDTH = 64


def class_probabilities(logits: torch.Tensor, logit_scale: float, query_to_class: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
    """Query logits (Q, ...) -> class probabilities (C, ...): softmax over queries, max over synonyms."""
    probs = torch.softmax(logits * logit_scale, dim=0)
    if probs.shape[0] != num_classes:
        idx = query_to_class.view(-1, *([1] * (probs.dim() - 1))).expand_as(probs)
        probs = probs.new_full((num_classes, *probs.shape[1:]), -1.0).scatter_reduce(0, idx, probs, reduce='amax')
    return probs


def suppress_small_classes(probs: torch.Tensor, area_thd: float) -> torch.Tensor:
    """SCLIP's area rule, in place: zero classes 1..C-1 whose predicted area is too small.

    A class c >= 1 is kept when its argmax area is strictly above ``area_thd``
    times the summed argmax area of classes 1..C-1 (the foreground, not the image).
    """
    num_classes = probs.shape[0]
    area = torch.bincount(probs.argmax(dim=0).flatten(), minlength=num_classes)[1:].to(probs.dtype)
    keep = (area > area_thd * area.sum()).to(probs.dtype)
    probs[1:] *= keep.view(-1, *([1] * (probs.dim() - 1)))
    return probs


def labels_from_probs(probs: torch.Tensor, prob_thd: float) -> torch.Tensor:
    """Class probabilities (C, H, W) -> labels (1, H, W); below ``prob_thd`` -> 0."""
    top, labels = probs.max(dim=0, keepdim=True)
    labels[top < prob_thd] = 0
    return labels


def classify(logits: torch.Tensor, logit_scale: float, query_to_class: torch.Tensor, num_classes: int,
             prob_thd: float = 0.0, area_thd: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The whole rule on a full map: query logits (Q, H, W) -> class probabilities (C, H, W), labels (1, H, W).

    The probabilities are those the labels come from: after the synonym max and
    the area rule, not renormalised.
    """
    probs = class_probabilities(logits, logit_scale, query_to_class, num_classes)
    if area_thd is not None:
        probs = suppress_small_classes(probs, area_thd)
    return probs, labels_from_probs(probs, prob_thd)


def _source_rows(in_size: int, out_size: int, start: int, stop: int, device):
    """Rows and weights of bilinear (align_corners=False) output rows start..stop-1, as ATen computes them."""
    scale = float(torch.tensor(in_size, dtype=torch.float32) / out_size)   # float32, like ATen's opmath
    dst = torch.arange(start, stop, dtype=torch.float64, device=device)
    src = (scale * (dst + 0.5) - 0.5).to(torch.float32).clamp(min=0)     # double arithmetic, then float
    r0 = src.long().clamp(max=in_size - 1)
    r1 = (r0 + 1).clamp(max=in_size - 1)
    w1 = src - r0.to(torch.float32)
    return r0, r1, 1 - w1, w1


def resize_rows(logits: torch.Tensor, size: Tuple[int, int], start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``F.interpolate(logits[None], size, 'bilinear', align_corners=False)[0]``.

    Args:
        logits: (Q, h, w).
        size: the full output size (H, W).
        start, stop: the output rows wanted.
    """
    h = logits.shape[-2]
    r0, r1, w0, w1 = _source_rows(h, size[0], start, stop, logits.device)
    lo, hi = int(r0.min()), int(r1.max()) + 1
    # width pass on the needed source rows only (height unchanged: an exact copy of each row)
    band = F.interpolate(logits[None, :, lo:hi], size=(hi - lo, size[1]), mode='bilinear', align_corners=False)[0]
    a, b = band[:, r0 - lo], band[:, r1 - lo]
    # w0 * a + w1 * b as ATen's kernel rounds it (one fused multiply-add)
    return torch.addcmul(b * w1.to(b.dtype)[:, None], a, w0.to(a.dtype)[:, None])


def band_rows(num_queries: int, num_classes: int, width: int, tile_bytes: int = TILE_BYTES) -> int:
    """Rows per band so that one band's working tensors stay within ``tile_bytes``."""
    per_row = 4 * width * (3 * num_queries + num_classes)
    return max(1, tile_bytes // per_row)


def classify_tiled(logits: torch.Tensor, size: Tuple[int, int], logit_scale: float,
                   query_to_class: torch.Tensor, num_classes: int, prob_thd: float = 0.0,
                   tile_bytes: Optional[int] = None) -> torch.Tensor:
    """Labels (1, H, W) at ``size`` from input-size query logits (Q, h, w), a band of rows at a time.

    Equal to resizing with ``F.interpolate`` and ``classify`` on the full map
    (no area rule: it needs the whole map).
    """
    H, W = size
    step = band_rows(logits.shape[0], num_classes, W, TILE_BYTES if tile_bytes is None else tile_bytes)
    if step >= H or logits.shape[0] <= MIN_BAND_QUERIES or W < MIN_BAND_WIDTH:
        full = F.interpolate(logits[None], size=size, mode='bilinear', align_corners=False)[0]
        return classify(full, logit_scale, query_to_class, num_classes, prob_thd)[1]
    labels = torch.empty((1, H, W), dtype=torch.long, device=logits.device)
    same = tuple(logits.shape[-2:]) == (H, W)
    for start in range(0, H, step):
        stop = min(H, start + step)
        band = logits[:, start:stop] if same else resize_rows(logits, size, start, stop)
        probs = class_probabilities(band, logit_scale, query_to_class, num_classes)
        labels[:, start:stop] = labels_from_probs(probs, prob_thd)
    return labels
