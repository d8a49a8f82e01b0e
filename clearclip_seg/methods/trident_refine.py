"""Trident's SAM prompt refinement (``seg_utils/utils.py`` ``sam_refinement`` in YuHengsss/Trident).

Given the labels (1, H, W) after ``prob_thd`` and the class probabilities P
(C, H, W) at the original size, and SAM's image embedding of the image SAM saw:

1. half resolution (dh, dw) = (H // 2, W // 2): labels by nearest, P bilinear;
2. labels whose top probability is below ``coarse_thresh`` become "uncertain";
3. per class c whose top half-resolution probability reaches ``coarse_thresh``:
   the 8-connected components of {label = c} with at least ``minimal_area``
   pixels; per component a point (the first maximum of P_c inside it, (x, y))
   and a box (x_min, y_min, x_max, y_max, inclusive);
4. per class with components, SAM's prompt encoder and mask decoder (one mask
   per prompt): points with label 1 and boxes, scaled by
   ``get_preprocess_shape(dh, dw, 1024) / (dh, dw)`` (not by SAM's input size:
   the official transform), and the mask prompt ``sam_mask_coff * P_c`` where
   P_c > ``coarse_thresh`` (else 0), P_c resized to the original image's
   long-side-256 shape and zero-padded to 256 x 256, passed **without a batch
   dimension** as the official code does (SAM's mask convolutions then see one
   unbatched channel and its LayerNorm2d normalises over rows; reproduced by
   calling segment-anything's own prompt encoder the same way);
5. masks whose predicted IoU exceeds ``sam_iou_thresh`` are kept; their logits
   go through SAM's ``postprocess_masks`` (to 1024², cut to the input size, to
   the size SAM's image had) and, if that is not the original size, bilinearly
   to it; masks are logits > 0;
6. per class with kept masks: value_c = [union of its masks] x max_k
   sigmoid(logit_k) P_c; the label is argmax_c value_c where some value is
   non-zero, else the input label. (The official ``map_failed_regions`` changes
   no label: its test compares against values it has just raised.)

SAM's prompt encoder and mask decoder come from ``segment-anything`` (the
package), with the weights of the SAM checkpoint the image encoder was loaded
from; connected components use OpenCV (8-connectivity, as scikit-image's
``label(connectivity=2)``; component order does not change the result).
"""
import os
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .trident_sam import SAM_IMAGE_SIZE, longest_side_shape

MASK_PROMPT_SIZE = 256   # SAM's low-resolution mask side


def build_decoder(seed: Optional[int] = None):
    """SAM's prompt encoder and mask decoder (segment-anything's ``build_sam`` shapes), fp32, eval."""
    try:
        from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    except ImportError as e:
        raise ImportError('Trident sam_refine=True needs segment-anything: pip install segment-anything '
                          '(or set model.method.sam_refine=False)') from e
    if seed is not None:
        torch.manual_seed(seed)
    grid = SAM_IMAGE_SIZE // 16
    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                           input_image_size=(SAM_IMAGE_SIZE, SAM_IMAGE_SIZE), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
    return torch.nn.ModuleDict(dict(prompt_encoder=prompt, mask_decoder=decoder)).eval().requires_grad_(False)


def load_decoder(checkpoint: Optional[str], pretrained: bool, key: str = 'model.method'):
    """The prompt encoder and mask decoder: from SAM's checkpoint file, or random (``pretrained=False``, seed 0)."""
    if not pretrained and checkpoint is None:
        return build_decoder(seed=0)
    if checkpoint is None or not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"Trident's SAM refinement needs SAM's own checkpoint file: set {key}.sam_checkpoint="
                                '/path/to/sam_vit_b_01ec64.pth (facebookresearch/segment-anything), got '
                                f'{checkpoint!r}')
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    wanted = {k: v for k, v in state.items() if k.startswith(('prompt_encoder.', 'mask_decoder.'))}
    if not wanted:
        raise ValueError(f"SAM checkpoint '{checkpoint}' ({key}.sam_checkpoint) has no prompt_encoder/mask_decoder "
                         "weights: expected SAM's own .pth (sam_vit_b_01ec64.pth)")
    model = build_decoder()
    model.load_state_dict(wanted, strict=True)
    return model


def regions(mask: np.ndarray, prob: torch.Tensor, minimal_area: int):
    """8-connected components of ``mask`` (h, w) with >= minimal_area pixels: (masks, boxes (n, 4), points (n, 2))."""
    import cv2
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    masks, boxes, points = [], [], []
    w = mask.shape[1]
    for k in range(1, n):
        region = labels == k
        if region.sum() < minimal_area:
            continue
        ys, xs = np.nonzero(region)
        pos = int(torch.argmax(prob * torch.from_numpy(region).to(prob)))
        masks.append(region)
        boxes.append((xs.min(), ys.min(), xs.max(), ys.max()))
        points.append((pos % w, pos // w))
    return masks, torch.tensor(boxes, dtype=torch.float32), torch.tensor(points, dtype=torch.float32)


def scale_coords(coords: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """SAM's ``apply_coords_torch`` for an image of ``size`` (h, w): x, y scaled to its long-side-1024 shape."""
    h, w = size
    nh, nw = longest_side_shape(h, w, SAM_IMAGE_SIZE)
    out = coords.clone().float()
    out[..., 0] = out[..., 0] * (nw / w)
    out[..., 1] = out[..., 1] * (nh / h)
    return out


def mask_prompt(prob: torch.Tensor, image_size: Tuple[int, int], coarse_thresh: float, coff: float) -> torch.Tensor:
    """The dense prompt (1, 256, 256): P_c resized to the image's long-side-256 shape, padded, thresholded, scaled."""
    nh, nw = longest_side_shape(image_size[0], image_size[1], MASK_PROMPT_SIZE)
    r = F.interpolate(prob[None, None].float(), size=(nh, nw), mode='bilinear', align_corners=False)[0]
    r = F.pad(r, (0, MASK_PROMPT_SIZE - nw, 0, MASK_PROMPT_SIZE - nh))
    return torch.where(r > coarse_thresh, coff * r, torch.zeros((), device=r.device))


def postprocess_masks(logits: torch.Tensor, input_size: Tuple[int, int], size: Tuple[int, int]) -> torch.Tensor:
    """SAM's ``postprocess_masks``: low-resolution logits (n, 1, 256, 256) -> (n, 1, *size)."""
    x = F.interpolate(logits, (SAM_IMAGE_SIZE, SAM_IMAGE_SIZE), mode='bilinear', align_corners=False)
    x = x[..., :input_size[0], :input_size[1]]
    return F.interpolate(x, tuple(size), mode='bilinear', align_corners=False)


@torch.no_grad()
def refine(labels: torch.Tensor, probs: torch.Tensor, decoder, features: torch.Tensor, input_size, sam_size,
           image_size, coarse_thresh: float, minimal_area: int, coff: float, iou_thresh: float) -> torch.Tensor:
    """Refined labels (1, H, W); see the module doc."""
    C, H, W = probs.shape
    dh, dw = H // 2, W // 2
    labels_d = F.interpolate(labels[None].float(), (dh, dw), mode='nearest')[0].long()
    probs_d = F.interpolate(probs[None].float(), (dh, dw), mode='bilinear', align_corners=False)[0]
    if coarse_thresh > 0:
        labels_d[probs_d.max(0, keepdim=True)[0] < coarse_thresh] = C
    labels_np = labels_d[0].cpu().numpy()
    features = features.float()
    prompt, dec = decoder['prompt_encoder'].to(features.device), decoder['mask_decoder'].to(features.device)
    kept = {}
    for c in range(C):
        if probs_d[c].max() < coarse_thresh:
            continue
        masks, boxes, points = regions(labels_np == c, probs_d[c], minimal_area)
        if not masks:
            continue
        dev = features.device
        pts = scale_coords(points.to(dev), (dh, dw))[:, None]
        bxs = scale_coords(boxes.to(dev).reshape(-1, 2, 2), (dh, dw)).reshape(-1, 4)
        dense_in = mask_prompt(probs_d[c], image_size, coarse_thresh, coff).to(dev)   # unbatched, as the official call
        sparse, dense = prompt(points=(pts, torch.ones(pts.shape[:2], device=dev)), boxes=bxs, masks=dense_in)
        low, iou = dec(image_embeddings=features, image_pe=prompt.get_dense_pe(), sparse_prompt_embeddings=sparse,
                       dense_prompt_embeddings=dense, multimask_output=False)
        valid = iou[:, 0] > iou_thresh
        if valid.any():
            kept[c] = low[valid]
    if not kept:
        return labels
    value = torch.zeros((C, H, W), device=probs.device)
    for c, low in kept.items():
        logits = postprocess_masks(low, input_size, sam_size)
        if tuple(logits.shape[-2:]) != (H, W):
            logits = F.interpolate(logits, (H, W), mode='bilinear', align_corners=False)
        union = (logits[:, 0] > 0).any(dim=0)
        value[c] = (logits[:, 0].sigmoid() * probs[c].float()).max(dim=0)[0] * union
    refined = value.argmax(0, keepdim=True)
    return torch.where(value.sum(0, keepdim=True) == 0, labels, refined.to(labels.dtype))
