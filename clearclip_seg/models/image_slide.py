"""Sliding windows for image-level methods: every window of an image first, then one step over all of them.

A method with ``image_level = True`` (LPOSS: label propagation over the
patches of all windows) cannot score a window alone. Per image:

1. the windows (``slide.window_boxes``, or the whole image in ``whole``
   mode), padded to patch multiples as ``slide_inference`` pads them, go
   through ``method.window_features(encoder, crops, text)`` ``max_windows``
   at a time (a dict of per-window tensors, concatenated over the batches);
2. ``method.propagate(features, origins, text)`` turns them into
   per-window patch logits (N_win, Q, gh, gw), ``origins`` being each padded
   window's top-left corner in image pixels;
3. each window's logits are upsampled bilinearly to the padded window, cut
   back and averaged over overlaps exactly as ``slide_inference`` does
   (added in the logits' own dtype into a float32 sum);
4. ``method.refine_image(map, image, query_to_class)`` gets the averaged
   (Q, H, W) map and the normalised image and returns the image's query logits.

The per-window path of every other method (``slide.slide_inference``) is not involved.
"""
from typing import List, Sequence

import torch

from .slide import _upsample_cut, pad_to_patch, window_boxes


def image_level_inference(images: Sequence[torch.Tensor], method, encoder, text: torch.Tensor,
                          query_to_class: torch.Tensor, crop, stride, patch, mode: str = 'slide',
                          max_windows: int = 16, fit: str = 'pad') -> List[torch.Tensor]:
    """Query logits (Q, H, W) of each normalised image (3, H, W) from an image-level method.

    Args:
        images: normalised images; sizes may differ.
        method: a ``DenseMethod`` with ``image_level = True``.
        encoder: the wrapped CLIP tower.
        text: query embeddings (Q, dim).
        query_to_class: (Q,) class index of each query.
        crop, stride, patch: window size, step and padding multiple.
        mode: ``slide`` or ``whole`` (one window: the image).
        max_windows: windows per ``window_features`` call.
        fit: ``pad`` (zero-pad windows to patch multiples) or ``truncate``.
    """
    out = []
    step = max(1, int(max_windows))
    for img in images:
        H, W = img.shape[-2:]
        boxes = window_boxes(H, W, crop, stride) if mode == 'slide' else [(0, H, 0, W)]
        parts, padded_size, cut = [], None, None
        for s in range(0, len(boxes), step):
            crops = torch.stack([img[:, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes[s:s + step]])
            if fit == 'truncate':
                padded, cut = crops, (0, 0) + tuple(crops.shape[-2:])
            else:
                padded, cut = pad_to_patch(crops, patch)
            padded_size = padded.shape[-2:]
            parts.append(method.window_features(encoder, padded, text))
        feats = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        top, left = cut[0], cut[1]
        origins = torch.tensor([(y1 - top, x1 - left) for y1, _, x1, _ in boxes], dtype=torch.float32)
        logits = method.propagate(feats, origins, text)
        pred = img.new_zeros((logits.shape[1], H, W), dtype=torch.float32)
        count = img.new_zeros((1, H, W), dtype=torch.float32)
        for k, (y1, y2, x1, x2) in enumerate(boxes):
            # added in the logits' dtype (float64 for LPOSS) into the float32 sum, as the authors' code adds
            pred[:, y1:y2, x1:x2].add_(_upsample_cut(logits[k:k + 1], padded_size, cut)[0])
            count[:, y1:y2, x1:x2] += 1
        out.append(method.refine_image(pred.div_(count), img, query_to_class))
    return out
