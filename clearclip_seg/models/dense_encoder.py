"""``DenseEncoder``: the stages a dense method may call on a wrapped CLIP image tower.

A method (``clearclip_seg.methods``) composes these stages, which every
tower kind implements from its own weights (a method that reads a tower's own
modules instead names the kinds it supports, ``DenseMethod.tower_kinds``)::

    tokens, grid = encoder.last_block_input(x)        # embed + blocks 0..L-2
    t = encoder.qkv(tokens, ('q', 'k', 'v'))          # per-head (B, heads, N, d)
    y = encoder.project_heads(attend(...))            # heads -> residual stream
    y = y + encoder.ffn_branch(y)                     # what a block's FFN adds
    feats = encoder.head(y)[:, encoder.num_prefix_tokens:]

Abstract (per tower kind): ``embed``, ``run_blocks``, ``qkv``,
``project_heads``, ``ffn_branch``, ``head``, ``pooled``, ``blocks``, ``dtype``,
``embed_dim``, ``num_prefix_tokens`` and, per class, ``kind_of`` / ``check_tower``.
Shared here: the switchable last block (``attention_branch``, ``last_block``,
``forward``), its decomposition and the positional-embedding cache.

An encoder holds no last-block switches: the ``LastBlock`` method passes them
on each call, and a call that leaves them out gets ClearCLIP's
(``protocol.constants.CLEARCLIP_LAST_BLOCK``, read when called).

Tower kinds register with ``register_tower`` (a class names its ``kinds``,
answers ``kind_of(visual)`` and lists its own keywords in ``tower_options``);
``tower_kind`` and ``encoder_class`` pick the encoder for an open_clip
``model.visual``. This module is plain torch (no MMSeg).
"""
import abc
from typing import Callable, Dict, List, Optional, Tuple, Type

import torch
import torch.nn as nn

from ..protocol import constants
from .attention import attend, attention_map, check_mode, needed_projections


def clearclip_switches(attn: Optional[str] = None, residual: Optional[bool] = None,
                       ffn: Optional[bool] = None) -> Tuple[str, bool, bool]:
    """The last-block switches with ClearCLIP's (the protocol's) filled in where None."""
    d = constants.CLEARCLIP_LAST_BLOCK
    return (check_mode(d['attn'] if attn is None else attn), bool(d['residual'] if residual is None else residual),
            bool(d['ffn'] if ffn is None else ffn))


class DenseEncoder(nn.Module, metaclass=abc.ABCMeta):
    """Patch features and the stages behind them, from one CLIP image tower.

    Args:
        visual: the open_clip image tower (``model.visual``); checked at wrap
            time by ``check_tower`` (one-line ``TypeError`` on an unknown layout).
        fused_attn: use ``scaled_dot_product_attention`` in ``attention_branch``;
            False runs the explicit formula (same numbers; needed when
            attention maps are read).

    Attributes:
        kind: the tower kind wrapped (one of ``kinds``).
        patch_size: (ph, pw) in pixels.
        native_grid: the patch grid of the tower's own positional embedding.
    """

    # the tower kinds (``tower_kind``) this encoder wraps; set by each registered class
    kinds: Tuple[str, ...] = ()
    # keywords of the encoder's own beyond ``fused_attn`` (``towers.wrap_visual`` passes them)
    tower_options: Tuple[str, ...] = ()

    def __init__(self, visual: nn.Module, fused_attn: bool = True):
        self.check_tower(visual)
        super().__init__()
        self.visual = visual
        self.kind = self.kind_of(visual)
        self.fused_attn = fused_attn
        self.patch_size: Tuple[int, int] = (0, 0)
        self.native_grid: Tuple[int, int] = (0, 0)
        self._pos_cache: Dict[tuple, torch.Tensor] = {}

    # -- which towers ---------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def kind_of(cls, visual: nn.Module) -> Optional[str]:
        """The tower kind of ``visual`` if this encoder wraps it (one of ``kinds``), else None.

        May raise a one-line ``TypeError`` for a tower of its family it cannot
        wrap (a timm trunk without patch tokens).
        """

    @classmethod
    @abc.abstractmethod
    def check_tower(cls, visual: nn.Module) -> None:
        """Fail at wrap time, in one line (``TypeError``), on a layout this encoder does not know."""

    # -- layout ---------------------------------------------------------------
    @property
    @abc.abstractmethod
    def num_prefix_tokens(self) -> int:
        """Class and register tokens ahead of the patch tokens (1 on open_clip ViTs, 0 on SigLIP)."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """The dtype the tower computes in."""

    @property
    @abc.abstractmethod
    def embed_dim(self) -> int:
        """Width of the projected (joint image-text) features."""

    @property
    @abc.abstractmethod
    def blocks(self) -> nn.ModuleList:
        """The tower's residual blocks."""

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    # -- stages (per tower kind) ------------------------------------------------
    @abc.abstractmethod
    def embed(self, x: torch.Tensor, pos_interp: str = 'dino') -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Images (B, 3, H, W), multiples of the patch size -> tokens entering block 0 and the grid.

        ``pos_interp``: how positions are resampled (``encoder.POS_INTERPOLATIONS``).
        """

    @abc.abstractmethod
    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Tokens (B, N, width) through the unchanged blocks ``start..stop-1``."""

    @abc.abstractmethod
    def qkv(self, x: torch.Tensor, names=('q', 'k', 'v'), block: int = -1) -> Dict[str, torch.Tensor]:
        """Per-head projections of a block's normed input (default: the last block), (B, heads, N, d).

        q and k are those the block's own attention would multiply (after any
        q/k norm and rotary embedding).
        """

    @abc.abstractmethod
    def project_heads(self, o: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Per-head outputs (B, heads, N, d) -> what a block's attention adds to the stream (B, N, width)."""

    @abc.abstractmethod
    def ffn_branch(self, y: torch.Tensor, block: int = -1) -> torch.Tensor:
        """What a block's FFN adds to the stream ``y`` (B, N, width)."""

    @abc.abstractmethod
    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """The dense projection of every token: (B, N, width) -> (B, N, embed_dim)."""

    @abc.abstractmethod
    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's own pooled embedding of final tokens (B, N, width) -> (B, embed_dim)."""

    # -- shared -------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """One-line error unless the images' height and width are patch multiples."""
        ph, pw = self.patch_size
        if x.shape[-2] % ph or x.shape[-1] % pw:
            raise ValueError(f'input {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}')

    def cached_positions(self, weight: torch.Tensor, grid: Tuple[int, int], mode: str,
                         resize: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``resize()`` (positions for ``grid``), cached per grid and mode while no gradient is taken.

        The key includes the weight's storage and version, so new or edited
        weights are never served stale positions.
        """
        if torch.is_grad_enabled():
            return resize()
        key = (tuple(grid), mode, weight.dtype, weight.device, weight.data_ptr(), weight._version)
        if key not in self._pos_cache:
            self._pos_cache.clear()  # one live entry: windows of one size share it
            self._pos_cache[key] = resize()
        return self._pos_cache[key]

    def last_block_input(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Tokens entering the last block (B, prefix + gh*gw, width) and the grid."""
        x, grid = self.embed(x)
        return self.run_blocks(x, 0, self.num_blocks - 1), grid

    def attention_branch(self, x: torch.Tensor, mode: Optional[str] = None) -> torch.Tensor:
        """X_attn: the last block's attention output for ``mode`` (default ClearCLIP's), before any residual."""
        mode = clearclip_switches(attn=mode)[0]
        t = self.qkv(x, needed_projections(mode))
        o = attend(mode, t.get('q'), t.get('k'), t['v'], fused=self.fused_attn)
        return self.project_heads(o)

    def last_block(self, x: torch.Tensor, attn: Optional[str] = None, residual: Optional[bool] = None,
                   ffn: Optional[bool] = None) -> torch.Tensor:
        """The last block recomputed with the given switches (None: ClearCLIP's)::

            y = X_attn (+ x if residual);  y = y (+ FFN(y) if ffn)
        """
        attn, residual, ffn = clearclip_switches(attn, residual, ffn)
        y = self.attention_branch(x, attn)
        if residual:
            y = x + y
        if ffn:
            y = y + self.ffn_branch(y)
        return y

    def forward(self, x: torch.Tensor, return_cls: bool = False, attn: Optional[str] = None,
                residual: Optional[bool] = None, ffn: Optional[bool] = None):
        """Projected patch features with the given last block (None: ClearCLIP's).

        Args:
            x: normalised images (B, 3, H, W), H and W multiples of the patch size.
            return_cls: also return the tower's pooled embedding (B, dim) of the final tokens.
            attn, residual, ffn: the last block's switches.

        Returns:
            (B, gh, gw, dim) patch features (not normalised), and the pooled
            embedding if asked.
        """
        tokens, (gh, gw) = self.last_block_input(x)
        y = self.last_block(tokens, attn, residual, ffn)
        patches = self.head(y)[:, self.num_prefix_tokens:].reshape(y.shape[0], gh, gw, -1)
        return (patches, self.pooled(y)) if return_cls else patches

    def decompose(self, x: torch.Tensor, mode: Optional[str] = None, attn_map: bool = False,
                  residual: Optional[bool] = None, ffn: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """The last block's residual and attention components (paper Sec. 3) of images.

        ``decompose_tokens`` of the tokens entering the last block, plus their ``grid``.
        """
        x_res, grid = self.last_block_input(x)
        return dict(self.decompose_tokens(x_res, mode, attn_map, residual, ffn), grid=grid)

    def decompose_tokens(self, x_res: torch.Tensor, mode: Optional[str] = None, attn_map: bool = False,
                         residual: Optional[bool] = None, ffn: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """The last block split into its terms, from the tokens entering it::

            X_sum  = X_res + X_attn          X_attn = attention branch of mode on X_res
            output = X_sum + FFN(X_sum)      (residual and FFN on)

        Args:
            x_res: tokens entering the last block (B, N, width): the residual stream.
            mode, residual, ffn: the last block's switches (None: ClearCLIP's).
            attn_map: also return the attention matrix.

        Returns:
            ``x_res``; ``x_attn`` (the attention branch, no residual);
            ``x_res+x_attn`` (the block's output with the residual on and the
            FFN off); ``ffn`` (what the FFN adds to that sum); ``output`` (the
            block under the given switches); with ``attn_map`` the
            (B, heads, N, N) matrix (a sum of softmaxes for ``qq+kk``).
        """
        mode, residual, ffn = clearclip_switches(mode, residual, ffn)
        x_attn = self.attention_branch(x_res, mode)
        total = x_res + x_attn
        ffn_term = self.ffn_branch(total)
        y = total if residual else x_attn
        if ffn:
            y = y + (ffn_term if residual else self.ffn_branch(y))
        out = {'x_res': x_res, 'x_attn': x_attn, 'x_res+x_attn': total, 'ffn': ffn_term, 'output': y}
        if attn_map:
            t = self.qkv(x_res)
            out['attn_map'] = attention_map(mode, t['q'], t['k'], t['v'])
        return out


# -- the tower registry ---------------------------------------------------------
_TOWERS: List[Type[DenseEncoder]] = []


def register_tower(cls: Type[DenseEncoder]) -> Type[DenseEncoder]:
    """Class decorator: ``cls`` wraps the tower kinds in ``cls.kinds`` (asked in registration order)."""
    if not (isinstance(cls, type) and issubclass(cls, DenseEncoder)) or not cls.kinds:
        raise TypeError(f'{cls!r}: expected a DenseEncoder subclass with its tower kinds in `kinds`')
    taken = {k for c in _TOWERS if c is not cls for k in c.kinds} & set(cls.kinds)
    if taken:
        raise ValueError(f'tower kinds {sorted(taken)} of {cls.__name__} are already registered')
    if cls not in _TOWERS:
        _TOWERS.append(cls)
    return cls


def tower_encoders() -> Dict[str, Type[DenseEncoder]]:
    """Tower kind -> encoder class, for every registered encoder."""
    return {k: c for c in _TOWERS for k in c.kinds}


def tower_kind(visual: nn.Module) -> str:
    """The tower kind of an open_clip image tower (a key of ``tower_encoders()``); one-line error if none."""
    for cls in _TOWERS:
        kind = cls.kind_of(visual)
        if kind is not None:
            return kind
    raise TypeError(f'image tower {type(visual).__name__} is not supported: expected one of '
                    f'{list(tower_encoders())} (an open_clip VisionTransformer or a TimmModel with a ViT/Eva '
                    'trunk; ResNet and ConvNeXt towers have no patch tokens)')


def encoder_class(visual: nn.Module) -> Type[DenseEncoder]:
    """The registered encoder class that wraps ``visual``."""
    return tower_encoders()[tower_kind(visual)]
