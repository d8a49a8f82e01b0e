"""Analytic matmul FLOPs of the dense encoder (what the speed figures divide by)."""
from typing import Mapping, Optional, Sequence, Tuple

from .methods.last_block import LastBlock
from .models.attention import ATTENTION_MODES, needed_projections
from .models.dense_encoder import clearclip_switches
from .protocol import constants


def vit_encoder_flops(grid: Tuple[int, int], width: int, layers: int, mlp_width: int,
                      out_dim: int, patch: Tuple[int, int], in_chans: int = 3,
                      last_attn: Optional[str] = None, last_ffn: Optional[bool] = None) -> int:
    """Matmul FLOPs (2 x multiply-adds) of one DenseCLIPEncoder forward on one crop.

    Counted: the patch embedding (a conv = a matmul over 3*p*p inputs per patch),
    per full block the q/k/v projection, the two attention matmuls (scores and
    weights @ v, summed over heads = N*N*width each), the output projection and
    the two MLP layers; the last block as configured (only the projections its
    attention mode reads, two matmuls per (a, b) pair of the mode, the output
    projection, the FFN only if on); and ``proj`` on every token. Not counted:
    layer norms, softmax, GELU, additions (a few % at most).

    Args:
        grid: (gh, gw) patches of the crop.
        width, layers, mlp_width, out_dim, patch, in_chans: the tower's geometry
            (``encoder_geometry``).
        last_attn: the last block's attention mode (None: ClearCLIP's).
        last_ffn: whether the last block keeps its FFN (None: ClearCLIP's).

    Returns:
        The FLOP count.
    """
    last_attn, _, last_ffn = clearclip_switches(last_attn, None, last_ffn)
    gh, gw = grid
    g = gh * gw
    n = g + 1  # class token
    ph, pw = patch
    flops = 2 * g * (in_chans * ph * pw) * width             # patch embedding
    attn_pair = 2 * n * n * width * 2                         # scores + weights @ v
    full = (2 * n * width * 3 * width + attn_pair + 2 * n * width * width
            + 2 * 2 * n * width * mlp_width)
    flops += (layers - 1) * full
    flops += len(needed_projections(last_attn)) * 2 * n * width * width
    flops += len(ATTENTION_MODES[last_attn]) * attn_pair
    flops += 2 * n * width * width                            # out_proj
    if last_ffn:
        flops += 2 * 2 * n * width * mlp_width
    flops += 2 * n * width * out_dim                          # ln_post(x) @ proj, all tokens
    return int(flops)


def last_block_of(method) -> Mapping:
    """The last-block switches a method's forward runs: ``LastBlock``'s own, else ClearCLIP's.

    The other methods are costed as a ClearCLIP forward (their own extra work is not counted).
    """
    return method.options() if isinstance(method, LastBlock) else dict(constants.CLEARCLIP_LAST_BLOCK)


def encoder_geometry(encoder, last_block: Optional[Mapping] = None) -> dict:
    """The numbers ``vit_encoder_flops`` needs, read from a DenseCLIPEncoder.

    Args:
        encoder: the wrapped tower.
        last_block: the last block's ``attn`` / ``ffn`` switches (``last_block_of(method)``);
            None: ClearCLIP's.
    """
    attn, _, ffn = clearclip_switches((last_block or {}).get('attn'), None, (last_block or {}).get('ffn'))
    v = encoder.visual
    blocks = encoder.blocks
    mlp = blocks[0].mlp
    mlp_width = mlp.c_fc.out_features if hasattr(mlp, 'c_fc') else mlp[0].out_features
    return dict(width=v.conv1.out_channels, layers=len(blocks), mlp_width=mlp_width,
                out_dim=v.proj.shape[1], patch=tuple(encoder.patch_size), in_chans=v.conv1.in_channels,
                last_attn=attn, last_ffn=ffn)


def windows_flops(encoder, shapes: Sequence[Tuple[int, int]], last_block: Optional[Mapping] = None) -> int:
    """Encoder FLOPs for padded windows of the given shapes (``slide.padded_window_shapes``)."""
    geo = encoder_geometry(encoder, last_block)
    ph, pw = geo['patch']
    return sum(vit_encoder_flops((h // ph, w // pw), **geo) for h, w in shapes)
