"""ClearCLIP, vanilla CLIP and MaskCLIP: one switchable last block.

The last block is recomputed from its own weights as (PROTOCOL, "The method")::

    X_attn = ls_1(out_proj(Attn_mode(ln_1(x))))
    y      = X_attn (+ x if residual)
    y      = y (+ ls_2(mlp(ln_2(y))) if ffn)

ClearCLIP's switches are the defaults (``protocol.constants.CLEARCLIP_LAST_BLOCK``);
vanilla CLIP is ``qk`` with both kept; MaskCLIP is ``identity`` (value
embeddings) without them. The paper's ablation grid is every combination.
These switches live here only: the encoder holds none and gets them on each call.
"""
from typing import Optional

import torch

from ..models.attention import check_mode
from ..options import check_bool
from ..protocol import constants
from .registry import DenseMethod, register_method


@register_method('LastBlock')
class LastBlock(DenseMethod):
    """The last block's attention mode, residual and FFN as three switches.

    Args:
        attn: ``qk | qq | kk | vv | qq+kk | identity`` (``model.last_block.attn``).
        residual: keep the residual connection.
        ffn: keep the feed-forward network.

    None (the defaults) takes ClearCLIP's value from ``CLEARCLIP_LAST_BLOCK``.
    """

    # only the last block changes: a shared pass may compute blocks 0..L-2 once for several switches
    shares_trunk = True

    def __init__(self, attn: Optional[str] = None, residual: Optional[bool] = None, ffn: Optional[bool] = None,
                 key: str = 'model.method'):
        default = constants.CLEARCLIP_LAST_BLOCK
        attn = default['attn'] if attn is None else attn
        residual = default['residual'] if residual is None else residual
        ffn = default['ffn'] if ffn is None else ffn
        self.attn = check_mode(attn)
        self.residual = check_bool(residual, f'{key}.residual')
        self.ffn = check_bool(ffn, f'{key}.ffn')

    def options(self) -> dict:
        return dict(attn=self.attn, residual=self.residual, ffn=self.ffn)

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        tokens, (gh, gw) = encoder.last_block_input(x)
        out = encoder.head(encoder.last_block(tokens, self.attn, self.residual, self.ffn))
        # class/register tokens: 1 on open_clip ViTs, 0 on SigLIP, several with registers
        return out[:, encoder.num_prefix_tokens:].reshape(out.shape[0], gh, gw, -1)
