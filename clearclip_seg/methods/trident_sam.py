"""Trident's SAM side: the image SAM sees, its last-block attention and values, and the affinity built from them.

As Trident's code runs it (YuHengsss/Trident: ``trident.py`` ``get_trident_seg``
/ ``get_sam_feat``, the vendored ``segment_anything`` ``SamPredictor.set_image``
and ``image_encoder.py``, ``open_clip/transformer.py`` ``get_sam_sim``):

* SAM sees the original image (RGB, uint8), each side rounded **up** to a
  multiple of 16 with OpenCV bilinear (``sam_source_image``), then resized by
  PIL bilinear to a long side of 1024 (``(int(h r + 0.5), int(w r + 0.5))``,
  ``r = 1024 / max(h, w)``, the ``input_size``), normalised with SAM's
  mean/std (x255) and zero-padded right/bottom to 1024 x 1024;
* the image encoder runs as SAM's (timm's ``samvit_*``: same weights and
  operations, with SAM's LayerNorm eps 1e-6 where timm would build 1e-5; at
  1024 the absolute position embedding is never resized); of
  its **last** block (a global-attention block) the post-softmax attention P
  (decomposed relative positions added before the softmax) and the values V
  are kept, both cut to the valid grid ``(input_size // 16)``: P's rows then
  no longer sum to 1 (the padded keys are cut off);
* ``sam_affinity``: ``V̂`` = V L2-normalised per head, ``C_h = V̂_h V̂_hᵀ``;
  ``θ_i = cos_fac * mean_h mean_j C_h[i, j]``; with ``refine_neg_cos=False``
  ``θ_i < 0`` becomes 0.6; then ``θ_i > 0.9`` becomes 0.9;
  ``W = R(mean_h 1[C_h > θ] ⊙ P_h)``, R the row normalisation (no epsilon:
  the diagonal always survives).

Memory is bounded (the official code holds heads x 4096² attention plus its
relative-position copy and several heads x N² affinity tensors at once): the
last block's attention is computed one head at a time and cut to the valid grid
at once, and the affinity is accumulated head by head, so the peak is a few
4096² and N² maps, not heads times them (docs/performance.md). Sums are
therefore taken in a different order than the official code's (mean over keys
per head, then over heads), a rounding-level difference.
"""
import functools
import os
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .proxyclip import load_vfm

SAM_IMAGE_SIZE = 1024   # SAM's fixed square input (ResizeLongestSide(1024), padded)


def round_up(n: int, m: int) -> int:
    return -(-int(n) // m) * m


def longest_side_shape(h: int, w: int, long_side: int) -> Tuple[int, int]:
    """SAM's ``ResizeLongestSide.get_preprocess_shape``: (int(h r + 0.5), int(w r + 0.5)), r = long_side / max(h, w)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def read_rgb(path: str) -> np.ndarray:
    """The image file as the authors read it for SAM: ``cv2.imread`` then BGR -> RGB (uint8, H x W x 3)."""
    import cv2
    img = cv2.imread(path) if os.path.isfile(path) else None
    if img is None:
        raise FileNotFoundError(f"Trident: image '{path}' (data sample img_path) could not be read for SAM")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def sam_source_image(img: np.ndarray, multiple: int = 16) -> np.ndarray:
    """The image each side rounded up to ``multiple`` with OpenCV bilinear (``get_trident_seg``)."""
    import cv2
    h, w = img.shape[:2]
    return cv2.resize(img, (round_up(w, multiple), round_up(h, multiple)))


def sam_input(img: np.ndarray, mean, std, dtype=torch.float32, device=None) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """SAM's ``set_image``: PIL-bilinear resize to a long side of 1024, normalise, zero-pad -> (1, 3, 1024, 1024).

    Returns the padded input and ``input_size`` (the resized image's (h, w)).
    """
    from PIL import Image
    h, w = longest_side_shape(img.shape[0], img.shape[1], SAM_IMAGE_SIZE)
    resized = np.array(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    x = torch.as_tensor(resized, device=device).permute(2, 0, 1)[None].to(dtype)
    mean = torch.tensor(mean, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, device=device, dtype=dtype).view(1, 3, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, SAM_IMAGE_SIZE - w, 0, SAM_IMAGE_SIZE - h)), (h, w)


def sam_norm(sam) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """SAM's pixel mean/std (x255) from the timm model's config (SAM's own values: ImageNet's x255)."""
    cfg = getattr(sam, 'pretrained_cfg', None) or {}
    mean = cfg.get('mean', (0.485, 0.456, 0.406))
    std = cfg.get('std', (0.229, 0.224, 0.225))
    return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)


def check_sam(sam) -> None:
    """One-line error unless the timm SAM's last block is a global-attention block."""
    last = sam.blocks[-1]
    if getattr(last, 'window_size', 0):
        raise ValueError('Trident: the SAM image encoder\'s last block must use global attention '
                         '(timm samvit_*: its index in global_attn_indexes)')


def _last_block_heads(attn, y: torch.Tensor, grid: Tuple[int, int], valid: Tuple[int, int], need_out: bool):
    """Per head: the last block's attention cut to the valid grid, its values, and (optionally) P V on the full grid."""
    from timm.models.vision_transformer_sam import get_rel_pos
    H, W = grid
    hs, ws = valid
    N = H * W
    heads = attn.num_heads
    qkv = attn.qkv(y).view(N, 3, heads, -1).permute(1, 2, 0, 3)   # (3, heads, N, d)
    q, k, v = attn.q_norm(qkv[0]), attn.k_norm(qkv[1]), qkv[2]
    if attn.use_rel_pos:
        rh, rw = get_rel_pos(H, H, attn.rel_pos_h), get_rel_pos(W, W, attn.rel_pos_w)
    probs, outs = [], []
    for h in range(heads):
        # SAM's order: (q s) kᵀ, then + rel_h (over key rows) + rel_w (over key columns), softmax
        logits = ((q[h] * attn.scale) @ k[h].transpose(0, 1)).view(H, W, H, W)
        if attn.use_rel_pos:
            r_q = q[h].reshape(H, W, -1)
            rel_h = torch.einsum('hwc,hkc->hwk', r_q, rh)
            rel_w = torch.einsum('hwc,wkc->hwk', r_q, rw)
            logits = logits + rel_h[:, :, :, None] + rel_w[:, :, None, :]
        p = logits.view(N, N).softmax(dim=-1)
        if need_out:
            outs.append(p @ v[h])
        probs.append(p.view(H, W, H, W)[:hs, :ws, :hs, :ws].reshape(hs * ws, hs * ws))
        del logits, p
    vals = v.reshape(heads, H, W, -1)[:, :hs, :ws].reshape(heads, hs * ws, -1)
    out = torch.stack(outs) if need_out else None
    return torch.stack(probs), vals, out


def sam_encode(sam, x: torch.Tensor, input_size: Tuple[int, int], need_features: bool = False):
    """Run SAM's image encoder on (1, 3, 1024, 1024); keep the last block's attention and values.

    Returns:
        ``P`` (heads, N_s, N_s), ``V`` (heads, N_s, d) on the valid grid (h_s, w_s) =
        input_size // patch, the grid, and (with ``need_features``) the encoder's
        output (1, 256, 64, 64) (the neck's, what ``SamPredictor.features`` holds).
    """
    from timm.layers import resample_abs_pos_embed_nhwc
    check_sam(sam)
    t = sam.patch_embed(x)
    if sam.pos_embed is not None:
        t = t + resample_abs_pos_embed_nhwc(sam.pos_embed, t.shape[1:3])
    t = sam.norm_pre(sam.patch_drop(sam.pos_drop(t)))
    for blk in sam.blocks[:-1]:
        t = blk(t)
    last = sam.blocks[-1]
    _, H, W, C = t.shape
    ph, pw = sam.patch_embed.patch_size
    valid = (input_size[0] // ph, input_size[1] // pw)
    y = last.norm1(t).reshape(H * W, C)
    probs, vals, out = _last_block_heads(last.attn, y, (H, W), valid, need_features)
    feats = None
    if need_features:
        o = last.attn.proj(out.permute(1, 0, 2).reshape(H * W, C)).view(1, H, W, C)
        t = t + last.ls1(o)
        t = t + last.ls2(last.mlp(last.norm2(t)))
        feats = sam.neck(t.permute(0, 3, 1, 2))
    return probs, vals, valid, feats


def sam_affinity(probs: torch.Tensor, vals: torch.Tensor, cos_fac: float, refine_neg_cos: bool = True) -> torch.Tensor:
    """Trident's ``get_sam_sim``: the (N, N) aggregation weights from SAM's P (heads, N, N) and V (heads, N, d).

    Accumulated one head at a time (bounded memory); float32.
    """
    heads = probs.shape[0]
    vhat = F.normalize(vals.float(), dim=-1)
    # θ_i = cos_fac * mean over heads and keys of V̂_h,i · V̂_h,j
    theta = sum((vhat[h] @ vhat[h].transpose(0, 1)).mean(dim=-1) for h in range(heads)) / heads
    theta = cos_fac * theta
    if not refine_neg_cos:
        theta = torch.where(theta < 0.0, torch.full_like(theta, 0.6), theta)
    theta = torch.where(theta > 0.9, torch.full_like(theta, 0.9), theta)[:, None]
    acc = torch.zeros(probs.shape[1:], dtype=torch.float32, device=probs.device)
    for h in range(heads):
        sim = vhat[h] @ vhat[h].transpose(0, 1)
        acc += torch.where(sim > theta, probs[h].float(), torch.zeros((), device=probs.device))
    acc /= heads
    return acc / acc.sum(dim=-1, keepdim=True)


def load_sam(name: str, checkpoint: Optional[str], pretrained: bool, kwargs: Optional[dict], key: str):
    """The timm SAM image encoder, frozen: from ``checkpoint`` (SAM's own .pth or timm's), the hub, or random."""
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"SAM checkpoint '{checkpoint}' ({key}.sam_checkpoint) not found: download "
                                'sam_vit_b_01ec64.pth (facebookresearch/segment-anything) and set '
                                f'{key}.sam_checkpoint=/path/to/it')
    # timm's samvit_* build their LayerNorms with torch's eps 1e-5 (the class default norm_layer is
    # nn.LayerNorm); SAM's image encoder uses 1e-6: set SAM's, or the features drift (~1e-2)
    kwargs = {'norm_layer': functools.partial(torch.nn.LayerNorm, eps=1e-6), **(kwargs or {})}
    try:
        return load_vfm(name, checkpoint, pretrained, kwargs, 'timm')
    except RuntimeError as e:
        raise RuntimeError(f"could not load SAM weights '{name}' (offline or not cached); set "
                           f'{key}.sam_checkpoint=/path/to/sam_vit_b_01ec64.pth') from e
