"""From query logits to labels: scale, softmax, synonyms, area and probability thresholds.

The rule (docs/protocol.md, "Scoring"; ``area_thd`` is SCLIP's, docs/protocol.md "Other methods")::

    P      = softmax over queries of (logit_scale * logits)
    P_c    = max over the queries of class c            (synonyms, after the softmax)
    area_thd (optional): classes 1..C-1 whose argmax area is not above
             area_thd x the total area of classes 1..C-1 get P_c = 0
             (background, class 0, is never suppressed; pixels go to the next best class)
    label  = argmax_c P_c, and 0 where max_c P_c < prob_thd

``classify_at_size`` applies the same rule while resizing to the original
image size, a band of rows at a time, so a 4000 x 6000 image with 171 queries
never holds a (Q, H, W) or (C, H, W) map (``classify_tiled``: labels only). The
band resize reproduces ``F.interpolate(bilinear, align_corners=False)``
operation by operation (same source rows and weights, the width pass by
``F.interpolate`` itself, one fused multiply-add per output as ATen's CPU
kernel), so the band logits equal the full map's bit for bit on the CPU and
the labels equal the full-map path's (tests/test_classify.py); maps that fit
one band take the full path itself. The area rule counts the whole image's
argmax first, then recomputes only the bands it changes (``classify_bands``);
PAMR refines each band from its halo (``models/pamr.py``).
"""
import ctypes
from functools import partial
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

# working memory of one band (logits, scaled probabilities, class probabilities), in bytes
TILE_BYTES = 128 * 2 ** 20
# Maps that fit one band, or are narrow, or have <= 4 queries go through F.interpolate whole:
# ATen resizes <= 4 channels with a separable kernel and very small maps with other loops,
# whose roundings the band resize does not reproduce (checked equal for widths >= 64).
MIN_BAND_QUERIES = 4
MIN_BAND_WIDTH = 64
# rows resized at a time into a longer band (PAMR's bands with their halo)
RESIZE_ROWS = 64


def class_probabilities(logits: torch.Tensor, logit_scale: float, query_to_class: torch.Tensor,
                        num_classes: int, scores: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                        ) -> torch.Tensor:
    """Query logits (Q, ...) -> class probabilities (C, ...): softmax over queries, max over synonyms.

    ``scores`` replaces the softmax (``model.scoring``: a ``Scorer``, e.g. a sigmoid).
    """
    probs = torch.softmax(logits * logit_scale, dim=0) if scores is None else scores(logits)
    if probs.shape[0] != num_classes:
        idx = query_to_class.view(-1, *([1] * (probs.dim() - 1))).expand_as(probs)
        probs = probs.new_full((num_classes, *probs.shape[1:]), -1.0).scatter_reduce(0, idx, probs, reduce='amax')
    return probs


def area_counts(probs: torch.Tensor) -> torch.Tensor:
    """Pixels per class of the argmax of class probabilities (C, ...): int64 (C,), summable over bands."""
    return torch.bincount(probs.argmax(dim=0).flatten(), minlength=probs.shape[0])


def kept_classes(counts: torch.Tensor, area_thd: float, dtype=torch.float32) -> torch.Tensor:
    """SCLIP's area rule on the whole image's argmax counts: 1 for classes 1..C-1 kept, 0 for suppressed.

    A class c >= 1 is kept when its argmax area is strictly above ``area_thd``
    times the summed argmax area of classes 1..C-1 (the foreground, not the
    image); the areas are compared in the probabilities' dtype.
    """
    area = counts[1:].to(dtype)
    return (area > area_thd * area.sum()).to(dtype)


def apply_kept(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero, in place, the probabilities of the classes ``kept_classes`` suppressed."""
    probs[1:] *= keep.view(-1, *([1] * (probs.dim() - 1)))
    return probs


def suppress_small_classes(probs: torch.Tensor, area_thd: float) -> torch.Tensor:
    """SCLIP's area rule on a whole map, in place: zero classes 1..C-1 whose predicted area is too small."""
    return apply_kept(probs, kept_classes(area_counts(probs), area_thd, probs.dtype))


def labels_from_probs(probs: torch.Tensor, prob_thd: float) -> torch.Tensor:
    """Class probabilities (C, H, W) -> labels (1, H, W); below ``prob_thd`` -> 0."""
    top, labels = probs.max(dim=0, keepdim=True)
    labels.masked_fill_(top < prob_thd, 0)
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


class ResizedGuide:
    """A post-processor's guidance, made on demand: the input resized bilinearly (``align_corners=False``), float32.

    The whole guidance of a 4000 x 6000 image is 288 MB of float32. A map refined
    whole takes it at once (``full``); a map refined in bands takes a band's rows
    (``rows``), resized anew for each band and the rest freed at once, so the whole
    guidance never lives beside a band's working tensors. Each band's rows come from
    the very call that makes the whole guidance (ATen picks its kernel by the number
    of threads and channels, so a row-wise resize could round otherwise): the values
    are the same bit for bit, at the cost of one resize per band.

    Args:
        image: the normalised network input (K, h, w).
        size: the output size (H, W).
    """

    def __init__(self, image: torch.Tensor, size: Tuple[int, int]):
        self.image = image
        self.size = tuple(size)
        self.shape = (1, image.shape[0]) + self.size

    def full(self) -> torch.Tensor:
        """The whole guidance (1, K, H, W)."""
        return F.interpolate(self.image[None].float(), size=self.size, mode='bilinear', align_corners=False)

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` of ``full()``, (1, K, hi - lo, W)."""
        return self.full()[:, :, lo:hi].clone()


def guidance_tensor(guide):
    """The whole guidance as a tensor: a ``ResizedGuide`` made in full, a tensor (or None) as it is."""
    return guide.full() if isinstance(guide, ResizedGuide) else guide


def band_rows(num_queries: int, num_classes: int, width: int, tile_bytes: int = TILE_BYTES) -> int:
    """Rows per band so that one band's working tensors stay within ``tile_bytes``."""
    per_row = 4 * width * (3 * num_queries + num_classes)
    return max(1, tile_bytes // per_row)


def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL(None).malloc_trim   # the process's own C library
    except (OSError, AttributeError, TypeError):   # not glibc
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    A band's tensors of 1-32 MB come from glibc's heap, not from fresh pages,
    and freed between bands they leave holes that the next band's differently
    sized tensors do not fill: without this the resident set grows by ~20 MB
    per band (1.9 GB over a 4000x6000 image), with it stays at one band's.
    """
    if _TRIM is not None:
        _TRIM(0)


def classify_tiled(logits: torch.Tensor, size: Tuple[int, int], logit_scale: float,
                   query_to_class: torch.Tensor, num_classes: int, prob_thd: float = 0.0,
                   tile_bytes: Optional[int] = None) -> torch.Tensor:
    """Labels (1, H, W) at ``size`` from input-size query logits (Q, h, w), a band of rows at a time.

    Equal to resizing with ``F.interpolate`` and ``classify`` on the full map.
    """
    to_probs = partial(class_probabilities, logit_scale=logit_scale, query_to_class=query_to_class,
                       num_classes=num_classes)
    return classify_at_size(logits, size, to_probs, num_classes, prob_thd, tile_bytes=tile_bytes)[1]


def classify_at_size(logits: torch.Tensor, size: Tuple[int, int], to_probs: Callable[[torch.Tensor], torch.Tensor],
                     num_classes: int, prob_thd: float = 0.0, area_thd: Optional[float] = None,
                     keep_probs: bool = False, post=None, guide: Optional[torch.Tensor] = None,
                     tile_bytes: Optional[int] = None) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Input-size query logits (Q, h, w) -> (class probabilities (C, H, W) or None, labels (1, H, W)) at ``size``.

    The whole rule: bilinear resize (``align_corners=False``), the
    post-processor ``post`` (e.g. PAMR) guided by ``guide``, ``to_probs``, the
    area rule, argmax and ``prob_thd``. A map that fits one band (or is narrow,
    or has <= 4 queries) goes through these steps whole; a larger one a band
    of rows at a time (``classify_bands``), so neither (Q, H, W) nor
    (C, H, W) exists unless ``keep_probs`` asks for the probabilities.

    Args:
        logits: (Q, h, w) query logits at the network-input size.
        size: the output size (H, W).
        to_probs: query logits (Q, ...) -> class probabilities (C, ...)
            (``class_probabilities`` with the model's scale and scoring).
        num_classes: C.
        prob_thd, area_thd: the thresholds (``classify``).
        keep_probs: also return the class probabilities the labels come from.
        post: a ``PostProcessor`` (``models/postprocess.py``) or None.
        guide: its guidance (1, 3, H, W), the normalised input at ``size``, or a
            ``ResizedGuide`` that makes it (whole, or a band's rows at a time).
        tile_bytes: working memory of one band of classification.
    """
    H, W = size
    Q = logits.shape[0]
    same = tuple(logits.shape[-2:]) == (H, W)

    def rows(lo: int, hi: int, c0: int, c1: int) -> torch.Tensor:
        if same:
            return logits[c0:c1, lo:hi]
        if hi - lo <= RESIZE_ROWS:
            return resize_rows(logits[c0:c1], size, lo, hi)
        out = logits.new_empty((c1 - c0, hi - lo, W))   # a few rows at a time: resize_rows holds 4 copies
        for r in range(lo, hi, RESIZE_ROWS):
            out[:, r - lo:min(hi, r + RESIZE_ROWS) - lo] = resize_rows(logits[c0:c1], size, r, min(hi, r + RESIZE_ROWS))
        return out

    step = band_rows(Q, num_classes, W, TILE_BYTES if tile_bytes is None else tile_bytes)
    plan = None
    if Q > MIN_BAND_QUERIES and W >= MIN_BAND_WIDTH:
        if post is not None:
            plan = post.bands(guide, rows, Q)   # None: refined whole
        elif step < H:
            plan = [(s, min(H, s + step)) for s in range(0, H, step)], lambda s, e: rows(s, e, 0, Q)
    if plan is None:   # the whole map at once
        full = logits if same else F.interpolate(logits[None], size=size, mode='bilinear', align_corners=False)[0]
        if post is not None:
            full = post(guidance_tensor(guide), full[None].float())[0]
        probs = to_probs(full)
        if area_thd is not None:
            probs = suppress_small_classes(probs, area_thd)
        return (probs if keep_probs else None), labels_from_probs(probs, prob_thd)
    return classify_bands(plan[0], plan[1], size, to_probs, num_classes, prob_thd, area_thd, keep_probs, step)


def classify_bands(spans: Sequence[Tuple[int, int]], compute: Callable[[int, int], torch.Tensor],
                   size: Tuple[int, int], to_probs: Callable[[torch.Tensor], torch.Tensor], num_classes: int,
                   prob_thd: float = 0.0, area_thd: Optional[float] = None, keep_probs: bool = False,
                   step: Optional[int] = None) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """The rule a band of rows at a time: ``compute(start, stop)`` gives the query logits of each span.

    Without ``area_thd`` each band's labels are final. The area rule needs the
    whole image's argmax counts: a first pass counts them (and keeps each
    band's labels and the classes that reach a pixel's top probability); a
    class suppressed then changes only the pixels where it is on top, so only
    the bands where a suppressed class reaches the top are computed again, with
    the suppression applied. With ``keep_probs`` the probabilities are kept
    whole anyway: the suppression is applied to them in place, no band is
    computed twice.

    Args:
        spans: the bands ``(start, stop)`` covering rows 0..H in order.
        compute: ``compute(start, stop)`` -> query logits (Q, stop - start, W) at the output size.
        size: (H, W).
        to_probs, num_classes, prob_thd, area_thd, keep_probs: as ``classify_at_size``.
        step: rows classified at a time within a band (default: all of it).
    """
    H, W = size
    out = dict(labels=None, probs=None, counts=None, dtype=None)
    on_top = []   # per band: the classes that reach some pixel's top probability

    def classify_band(start: int, stop: int, keep: Optional[torch.Tensor]) -> None:
        band = compute(start, stop)
        rows = step or stop - start
        for r in range(start, stop, rows):
            probs = to_probs(band[:, r - start:r - start + rows])
            r1 = r + probs.shape[1]
            if out['labels'] is None:
                # held in the narrowest integer type the classes fit (a quarter or an eighth of int64's memory
                # over the whole image), returned as int64
                out['labels'] = torch.empty((1, H, W), dtype=_label_dtype(num_classes), device=probs.device)
                out['dtype'] = probs.dtype
                if keep_probs:
                    out['probs'] = probs.new_empty((num_classes, H, W))
            if area_thd is not None and keep is None:   # first pass: counts, and who is on top
                counts = area_counts(probs)
                out['counts'] = counts if out['counts'] is None else out['counts'] + counts
                top = probs.max(dim=0, keepdim=True).values
                on_top[-1] |= (probs == top).flatten(1).any(dim=1).cpu()
                if bool((top <= 0).any()):   # a zeroed class could tie there: recompute if any is
                    on_top[-1][:] = True
            elif keep is not None:
                probs = apply_kept(probs, keep)
            if keep_probs:
                out['probs'][:, r:r1] = probs
            out['labels'][:, r:r1] = labels_from_probs(probs, prob_thd)

    for start, stop in spans:
        on_top.append(torch.zeros(num_classes, dtype=torch.bool))
        classify_band(start, stop, None)
        release_freed_memory()
    labels, probs = out['labels'], out['probs']
    if area_thd is None:
        return probs, labels.long()
    keep = kept_classes(out['counts'], area_thd, out['dtype'])
    if bool(keep.all()):   # nothing suppressed: every probability is multiplied by 1
        return probs, labels.long()
    if keep_probs:         # the probabilities are all here: suppress in place, labels again
        apply_kept(probs, keep)
        rows = step or H
        for r in range(0, H, rows):
            labels[:, r:r + rows] = labels_from_probs(probs[:, r:r + rows], prob_thd)
        return probs, labels.long()
    suppressed = torch.cat([torch.zeros(1, dtype=torch.bool), keep.cpu() == 0])
    for (start, stop), top in zip(spans, on_top):
        if bool((top & suppressed).any()):
            classify_band(start, stop, keep)
            release_freed_memory()
    return None, labels.long()


def _label_dtype(num_classes: int) -> torch.dtype:
    """The narrowest integer type that holds labels 0..num_classes-1 exactly."""
    if num_classes <= 256:
        return torch.uint8
    return torch.int16 if num_classes <= 2 ** 15 else torch.long
