"""LPOSS and LPOSS+ (Stojnic et al., CVPR 2025): label propagation over patches, then pixels.

As the authors' evaluation runs it (vladan-stojnic/LPOSS: ``models/lposs/lposs.py``,
``models/maskclip/maskclip.py``, ``segmentation/evaluation/lposs_eval.py``,
``configs/lposs*.yaml``):

* per window, CLIP features are MaskCLIP's with the last block's residual
  and FFN kept (attention replaced by the value path: ``LastBlock(identity,
  residual, ffn)``), normalised; their cosine with the normalised text
  embeddings are the initial scores Y (raw, no temperature);
* per window, DINO ViT-B/16 features are the **value** projection of the
  last block (``blocks[-1].attn.qkv`` on its LN1 output, heads concatenated,
  class token dropped), normalised; the window is given in RGB with
  ImageNet's mean/std, DINO's torch.hub positional-embedding resize;
* one graph over the patches of **all windows of the image**
  (``models/label_propagation.py``: kNN k = 400 by DINO similarity,
  ``max(s, 0)^3 exp(-0.01 d)``, ``W + W^T``), ``L = I - 0.95 W^`` and 10
  conjugate-gradient steps per query column from zero;
* window results are upsampled (float64) and averaged (float32 sum);
* LPOSS+ (``pixel_refine=True``) propagates the averaged map once more over
  the pixels of the resized image (Lab colour, 13 x 13 neighbourhood,
  tau = 0.01, the same alpha and CG);
* the queries of a class (background synonyms) are merged by max before the
  resize to the original size (``refine_image`` writes the max into every
  synonym's channel, so the segmentor's resize-then-max gives the same map).

The segmentor calls it through the image-level path
(``models/image_slide.py``): ``window_features`` per window batch,
``propagate`` once per image, ``refine_image`` on the averaged map.

Deliberate differences from the official code (docs/protocol.md, "Other
methods"): the image arrives normalised with CLIP's x255 constants and is
un-normalised for DINO and the Lab guide (differences near 1e-7); patch
distances are computed directly, not from ``torch.cdist``'s matrix form
(<= 5e-5 px there); ``k`` is capped at the number of patches (the official
faiss call fails below 400 patches; never on the benchmarks at short side
448); a window smaller than the crop is padded centred as every harness
method pads (the official code pads right/bottom), which moves its patch
centres by the padding.
"""
import os
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from ..models.image_slide import image_level_inference
from ..models.label_propagation import (PixelGraph, normalized_operator, patch_graph, patch_positions,
                                        propagate_patches)
from ..models.vfm_pos_embed import RULES as POS_EMBED_RULES
from ..models.vfm_pos_embed import use_pos_embed_rule
from ..options import check_bool, check_number
from ..protocol import constants
from .registry import DenseMethod, register_method

# DINO by short name: timm model (tag), kwargs, and the positional-embedding resize of the code
# the authors load (torch.hub facebookresearch/dino)
VFM_PRESETS = {
    'dino': dict(model='vit_base_patch16_224.dino', kwargs=dict(dynamic_img_size=True),
                 pos_embed_resize='dino_hub'),
}


def load_dino(name: str, checkpoint: Optional[str], pretrained: bool, kwargs: dict, pos_embed_resize: str,
              key: str = 'model.method'):
    """The frozen VFM (a timm ViT) by name: from ``checkpoint``, the timm/HF cache, or random weights."""
    import timm  # lazy: heavy, needed only when the method is built
    if name.split('.')[0] not in timm.list_models():
        raise ValueError(f"{key}.vfm='{name}' is not a timm model: expected one of {sorted(VFM_PRESETS)} "
                         'or a timm ViT name such as vit_base_patch16_224.dino')
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"{key}.vfm_checkpoint='{checkpoint}' not found: provide the weights of "
                                    f"timm '{name}' (.safetensors or .pth, e.g. model.safetensors from "
                                    f'huggingface.co/timm/{name})')
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint), **kwargs)
    elif pretrained:
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # hub download: offline, not cached
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise RuntimeError(f"could not load the weights of timm '{name}' ({first}): download them once "
                               f'where online, or set {key}.vfm_checkpoint=/path/to/model.safetensors '
                               f'(huggingface.co/timm/{name})') from e
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    model.eval().requires_grad_(False)
    return use_pos_embed_rule(model, pos_embed_resize, key=f'{key}.pos_embed_resize')


def merge_synonyms(logits: torch.Tensor, query_to_class: torch.Tensor) -> torch.Tensor:
    """Each query channel of (Q, H, W) replaced by the max over its class's queries (LPOSS's background merge)."""
    q2c = query_to_class.tolist()
    out = logits
    for c in sorted(set(q2c)):
        idx = [q for q, k in enumerate(q2c) if k == c]
        if len(idx) > 1:
            out = out.clone() if out is logits else out
            out[idx] = logits[idx].max(dim=0).values
    return out


@register_method('LPOSS')
class LPOSS(DenseMethod):
    """LPOSS's label propagation (``pixel_refine=True``: LPOSS+).

    Args:
        vfm: the VFM: ``dino`` (DINO ViT-B/16, timm ``vit_base_patch16_224.dino``) or a timm ViT name.
        vfm_checkpoint: local weights file for the VFM (offline use).
        vfm_pretrained: load pretrained VFM weights (False: random, for tests).
        vfm_kwargs: extra ``timm.create_model`` keywords (over the preset's).
        pos_embed_resize: the VFM's positional-embedding resize
            (``models/vfm_pos_embed.py``); ``'preset'``: ``dino_hub``.
        k: neighbours per patch (400).
        alpha: propagation weight (0.95), both graphs.
        gamma: exponent of the DINO similarity (3.0).
        sigma, pix_dist_pow: geometry ``exp(-sigma d^pow)`` in pixels (0.01, 1.0).
        cg_iters, cg_tol: conjugate-gradient steps and relative tolerance (10, 1e-6).
        pixel_refine: LPOSS+ (False).
        tau: Lab-distance scale of the pixel graph (0.01).
        r: pixel neighbourhood side (13: 6 pixels each way).
        pixel_chunk: queries solved together on the pixel graph (memory bound;
            the numbers do not depend on it).
        input_mean, input_std: the normalisation the windows arrive with (x255, RGB; CLIP's).
    """
    image_level = True
    accepts_text_head = False

    def __init__(self, vfm: str = 'dino', vfm_checkpoint: Optional[str] = None, vfm_pretrained: bool = True,
                 vfm_kwargs: Optional[dict] = None, pos_embed_resize: str = 'preset', k: int = 400,
                 alpha: float = 0.95, gamma: float = 3.0, sigma: float = 0.01, pix_dist_pow: float = 1.0,
                 cg_iters: int = 10, cg_tol: float = 1e-6, pixel_refine: bool = False, tau: float = 0.01,
                 r: int = 13, pixel_chunk: int = 16, input_mean: Optional[Sequence[float]] = None,
                 input_std: Optional[Sequence[float]] = None, key: str = 'model.method'):
        if not isinstance(vfm, str) or not vfm:
            raise ValueError(f'{key}.vfm={vfm!r}: expected one of {sorted(VFM_PRESETS)} or a timm ViT name')
        preset = VFM_PRESETS.get(vfm, dict(model=vfm, kwargs=dict(dynamic_img_size=True), pos_embed_resize='timm'))
        self.vfm = vfm
        self.vfm_model = preset['model']
        self.vfm_checkpoint = vfm_checkpoint
        self.vfm_pretrained = check_bool(vfm_pretrained, f'{key}.vfm_pretrained')
        self.vfm_kwargs = {**preset['kwargs'], **(vfm_kwargs or {})}
        self.pos_embed_resize = preset['pos_embed_resize'] if pos_embed_resize == 'preset' else pos_embed_resize
        if self.pos_embed_resize not in POS_EMBED_RULES:
            raise ValueError(f'{key}.pos_embed_resize={pos_embed_resize!r}: expected one of '
                             f"{sorted(POS_EMBED_RULES)} or 'preset'")
        self.k = int(check_number(k, f'{key}.k', low=1, integer=True))
        self.alpha = check_number(alpha, f'{key}.alpha', low=0, high=1, high_open=True)
        self.gamma = check_number(gamma, f'{key}.gamma', low=0)
        self.sigma = check_number(sigma, f'{key}.sigma', low=0)
        self.pix_dist_pow = check_number(pix_dist_pow, f'{key}.pix_dist_pow', low=0)
        self.cg_iters = int(check_number(cg_iters, f'{key}.cg_iters', low=1, integer=True))
        self.cg_tol = check_number(cg_tol, f'{key}.cg_tol', low=0)
        self.pixel_refine = check_bool(pixel_refine, f'{key}.pixel_refine')
        self.tau = check_number(tau, f'{key}.tau', low=0, low_open=True)
        self.r = int(check_number(r, f'{key}.r', low=3, integer=True))
        self.pixel_chunk = int(check_number(pixel_chunk, f'{key}.pixel_chunk', low=1, integer=True))
        input_mean = constants.CLIP_MEAN if input_mean is None else input_mean
        input_std = constants.CLIP_STD if input_std is None else input_std
        if len(input_mean) != 3 or len(input_std) != 3:
            raise ValueError(f'{key}.input_mean/input_std: expected three values each (RGB, x255)')
        self.input_mean = tuple(float(m) for m in input_mean)
        self.input_std = tuple(float(s) for s in input_std)
        self._vfm = None

    def options(self) -> dict:
        return dict(vfm=self.vfm, vfm_model=self.vfm_model, vfm_checkpoint=self.vfm_checkpoint,
                    vfm_pretrained=self.vfm_pretrained, pos_embed_resize=self.pos_embed_resize, k=self.k,
                    alpha=self.alpha, gamma=self.gamma, sigma=self.sigma, pix_dist_pow=self.pix_dist_pow,
                    cg_iters=self.cg_iters, cg_tol=self.cg_tol, pixel_refine=self.pixel_refine, tau=self.tau,
                    r=self.r)

    # -- models ------------------------------------------------------------------
    def bind(self, encoder) -> None:
        self.check_tower(encoder)
        for stage in ('last_block_input', 'last_block', 'head'):
            if not hasattr(encoder, stage):
                raise TypeError(f'LPOSS needs the encoder stage {stage}()')
        self.load()

    def load(self):
        """Load the VFM once (frozen, eval)."""
        if self._vfm is None:
            self._vfm = load_dino(self.vfm_model, self.vfm_checkpoint, self.vfm_pretrained, self.vfm_kwargs,
                                  self.pos_embed_resize)
        return self._vfm

    def rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (..., 3, H, W) -> RGB in [0, 1], float32."""
        mean = torch.tensor(self.input_mean, device=x.device).view(3, 1, 1) / 255.0
        std = torch.tensor(self.input_std, device=x.device).view(3, 1, 1) / 255.0
        return x.float() * std + mean

    def vfm_features(self, x: torch.Tensor) -> torch.Tensor:
        """Value vectors of the VFM's last block (B, gh, gw, C), normalised (twice, as the authors' model does)."""
        vfm = self.load()
        if next(vfm.parameters()).device != x.device:
            vfm.to(x.device)
        cfg = getattr(vfm, 'pretrained_cfg', None) or {}
        mean = torch.tensor(cfg.get('mean', (0.485, 0.456, 0.406)), device=x.device).view(3, 1, 1)
        std = torch.tensor(cfg.get('std', (0.229, 0.224, 0.225)), device=x.device).view(3, 1, 1)
        y = (self.rgb(x) - mean) / std
        t = vfm.norm_pre(vfm.patch_drop(vfm._pos_embed(vfm.patch_embed(y))))
        for blk in vfm.blocks[:-1]:
            t = blk(t)
        last = vfm.blocks[-1]
        dim = t.shape[-1]
        v = last.attn.qkv(last.norm1(t))[..., 2 * dim:]  # heads concatenated, head-major
        ph, pw = vfm.patch_embed.patch_size
        B, _, H, W = x.shape
        v = v[:, vfm.num_prefix_tokens:].float().reshape(B, H // ph, W // pw, dim)
        return F.normalize(v / v.norm(dim=-1, keepdim=True), dim=-1)

    def clip_features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        """MaskCLIP features with the last block's residual and FFN kept (B, gh, gw, dim), not normalised."""
        tokens, (gh, gw) = encoder.last_block_input(x)
        out = encoder.head(encoder.last_block(tokens, 'identity', True, True))
        return out[:, encoder.num_prefix_tokens:].reshape(out.shape[0], gh, gw, -1).float()

    # -- the image-level path (models/image_slide.py) -------------------------------
    def window_features(self, encoder, x: torch.Tensor, text: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-window CLIP features and VFM features (normalised), on their own grids."""
        return dict(clip=F.normalize(self.clip_features(encoder, x), dim=-1), vfm=self.vfm_features(x))

    def image_logits(self, encoder, image: torch.Tensor, text: torch.Tensor, meta: Optional[dict] = None,
                     test_cfg: Optional[dict] = None, query_to_class: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Query logits (Q, H, W) of one normalised image at its input size: every window's
        features, one propagation over all of them, the windows merged, then ``refine_image``."""
        cfg = test_cfg or {}
        return image_level_inference([image], self, encoder, text, query_to_class, cfg['crop_size'], cfg['stride'],
                                     cfg['window_multiple'], mode=cfg['mode'], max_windows=cfg['max_windows'],
                                     fit=cfg['patch_fit'])[0]

    def propagate(self, feats: Dict[str, torch.Tensor], origins: torch.Tensor, text: torch.Tensor):
        """Propagated scores (N_win, Q, gh, gw) float64 of all windows of one image (the VFM's grid)."""
        dino, clip = feats['vfm'], feats['clip']
        n, gh, gw, _ = dino.shape
        if clip.shape[1:3] != dino.shape[1:3]:  # a VFM with another patch size: CLIP features to its grid
            clip = F.interpolate(clip.permute(0, 3, 1, 2), size=(gh, gw), mode='bilinear',
                                 align_corners=False).permute(0, 2, 3, 1)
        vfm = self.load()
        d = F.normalize(dino.reshape(n * gh * gw, -1), dim=-1).cpu()
        c = F.normalize(clip.reshape(n * gh * gw, -1), dim=-1)
        y = (c @ F.normalize(text.float(), dim=-1).T).cpu()  # raw cosine scores, no temperature
        pos = patch_positions(origins, (gh, gw), tuple(vfm.patch_embed.patch_size))
        rows, cols, vals = patch_graph(d, pos, self.k, self.gamma, self.sigma, self.pix_dist_pow)
        op = normalized_operator(rows, cols, vals, d.shape[0], self.alpha)
        z = propagate_patches(y, op, self.cg_iters, self.cg_tol)
        return z.reshape(n, gh, gw, -1).permute(0, 3, 1, 2).to(dino.device)

    def refine_image(self, logits: torch.Tensor, image: torch.Tensor, query_to_class: torch.Tensor):
        """LPOSS+ over the pixels (if ``pixel_refine``), then the synonyms' max; (Q, H, W)."""
        if self.pixel_refine:
            graph = PixelGraph(self.rgb(image).cpu(), self.r // 2, self.tau, self.alpha)
            logits = graph.propagate(logits.cpu(), self.cg_iters, self.cg_tol, self.pixel_chunk).to(image.device)
        return merge_synonyms(logits, query_to_class)

    def patch_logits(self, encoder, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        raise TypeError('LPOSS propagates over all windows of an image: it runs through the segmentor\'s '
                        'query_logits (models/image_slide.py), not window by window')
