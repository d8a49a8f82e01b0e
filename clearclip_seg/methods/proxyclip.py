"""ProxyCLIP (Lan et al., ECCV 2024): last-block attention borrowed from a vision foundation model.

As the authors' evaluation runs it (mc-lan/ProxyCLIP: ``proxyclip_segmentor.py``
and ``open_clip/transformer.py`` ``custom_attn``):

* the proxy model (VFM, DINO ViT-B/8 by default) sees the same window, with
  CLIP's normalisation undone and its own (ImageNet) applied, its position
  embedding resized to the window's grid as the loader the authors use does
  (DINO's and DINOv2's ``torch.hub`` code, ``pos_embed_resize``); its features
  Φ are the last block's output after its final norm, prefix tokens dropped,
  on the VFM's own grid (I, J) (SAM: the window resized to 1024, neck output);
* ``S = Φ̂ᵀ Φ̂`` (cosine, (IJ) x (IJ)), ``Ŝ = γ (S − β mean(S))``, entries of
  ``Ŝ`` below 0 set to −inf, ``A = softmax_row(Ŝ)``, the same for every head
  (β = 1.2, γ = 3.0);
* CLIP's blocks 1..L−1 run unchanged; from the last block only V is used:
  ``v`` of ``ln_1(z_{L−1})`` per head, prefix tokens dropped, reshaped to
  CLIP's grid and resized bilinearly (align_corners False) to the VFM grid;
* ``O_h = A Ṽ_h``, ``out = out_proj(concat_h O_h)``: no residual, no FFN, no
  class token; features ``ln_post(out) proj`` on the VFM grid.

Windows are padded to a multiple of 56 (``window_multiple``; lcm of 8 and 14,
so DINO-B/8 and DINOv2-B/14 tile them), left/top = floor(pad / 2); CLIP sees
the padded window cut down to whole patches, as its stride-p conv does.

Deliberate differences from the official code (none changes a square-window
number): V is reshaped to the grid as (rows, columns) (the official code
swaps them; the same for square crops); mean(S) is taken per
window (the official one spans the batch, which is 1 there); S is computed
in float32. A row whose every entry is masked gives NaN, as in the official
code; it is not patched here.

Logit scale 40, short side 336 (448 for ADE20K and Cityscapes), 336/112
windows (Cityscapes 224/112), the '; '-separated class files and prob_thd are
protocol settings (configs), not part of the method.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..models.vfm_pos_embed import RULES as POS_EMBED_RULES
from ..models.vfm_pos_embed import use_pos_embed_rule
from ..options import check_bool, check_number
from ..protocol import constants
from .registry import DenseMethod, register_method

# proxy models by short name: timm model (tag), how the window reaches it, and the positional-embedding
# resize of the code the authors load (ProxyCLIP: DINO's and DINOv2's torch.hub models, MAE's own loader)
VFM_PRESETS = {
    'dino': dict(model='vit_base_patch8_224.dino', input_size=None, kwargs=dict(dynamic_img_size=True),
                 pos_embed_resize='dino_hub'),
    'dinov2': dict(model='vit_base_patch14_reg4_dinov2.lvd142m', input_size=None,
                   kwargs=dict(dynamic_img_size=True), pos_embed_resize='dinov2_hub'),
    'sam': dict(model='samvit_base_patch16.sa1b', input_size=1024, kwargs={}, pos_embed_resize='timm'),
    'mae': dict(model='vit_base_patch16_224.mae', input_size=None, kwargs=dict(dynamic_img_size=True),
                pos_embed_resize='mae'),
}


def proxy_attention(feats: torch.Tensor, beta: float = 1.2, gamma: float = 3.0) -> torch.Tensor:
    """ProxyCLIP's attention (B, IJ, IJ) from proxy features (B, C, I, J).

    ``softmax_row(γ (S − β mean(S)))`` with entries below 0 masked to −inf,
    S the cosine similarity of the (I*J) feature vectors and mean(S) one
    scalar per window.
    """
    phi = F.normalize(feats.flatten(2).float(), dim=1)
    sim = phi.transpose(1, 2) @ phi
    # in place on the (IJ) x (IJ) matrix: the same operations in the same order as
    # gamma * (sim - beta * mean), bit for bit, without three fresh matrices (3x faster at 42 x 42 on a CPU)
    logits = sim.sub_(beta * sim.mean(dim=(1, 2), keepdim=True)).mul_(gamma)
    return torch.softmax(logits.masked_fill_(logits < 0, float('-inf')), dim=-1)


def resize_values(v: torch.Tensor, grid, size) -> torch.Tensor:
    """Per-head patch values (B, H, gh*gw, d) on CLIP's grid -> (B, H, I*J, d) on the proxy grid (bilinear)."""
    B, H, _, d = v.shape
    v = v.permute(0, 1, 3, 2).reshape(B, H * d, *grid)
    v = F.interpolate(v, size=tuple(size), mode='bilinear', align_corners=False)
    return v.reshape(B, H, d, -1).permute(0, 1, 3, 2)


def load_vfm(name: str, checkpoint: Optional[str] = None, pretrained: bool = True, kwargs: Optional[dict] = None,
             pos_embed_resize: str = 'timm'):
    """A frozen timm model by name, from a local checkpoint file, or with random weights.

    ``pos_embed_resize``: the positional-embedding resize rule
    (``clearclip_seg.models.vfm_pos_embed.RULES``; ``timm``: timm's own).
    """
    import os

    import timm
    kwargs = dict(kwargs or {})
    arch = name.split('.')[0]
    if arch not in timm.list_models():
        raise ValueError(f"proxy model '{name}' (model.method.vfm) is not a timm model: expected one of "
                         f'{sorted(VFM_PRESETS)} or a timm name such as vit_base_patch8_224.dino')
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"proxy checkpoint '{checkpoint}' (model.method.vfm_checkpoint) not found")
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint), **kwargs)
    elif pretrained:
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # hub download: offline, not cached
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise RuntimeError(f"could not load proxy model weights '{name}' (offline or not cached: {first}); "
                               'download them once where online, or set model.method.vfm_checkpoint='
                               '/path/to/checkpoint (.pth/.safetensors)') from e
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    model.eval().requires_grad_(False)
    return use_pos_embed_rule(model, pos_embed_resize, key='model.method.pos_embed_resize')


@register_method('ProxyCLIP')
class ProxyCLIP(DenseMethod):
    """ProxyCLIP's last block: proxy-model attention over CLIP's values.

    Args:
        vfm: proxy model, a key of ``VFM_PRESETS`` (``dino``, ``dinov2``,
            ``sam``, ``mae``) or a timm model name. Default ``dino`` (DINO ViT-B/8).
        vfm_checkpoint: local checkpoint file for the proxy model (offline use).
        vfm_pretrained: load pretrained weights (False: random, for tests).
        vfm_kwargs: extra ``timm.create_model`` keywords (merged over the preset's;
            a ViT named directly needs ``dynamic_img_size=True`` for windows
            other than its training size, as the presets set).
        vfm_input_size: resize the window to this square before the proxy
            model (None: as it is; ``sam``: 1024).
        pos_embed_resize: how the proxy model's position embedding is resized
            to the window's grid, as in the code the authors load: ``dino_hub``
            (DINO's torch.hub ViTs: bicubic, scale factor (g + 0.1) / M),
            ``dinov2_hub`` (DINOv2's hub ``*_reg`` backbones: bicubic to the
            size, antialiased), ``mae`` (MAE's loader: bicubic to the size) or
            ``timm`` (timm's own); ``'preset'`` (default): the preset's
            (``dino_hub``, ``dinov2_hub``, ``timm`` for ``sam``, ``mae``; ``timm``
            for a timm model named directly). See ``models/vfm_pos_embed.py``.
        beta, gamma: the attention's threshold and temperature (1.2, 3.0).
        window_multiple: windows are padded to a multiple of this (56).
        input_mean, input_std: the normalisation the windows arrive with
            (x255, RGB; CLIP's), undone before the proxy model's own.
    """

    def __init__(self, vfm: str = 'dino', vfm_checkpoint: Optional[str] = None, vfm_pretrained: bool = True,
                 vfm_kwargs: Optional[dict] = None, vfm_input_size: Optional[int] = 'preset',
                 pos_embed_resize: str = 'preset', beta: float = 1.2, gamma: float = 3.0, window_multiple: int = 56,
                 input_mean: Optional[Sequence[float]] = None, input_std: Optional[Sequence[float]] = None,
                 key: str = 'model.method'):
        if not isinstance(vfm, str) or not vfm:
            raise ValueError(f'{key}.vfm={vfm!r}: expected one of {sorted(VFM_PRESETS)} or a timm model name')
        preset = VFM_PRESETS.get(vfm, dict(model=vfm, input_size=None, kwargs={}, pos_embed_resize='timm'))
        self.vfm = vfm
        self.vfm_model = preset['model']
        self.vfm_checkpoint = vfm_checkpoint
        self.vfm_pretrained = check_bool(vfm_pretrained, f'{key}.vfm_pretrained')
        self.vfm_kwargs = {**preset['kwargs'], **(vfm_kwargs or {})}
        self.vfm_input_size = preset['input_size'] if vfm_input_size == 'preset' else (
            None if vfm_input_size is None else int(check_number(vfm_input_size, f'{key}.vfm_input_size', low=1)))
        self.pos_embed_resize = preset['pos_embed_resize'] if pos_embed_resize == 'preset' else pos_embed_resize
        if self.pos_embed_resize not in POS_EMBED_RULES:
            raise ValueError(f'{key}.pos_embed_resize={pos_embed_resize!r}: expected one of '
                             f"{sorted(POS_EMBED_RULES)} or 'preset'")
        self.beta = check_number(beta, f'{key}.beta')
        self.gamma = check_number(gamma, f'{key}.gamma', low=0, low_open=True)
        self.window_multiple = int(check_number(window_multiple, f'{key}.window_multiple', low=1, integer=True))
        # None: CLIP's normalisation (x255, RGB) as the data preprocessor applies it, read when built
        input_mean = constants.CLIP_MEAN if input_mean is None else input_mean
        input_std = constants.CLIP_STD if input_std is None else input_std
        if len(input_mean) != 3 or len(input_std) != 3:
            raise ValueError(f'{key}.input_mean/input_std: expected three values each (RGB, x255)')
        self.input_mean = tuple(float(m) for m in input_mean)
        self.input_std = tuple(float(s) for s in input_std)
        self._vfm = None

    def options(self) -> dict:
        return dict(vfm=self.vfm, vfm_model=self.vfm_model, vfm_checkpoint=self.vfm_checkpoint,
                    vfm_pretrained=self.vfm_pretrained, vfm_input_size=self.vfm_input_size,
                    pos_embed_resize=self.pos_embed_resize, beta=self.beta, gamma=self.gamma,
                    window_multiple=self.window_multiple)

    # -- proxy model ------------------------------------------------------------
    def bind(self, encoder) -> None:
        for stage in ('last_block_input', 'qkv', 'project_heads', 'head'):
            if not hasattr(encoder, stage):
                raise TypeError(f'ProxyCLIP needs the encoder stage {stage}()')
        self.load()

    def load(self):
        """Load the proxy model once (frozen, eval)."""
        if self._vfm is None:
            self._vfm = load_vfm(self.vfm_model, self.vfm_checkpoint, self.vfm_pretrained, self.vfm_kwargs,
                                 self.pos_embed_resize)
        return self._vfm

    def proxy_input(self, x: torch.Tensor, vfm) -> torch.Tensor:
        """CLIP-normalised windows -> the proxy model's normalisation (and size)."""
        cfg = getattr(vfm, 'pretrained_cfg', None) or {}
        mean = torch.tensor(cfg.get('mean', (0.485, 0.456, 0.406)), device=x.device, dtype=torch.float32)
        std = torch.tensor(cfg.get('std', (0.229, 0.224, 0.225)), device=x.device, dtype=torch.float32)
        in_mean = torch.tensor(self.input_mean, device=x.device) / 255.0
        in_std = torch.tensor(self.input_std, device=x.device) / 255.0
        rgb = x.float() * in_std.view(1, 3, 1, 1) + in_mean.view(1, 3, 1, 1)
        y = (rgb - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        if self.vfm_input_size is not None:
            y = F.interpolate(y, size=(self.vfm_input_size,) * 2, mode='bilinear', align_corners=False)
        return y

    def proxy_features(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Proxy features Φ (B, C, I, J) of CLIP-normalised windows."""
        vfm = self.load()
        param = next(vfm.parameters())
        if param.device != x.device or param.dtype != dtype:
            vfm.to(device=x.device, dtype=dtype)
        y = self.proxy_input(x, vfm).to(dtype)
        out = vfm.forward_features(y)
        if out.dim() == 4:  # SAM: the neck's (B, C, h, w)
            return out
        B, _, H, W = y.shape
        ph, pw = vfm.patch_embed.patch_size
        tokens = out[:, getattr(vfm, 'num_prefix_tokens', 0):]
        return tokens.transpose(1, 2).reshape(B, tokens.shape[-1], H // ph, W // pw)

    # -- dense features ----------------------------------------------------------
    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        feats = self.proxy_features(x, encoder.dtype)
        size = feats.shape[-2:]
        ph, pw = encoder.patch_size
        clip_x = x[..., :x.shape[-2] // ph * ph, :x.shape[-1] // pw * pw]  # CLIP's stride-p conv drops the rest
        tokens, grid = encoder.last_block_input(clip_x)
        v = encoder.qkv(tokens, ('v',))['v'][:, :, encoder.num_prefix_tokens:]
        v = resize_values(v, grid, size)
        attn = proxy_attention(feats, self.beta, self.gamma).to(v.dtype)
        out = encoder.head(encoder.project_heads(attn[:, None] @ v))
        return out.reshape(x.shape[0], *size, -1)

    def patch_logits(self, encoder, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine logits (B, Q, I, J) on the proxy model's grid (the window is not cut to CLIP patches first)."""
        feats = F.normalize(self.features(encoder, x).float(), dim=-1)
        return torch.einsum('bhwc,qc->bqhw', feats, text.to(feats.dtype))
