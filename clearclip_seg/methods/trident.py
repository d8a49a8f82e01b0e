"""Trident (Shi et al., ICCV 2025): splice-then-segment with CLIP, DINO and SAM.

As the authors' evaluation runs it (YuHengsss/Trident: ``trident.py``
``get_trident_seg``, ``seg_utils/utils.py`` ``preprocess_image``,
``open_clip/transformer.py`` ``custom_attn`` / ``guidance_attn``), per image:

1. **Resize for CLIP** (``clip_resize_shape``): unless both sides are patch
   multiples, the long side is rounded up to a patch multiple L', each side
   scaled by L'/L (``int``), rounded up to a patch multiple and raised to at
   least the crop; bilinear (align_corners False).
2. **Windows**: MMSeg's slide rule (crop 336, stride 224; VOC20 112), every
   corner a patch multiple; all windows of the image form one batch.
3. **Proxy attention** per window as ProxyCLIP's (DINO ViT-B/16 features on
   the window, ``softmax_row(γ (S − β m))`` with entries below 0 masked, CLIP's
   last-block V resized to the DINO grid, ``out_proj``; no residual, FFN or
   class token), except that m is the mean of S over **all windows of the
   image** (the official code batches them).
4. **Splice** (``splice``): each window's output map (before ``ln_post``) is
   added into the image's grid at its cells and divided by the per-cell window
   count (a DINO grid finer than the window's CLIP grid splices at that ratio).
5. **Segment**: the spliced map is resized bilinearly to SAM's valid grid and
   aggregated there with SAM's last-block attention (``trident_sam.py``);
   ``ln_post`` and ``proj`` follow; cosine logits on SAM's grid are resized
   bilinearly to the original image size (by the segmentor, in bands of rows
   on a large image). Cityscapes (``sam_split_halves``):
   SAM runs on the left and right halves, the spliced map is cut at its middle
   column and each half is aggregated on its own SAM grid, then concatenated.
6. **SAM refinement** (``sam_refine``, the published numbers'): prompts SAM's
   mask decoder with each confident region (``trident_refine.py``).

Classification (softmax of 40 x logits over queries, max over synonyms,
argmax, ``prob_thd``) is the segmentor's: the official background merge is
the same for the shipped class files.

Deliberate differences from the official code (rounding level, or what has no
official counterpart): sums in float32 (the official code runs fp16 on GPU);
the proxy similarity S in float32 (as ProxyCLIP here); the affinity and SAM's
last attention accumulated head by head (bounded memory, ``trident_sam.py``);
an input without an image file (the API, the demo) gives SAM the network input
un-normalised and resized back to the original size instead of the file.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..models.slide import _pair, window_boxes
from ..options import check_bool, check_number
from .proxyclip import ProxyCLIP, resize_values
from .registry import register_method
from .trident_sam import (load_sam, read_rgb, sam_affinity, sam_encode, sam_input, sam_norm, sam_source_image)


def clip_resize_shape(h: int, w: int, patch: int, crop: int) -> Tuple[int, int]:
    """Trident's ``preprocess_image`` size: (h, w) unchanged when both are patch multiples, else see the module doc."""
    if h % patch == 0 and w % patch == 0:
        return h, w
    longer = max(h, w)
    dst = -(-longer // patch) * patch
    new_h, new_w = int(h * dst / longer), int(w * dst / longer)
    new_h, new_w = -(-new_h // patch) * patch, -(-new_w // patch) * patch
    return max(new_h, crop), max(new_w, crop)


def batch_proxy_attention(feats: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Proxy attention (B, IJ, IJ) of all windows of one image: mean(S) over every window's entries."""
    phi = F.normalize(feats.flatten(2).float(), dim=1)
    sim = phi.transpose(1, 2) @ phi
    logits = gamma * (sim - beta * sim.mean())
    return torch.softmax(logits.masked_fill(logits < 0, float('-inf')), dim=-1)


def splice(maps: torch.Tensor, cells: Sequence[Tuple[int, int, int, int]], size: Tuple[int, int]) -> torch.Tensor:
    """Average window maps (B, C, h, w) placed at ``cells`` (y1, y2, x1, x2) into one (C, *size) map."""
    acc = maps.new_zeros((maps.shape[1],) + tuple(size), dtype=torch.float32)
    count = maps.new_zeros((1,) + tuple(size), dtype=torch.float32)
    for m, (y1, y2, x1, x2) in zip(maps, cells):
        acc[:, y1:y2, x1:x2] += m.float()
        count[:, y1:y2, x1:x2] += 1
    return acc / count


def aggregate(weights: torch.Tensor, spliced: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Resize the spliced map (C, h, w) to SAM's valid ``grid`` and aggregate: ``W D`` -> (h_s, w_s, C)."""
    d = F.interpolate(spliced[None], size=tuple(grid), mode='bilinear', align_corners=False)[0]
    return (weights @ d.flatten(1).transpose(0, 1)).view(grid[0], grid[1], -1)


@register_method('Trident')
class Trident(ProxyCLIP):
    """Trident: ProxyCLIP windows spliced, then aggregated over the image with SAM's attention.

    An image-level method: the segmentor calls ``image_logits`` on the whole
    image (its windows are Trident's own, from ``test_cfg.crop_size/stride``).

    Args:
        vfm, vfm_checkpoint, vfm_pretrained, vfm_kwargs, pos_embed_resize, beta,
            gamma, input_mean, input_std: ProxyCLIP's (``methods/proxyclip.py``);
            the proxy model is always DINO ViT-B/16 (the official code loads
            ``dino_vitb16`` from torch.hub whatever its config says), with
            DINO's hub position-embedding resize.
        sam: timm SAM image encoder (``samvit_base_patch16``: SAM ViT-B, the
            only one the official configs name).
        sam_checkpoint: local SAM checkpoint (``sam_vit_b_01ec64.pth``: image
            encoder, prompt encoder and mask decoder; offline use).
        sam_pretrained: load pretrained SAM weights (False: random, for tests).
        sam_kwargs: extra ``timm.create_model`` keywords (tests: a small SAM).
        cos_fac: the affinity threshold factor (1.2; VOC20 0.0, Cityscapes 3.0).
        refine_neg_cos: keep negative thresholds (False: they become 0.6).
        sam_split_halves: SAM on the image's left and right halves (Cityscapes).
        sam_refine: SAM prompt refinement (the published numbers use it).
        sam_iou_thresh, coarse_thresh, minimal_area, sam_mask_coff: the
            refinement's settings (0.8, 0.2, 225, 0.005).
    """
    image_level = True
    accepts_text_head = False

    def __init__(self, vfm: str = 'vit_base_patch16_224.dino', vfm_checkpoint: Optional[str] = None,
                 vfm_pretrained: bool = True, vfm_kwargs: Optional[dict] = None, pos_embed_resize: str = 'dino_hub',
                 beta: float = 1.2, gamma: float = 3.0, sam: str = 'samvit_base_patch16',
                 sam_checkpoint: Optional[str] = None, sam_pretrained: bool = True, sam_kwargs: Optional[dict] = None,
                 cos_fac: float = 1.2, refine_neg_cos: bool = True, sam_split_halves: bool = False,
                 sam_refine: bool = True, sam_iou_thresh: float = 0.8, coarse_thresh: float = 0.2,
                 minimal_area: int = 225, sam_mask_coff: float = 0.005,
                 input_mean: Optional[Sequence[float]] = None, input_std: Optional[Sequence[float]] = None,
                 key: str = 'model.method'):
        super().__init__(vfm=vfm, vfm_checkpoint=vfm_checkpoint, vfm_pretrained=vfm_pretrained,
                         vfm_kwargs={'dynamic_img_size': True, **(vfm_kwargs or {})}, vfm_input_size=None,
                         pos_embed_resize=pos_embed_resize, beta=beta, gamma=gamma,
                         input_mean=input_mean, input_std=input_std, key=key)
        if not isinstance(sam, str) or not sam:
            raise ValueError(f'{key}.sam={sam!r}: expected a timm SAM model name such as samvit_base_patch16')
        self.sam = sam
        self.sam_checkpoint = sam_checkpoint
        self.sam_pretrained = check_bool(sam_pretrained, f'{key}.sam_pretrained')
        self.sam_kwargs = dict(sam_kwargs or {})
        self.cos_fac = check_number(cos_fac, f'{key}.cos_fac')
        self.refine_neg_cos = check_bool(refine_neg_cos, f'{key}.refine_neg_cos')
        self.sam_split_halves = check_bool(sam_split_halves, f'{key}.sam_split_halves')
        self.sam_refine = check_bool(sam_refine, f'{key}.sam_refine')
        self.sam_iou_thresh = check_number(sam_iou_thresh, f'{key}.sam_iou_thresh')
        self.coarse_thresh = check_number(coarse_thresh, f'{key}.coarse_thresh')
        self.minimal_area = int(check_number(minimal_area, f'{key}.minimal_area', low=0, integer=True))
        self.sam_mask_coff = check_number(sam_mask_coff, f'{key}.sam_mask_coff')
        self.window_multiple = None   # Trident's resize makes every window whole; nothing is padded
        self._key = key
        self._sam = None
        self._decoder = None
        self._state = None            # the current image's SAM state, for the refinement

    def options(self) -> dict:
        return dict(vfm=self.vfm, vfm_model=self.vfm_model, vfm_checkpoint=self.vfm_checkpoint,
                    vfm_pretrained=self.vfm_pretrained, pos_embed_resize=self.pos_embed_resize, beta=self.beta,
                    gamma=self.gamma, sam=self.sam, sam_checkpoint=self.sam_checkpoint,
                    sam_pretrained=self.sam_pretrained, cos_fac=self.cos_fac, refine_neg_cos=self.refine_neg_cos,
                    sam_split_halves=self.sam_split_halves, sam_refine=self.sam_refine,
                    sam_iou_thresh=self.sam_iou_thresh, coarse_thresh=self.coarse_thresh,
                    minimal_area=self.minimal_area, sam_mask_coff=self.sam_mask_coff)

    @property
    def refines_labels(self) -> bool:
        return self.sam_refine

    # -- models ------------------------------------------------------------------
    def load(self):
        if self._sam is None:
            self._sam = load_sam(self.sam, self.sam_checkpoint, self.sam_pretrained, self.sam_kwargs, self._key)
        return super().load()

    def sam_model(self, device, dtype):
        self.load()
        param = next(self._sam.parameters())
        if param.device != device or param.dtype != dtype:
            self._sam.to(device=device, dtype=dtype)
        return self._sam

    def features(self, encoder, x):
        raise TypeError('Trident scores whole images (image_logits), not windows: use it through the segmentor')

    def patch_logits(self, encoder, x, text):
        raise TypeError('Trident scores whole images (image_logits), not windows: use it through the segmentor')

    # -- SAM -------------------------------------------------------------------------
    def sam_image(self, image: torch.Tensor, meta: Optional[dict]) -> np.ndarray:
        """The RGB uint8 image SAM sees: the original file, else the input un-normalised at its original size."""
        meta = meta or {}
        if meta.get('img_path'):
            return read_rgb(meta['img_path'])
        mean = torch.tensor(self.input_mean, device=image.device).view(3, 1, 1)
        std = torch.tensor(self.input_std, device=image.device).view(3, 1, 1)
        rgb = image.float() * std + mean
        size = tuple(meta.get('ori_shape', rgb.shape[-2:])[:2])
        if tuple(rgb.shape[-2:]) != size:
            rgb = F.interpolate(rgb[None], size=size, mode='bilinear', align_corners=False)[0]
        return rgb.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def _sam_pass(self, img: np.ndarray, device, dtype, need_features: bool, need_weights: bool = True):
        sam = self.sam_model(device, dtype)
        x, input_size = sam_input(img, *sam_norm(sam), dtype=dtype, device=device)
        probs, vals, grid, feats = sam_encode(sam, x, input_size, need_features)
        weights = sam_affinity(probs, vals, self.cos_fac, self.refine_neg_cos) if need_weights else None
        return weights, grid, feats, input_size

    # -- the image ---------------------------------------------------------------------
    def spliced_features(self, encoder, image: torch.Tensor, crop, stride) -> torch.Tensor:
        """Steps 1-4: the window outputs (before ``ln_post``) spliced over the image, (width, h, w)."""
        ph, pw = encoder.patch_size
        (ch, cw), (sh, sw) = crop, stride
        x = image[None].float()
        H, W = clip_resize_shape(x.shape[-2], x.shape[-1], ph, max(ch, cw))
        if (H, W) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(H, W), mode='bilinear', align_corners=False)
        boxes = window_boxes(H, W, (ch, cw), (sh, sw))
        for box in boxes:
            if any(v % p for v, p in zip(box, (ph, ph, pw, pw))):
                raise ValueError(f'Trident: window {box} is not on the patch grid {encoder.patch_size} '
                                 '(model.test_cfg.crop_size/stride must be patch multiples)')
        crops = torch.cat([x[..., y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
        feats = self.proxy_features(crops, encoder.dtype)
        size = tuple(feats.shape[-2:])
        attn = batch_proxy_attention(feats, self.beta, self.gamma)
        tokens, grid = encoder.last_block_input(crops)
        v = encoder.qkv(tokens, ('v',))['v'][:, :, encoder.num_prefix_tokens:]
        out = encoder.project_heads(attn[:, None].to(v.dtype) @ resize_values(v, grid, size))
        maps = out.transpose(1, 2).reshape(len(boxes), -1, *size)
        # the window's CLIP grid vs the proxy grid: splice at their ratio (official guidance_attn)
        if size[1] % grid[1]:
            ratio = int(round(size[0] / grid[0]))
            maps = F.interpolate(maps, size=(grid[0] * ratio, grid[1] * ratio), mode='bilinear', align_corners=False)
        else:
            ratio = size[1] // grid[1]
        cells = [(y1 // ph * ratio, y2 // ph * ratio, x1 // pw * ratio, x2 // pw * ratio) for y1, y2, x1, x2 in boxes]
        return splice(maps, cells, (H // ph * ratio, W // pw * ratio))

    def image_logits(self, encoder, image: torch.Tensor, text: torch.Tensor, meta: Optional[dict] = None,
                     test_cfg: Optional[dict] = None, query_to_class: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Cosine logits (Q, h_s, w_s) of one normalised image (3, H, W) on SAM's valid grid.

        The segmentor resizes them bilinearly (align_corners False) to the original
        size, as the official code does (in bands of rows on a large image).
        """
        test_cfg = test_cfg or {}
        crop, stride = _pair(test_cfg.get('crop_size', 336)), _pair(test_cfg.get('stride', 224))
        device, dtype = image.device, encoder.dtype
        src = sam_source_image(self.sam_image(image, meta), encoder.patch_size[0])
        if self.sam_split_halves:
            half = src.shape[1] // 2
            parts = [self._sam_pass(np.ascontiguousarray(s), device, dtype, False)
                     for s in (src[:, :half], src[:, half:])]
        else:
            parts = [self._sam_pass(src, device, dtype, self.sam_refine)]
        spliced = self.spliced_features(encoder, image, crop, stride)
        if len(parts) == 2:
            mid = spliced.shape[-1] // 2
            pieces = [spliced[..., :mid], spliced[..., mid:]]
        else:
            pieces = [spliced]
        y = torch.cat([aggregate(w, d, grid) for (w, grid, _, _), d in zip(parts, pieces)], dim=1)
        feats = encoder.head(y.reshape(1, -1, y.shape[-1]).to(dtype))[0]
        feats = F.normalize(feats.float(), dim=-1)
        logits = (feats @ text.float().t()).t().reshape(-1, y.shape[0], y.shape[1])
        size = tuple((meta or {}).get('ori_shape', image.shape[-2:])[:2])
        if self.sam_refine:
            if len(parts) == 2:   # the refinement prompts SAM on the whole image (a third pass)
                _, _, feats_sam, input_size = self._sam_pass(src, device, dtype, True, need_weights=False)
            else:
                _, _, feats_sam, input_size = parts[0]
            self._state = dict(features=feats_sam, input_size=input_size, sam_size=src.shape[:2],
                               image_size=size)
        return logits

    def refine_labels(self, labels: torch.Tensor, probs: torch.Tensor, meta: Optional[dict] = None) -> torch.Tensor:
        """SAM prompt refinement of the labels (1, H, W) from the class probabilities (C, H, W)."""
        from .trident_refine import refine, load_decoder  # lazy: the refinement needs segment-anything
        if self._decoder is None:
            self._decoder = load_decoder(self.sam_checkpoint, self.sam_pretrained, self._key)
        state = self._state
        return refine(labels, probs, self._decoder, state['features'], state['input_size'], state['sam_size'],
                      state['image_size'], self.coarse_thresh, self.minimal_area, self.sam_mask_coff,
                      self.sam_iou_thresh)
