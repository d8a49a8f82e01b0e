"""MaskCLIP as CLIP-DINOiser, LPOSS and FLOSS run it ("MaskCLIP with residual and FFN").

The last block's attention is the identity (each token attends only to itself,
i.e. the value path ``out_proj(v(ln_1(x)))``), and the block keeps its residual
and its feed-forward network::

    x'  = x + out_proj(W_v ln_1(x) + b_v)
    x'' = x' + mlp(ln_2(x'))
    F   = proj(ln_post(x''))  (class token dropped)

That is the ``LastBlock`` preset ``maskclip`` (``identity``, residual and FFN
kept), except for the positional embedding: these codes resize its patch part
with plain bicubic to the grid (MMSeg's ``resize(size=(h, w))``;
``pos_interp='size'``), where the harness's default is the DINO-style
``(n + 0.1) / n0`` scale factor. At 224 windows both are the identity; at 448
windows (28 x 28 patches) they differ (about 6.5 % relative on a random grid).

The first blocks see those positions too, so the method does not share a
trunk with ``LastBlock`` runs (``shares_trunk`` False).
"""
import torch

from ..models.encoder import POS_INTERPOLATIONS
from .registry import DenseMethod, register_method


@register_method('MaskCLIPDinoiser')
class MaskCLIPDinoiser(DenseMethod):
    """Identity attention, residual and FFN kept, positions resampled by ``pos_interp``.

    Args:
        pos_interp: positional-embedding resampling (``models/encoder.py`` ``POS_INTERPOLATIONS``):
            ``size`` (the authors': bicubic to the grid), ``dino`` (the harness's default).
    """

    def __init__(self, pos_interp: str = 'size', key: str = 'model.method'):
        if pos_interp not in POS_INTERPOLATIONS:
            raise ValueError(f'{key}.pos_interp={pos_interp!r}: expected one of {list(POS_INTERPOLATIONS)}')
        self.pos_interp = pos_interp

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        tokens, (gh, gw) = encoder.embed(x, self.pos_interp)
        tokens = encoder.run_blocks(tokens, 0, encoder.num_blocks - 1)
        out = encoder.head(encoder.last_block(tokens, 'identity', True, True))
        return out[:, encoder.num_prefix_tokens:].reshape(out.shape[0], gh, gw, -1)
