"""Sliding-window geometry and per-window scoring (docs/protocol.md, "Scoring").

Windows follow MMSeg's ``slide_inference``: ``grids = max(H - crop + stride
- 1, 0) // stride + 1`` per side, the last window shifted back inside the
image, and a side shorter than the crop giving a smaller window. Each window
of the normalised image is zero-padded to a multiple of the patch size (left
= pad // 2, right = the rest; same for top/bottom); its logits are upsampled
bilinearly to the padded window and cut back. Overlaps are averaged.

Windows of all images in a batch are grouped by shape and run through the
encoder ``max_windows`` at a time; ``max_windows=1`` is the plain
one-window-at-a-time path, and both give the same numbers.
"""
from collections import defaultdict
from typing import Callable, Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F

Box = Tuple[int, int, int, int]  # y1, y2, x1, x2


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def window_boxes(h: int, w: int, crop, stride) -> List[Box]:
    """Window boxes (y1, y2, x1, x2) covering an h x w image, row-major."""
    (ch, cw), (sh, sw) = _pair(crop), _pair(stride)
    h_grids = max(h - ch + sh - 1, 0) // sh + 1
    w_grids = max(w - cw + sw - 1, 0) // sw + 1
    boxes = []
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * sh, wi * sw
            y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
            boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return boxes


def patch_padding(h: int, w: int, patch) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that makes h x w patch-divisible."""
    ph, pw = _pair(patch)
    pad_h, pad_w = -h % ph, -w % pw
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def pad_to_patch(crops: torch.Tensor, patch) -> Tuple[torch.Tensor, Tuple[int, int, int, int]]:
    """Zero-pad (..., h, w) to patch multiples (``patch_padding``).

    Returns:
        The padded tensor and ``(top, left, h, w)``, the cut that undoes it.
    """
    h, w = crops.shape[-2:]
    left, right, top, bottom = patch_padding(h, w, patch)
    padded = F.pad(crops, (left, right, top, bottom)) if (left or right or top or bottom) else crops
    return padded, (top, left, h, w)


def padded_window_shapes(sizes: Sequence[Tuple[int, int]], crop, stride, patch) -> List[Tuple[int, int]]:
    """The shape each window of images of ``sizes`` has once padded to the patch size (what the encoder sees)."""
    shapes = []
    for h, w in sizes:
        for y1, y2, x1, x2 in window_boxes(h, w, crop, stride):
            left, right, top, bottom = patch_padding(y2 - y1, x2 - x1, patch)
            shapes.append((y2 - y1 + top + bottom, x2 - x1 + left + right))
    return shapes


def iter_windows(image: torch.Tensor, crop, stride, patch) -> Iterator[torch.Tensor]:
    """The windows of one image (3, H, W), each padded as ``slide_inference`` pads it: (1, 3, h', w')."""
    H, W = image.shape[-2:]
    for y1, y2, x1, x2 in window_boxes(H, W, crop, stride):
        yield pad_to_patch(image[None, :, y1:y2, x1:x2], patch)[0]


def _pad_and_encode(encode, crops: torch.Tensor, patch, fit: str = 'pad'):
    if fit == 'truncate':
        # the encoder sees the whole window and drops the remainder rows/columns (conv1 does);
        # the logits are then stretched over the whole window (SCLIP-family code; docs/protocol.md, "Other methods")
        return encode(crops), crops.shape[-2:], (0, 0) + tuple(crops.shape[-2:])
    padded, cut = pad_to_patch(crops, patch)
    return encode(padded), padded.shape[-2:], cut


def _upsample_cut(logits: torch.Tensor, padded_size, cut) -> torch.Tensor:
    top, left, h, w = cut
    logits = F.interpolate(logits, size=padded_size, mode='bilinear', align_corners=False)
    return logits[..., top:top + h, left:left + w]


# One band of a transposing add (see ``accumulate``): about an L2 cache's share of one core.
ADD_BAND_BYTES = 256 * 1024


def accumulate(out: torch.Tensor, x: torch.Tensor) -> None:
    """``out += x`` for (Q, h, w) maps, in bands of rows when ``x`` is channels-last.

    Window logits come out of the text product channels-last (queries fastest in
    memory), and ``F.interpolate`` keeps that layout, while the image's running
    sum is (Q, H, W). One ``add_`` over the whole window then reads across the
    whole map for every output row (4x slower than the band add with 171
    queries, measured in docs/performance.md); a band of rows at a time stays in
    cache. Element by element it is the same addition, so the sums are identical.
    """
    if x.dim() != 3 or x.shape != out.shape or x.stride(0) != 1 or x.shape[0] == 1 or x.device.type != 'cpu':
        out.add_(x)  # broadcasting, contiguous or GPU inputs: one add (on a GPU each band is a kernel launch)
        return
    rows = max(1, ADD_BAND_BYTES // max(1, x.shape[0] * x.shape[2] * x.element_size()))
    for r in range(0, x.shape[1], rows):
        out[:, r:r + rows].add_(x[:, r:r + rows])


def score_windows(encode: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor,
                  patch, fit: str = 'pad') -> torch.Tensor:
    """Query logits for same-shaped crops (N, 3, h, w) -> (N, Q, h, w).

    ``encode`` maps a padded batch to per-patch query logits (N, Q, gh, gw).
    """
    logits, padded_size, cut = _pad_and_encode(encode, crops, patch, fit)
    return _upsample_cut(logits, padded_size, cut)


def slide_inference(images: Sequence[torch.Tensor], encode: Callable[[torch.Tensor], torch.Tensor],
                    num_queries: int, crop, stride, patch, max_windows: int = 16,
                    fit: str = 'pad') -> List[torch.Tensor]:
    """Averaged query logits (Q, H, W) for each image (3, H, W) of a batch.

    Args:
        images: normalised images; sizes may differ.
        encode: padded crops (N, 3, h, w) -> per-patch query logits (N, Q, gh, gw).
        num_queries: Q.
        crop, stride, patch: window size, step and patch size (int or (h, w)).
        max_windows: the most windows sent to ``encode`` at once (memory cap).
        fit: ``'pad'`` (windows zero-padded to patch multiples) or ``'truncate'``
            (``encode`` gets the window as is and drops the remainder; its
            logits are stretched over the whole window).
    """
    preds, counts = [], []
    groups = defaultdict(list)  # window shape -> [(image index, box)]
    for i, img in enumerate(images):
        H, W = img.shape[-2:]
        preds.append(img.new_zeros((num_queries, H, W), dtype=torch.float32))
        counts.append(img.new_zeros((1, H, W), dtype=torch.float32))
        for box in window_boxes(H, W, crop, stride):
            groups[(box[1] - box[0], box[3] - box[2])].append((i, box))
    for shape, items in groups.items():
        for s in range(0, len(items), max(1, int(max_windows))):
            chunk = items[s:s + max(1, int(max_windows))]
            crops = torch.stack([images[i][:, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])
            logits, padded_size, cut = _pad_and_encode(encode, crops, patch, fit)
            for k, (i, (y1, y2, x1, x2)) in enumerate(chunk):
                # upsample one window at a time: memory stays Q x h x w, whatever the batch
                accumulate(preds[i][:, y1:y2, x1:x2], _upsample_cut(logits[k:k + 1], padded_size, cut)[0].float())
                counts[i][:, y1:y2, x1:x2] += 1
    return [p.div_(c) for p, c in zip(preds, counts)]


def whole_inference(images: Sequence[torch.Tensor], encode: Callable[[torch.Tensor], torch.Tensor],
                    patch, fit: str = 'pad') -> List[torch.Tensor]:
    """Query logits (Q, H, W) from one forward of each whole (padded or truncated) image."""
    return [score_windows(encode, img[None], patch, fit)[0].float() for img in images]
