"""The method registry: training-free dense-prediction methods picked by name.

A method decides how a window's per-patch query logits are computed from a
wrapped CLIP tower (a ``models.dense_encoder.DenseEncoder``, whose stages are
the whole interface a method may call): which blocks run unchanged, what the
last block(s) do, and how patch features meet the text classifier. Everything
around it (resize, windows, text classifier, post-processing, thresholds) stays
in the segmentor, so adding a method is one module here.

Like timm's ``register_model`` / ``create_model``::

    @register_method('NACLIP')
    class NACLIP(DenseMethod): ...

    method = build_method(dict(type='NACLIP', gaussian_std=5.0))
"""
from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F

from ..registry import Registry

# methods register on import; ``methods/__init__`` imports the shipped ones
METHODS = Registry('method', 'model.method', 'method_name')
register_method = METHODS.register


def list_methods() -> List[str]:
    """Names of the registered methods."""
    return METHODS.names()


def get_method_class(name: str) -> Type['DenseMethod']:
    return METHODS.get(name)


def build_method(cfg) -> 'DenseMethod':
    """Build a method from ``dict(type=NAME, **options)`` (or pass an instance through)."""
    if isinstance(cfg, DenseMethod):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'model.method={cfg!r}: expected a dict with a type key, one of {list_methods()}')
    cfg = dict(cfg)
    cls = get_method_class(cfg.pop('type'))
    METHODS.check_options(cls, cfg, f'model.method (type={cls.method_name})')
    return cls(**cfg)


def truncate_to_patches(x: torch.Tensor, patch) -> torch.Tensor:
    """Drop the rows/columns past the last whole patch, as a stride-p conv1 does.

    A no-op on windows padded to patch multiples; with ``test_cfg.patch_fit='truncate'``
    (the SCLIP-family code) windows arrive whole and lose their remainder here.
    """
    ph, pw = patch
    h, w = x.shape[-2] // ph * ph, x.shape[-1] // pw * pw
    return x if (h, w) == tuple(x.shape[-2:]) else x[..., :h, :w]


class DenseMethod:
    """Base class: per-patch query logits of a batch of same-sized windows.

    Subclasses set their options in ``__init__`` (keyword arguments whose
    defaults are the authors' published settings) and override ``features``
    (projected patch features) or, when the text classifier takes part in the
    forward pass itself, ``patch_logits``.

    What the segmentor and the shared pass read from a method besides its
    calls is declared here, with its default: ``method_name``,
    ``shares_trunk``, ``needs_class_token``, ``tower_kinds``,
    ``window_multiple`` and ``image_level``.
    """
    method_name = 'DenseMethod'

    # Windows are padded (``patch_fit='pad'``) to a multiple of this many pixels, an int
    # or an (h, w) pair, instead of the tower's patch size; None = the patch size.
    # ProxyCLIP sets it (56: its CLIP and its vision foundation model see the same window).
    window_multiple: Optional[Union[int, Tuple[int, int]]] = None
    # Capability: a window's forward starts with ``encoder.last_block_input(x)``, called
    # once per window batch, and blocks 0..L-2 run unchanged. A shared pass
    # (``clearclip_seg.sweep``) then computes those frozen blocks once for several runs
    # on the same windows and hands each run the same tokens (a copy per run).
    # Methods that change an earlier block, or call the trunk more than once, keep False.
    shares_trunk: bool = False

    # Methods whose formulas are written for exactly one class token in front of the
    # patch tokens (a zero class row/column in a spatial prior, the class token's
    # residual as a term, ``tokens[:, 1:]``) set this; towers without a class token
    # (SigLIP, SigLIP2) or with several prefix tokens (PE, registers) are refused.
    needs_class_token = False

    # Tower kinds (``models.dense_encoder.tower_kind``) the method is written for; None = any.
    # A method that reads a tower's own modules beyond the ``DenseEncoder`` stages names them.
    tower_kinds: Optional[Tuple[str, ...]] = None

    # Capability: the method scores whole images, not windows (Trident: windows spliced, then
    # aggregated over the image; LPOSS: one graph over the patches of every window, through
    # ``models/image_slide.py``). The segmentor then calls ``image_logits`` once per image
    # instead of its slide/whole loop over ``patch_logits``, and, when ``refines_labels``
    # is True, ``refine_labels`` on the classified image. Every other method keeps False.
    image_level: bool = False
    refines_labels: bool = False

    # Whether a text head (``model.text_head``: rows other than the queries, folded per window)
    # can sit over the method; methods that score whole images or vote classes set False.
    accepts_text_head: bool = True

    def image_logits(self, encoder, image: torch.Tensor, text: torch.Tensor, meta: Optional[dict] = None,
                     test_cfg: Optional[dict] = None, query_to_class: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Image-level methods: cosine logits (Q, h, w) of one normalised image (3, H, W), on any grid.

        ``meta``: the data sample's metainfo (``ori_shape``, ``img_path``), or None.
        ``test_cfg``: the segmentor's, with ``max_windows`` resolved to an int and
        ``window_multiple`` (the padding multiple of the windows) added.
        ``query_to_class``: (Q,) class index of each query.
        The segmentor resizes the logits bilinearly to the original size (``meta['ori_shape']``),
        or to the input size when there is none.
        """
        raise NotImplementedError

    def refine_labels(self, labels: torch.Tensor, probs: torch.Tensor, meta: Optional[dict] = None) -> torch.Tensor:
        """Image-level methods with ``refines_labels``: labels (1, H, W) refined from class probabilities (C, H, W)."""
        return labels

    def check_tower(self, encoder) -> None:
        """One-line error when the tower's kind or prefix tokens don't suit the method."""
        prefix = encoder.num_prefix_tokens
        if self.needs_class_token and prefix != 1:
            raise ValueError(f'model.method.type={self.method_name} needs a tower with exactly one class token '
                             f'before the patch tokens; this tower has {prefix} prefix tokens '
                             '(the LastBlock presets and ProxyCLIP work with any tower)')
        if self.tower_kinds is not None and encoder.kind not in self.tower_kinds:
            raise ValueError(f'model.method.type={self.method_name} runs on {list(self.tower_kinds)} towers; '
                             f'this tower is {encoder.kind!r} (model.clip.arch)')

    def bind(self, encoder) -> None:
        """Check that the wrapped tower suits the method (called once, at build time)."""
        self.check_tower(encoder)

    def bind_vocabulary(self, query_to_class: Sequence[int]) -> None:
        """The vocabulary's query -> class map (called once, at build time); most methods ignore it.

        A method whose forward needs classes rather than queries (CLIPtrase's
        per-region class vote) keeps it.
        """

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        """Projected patch features (B, gh, gw, dim), not normalised."""
        raise NotImplementedError

    def patch_logits(self, encoder, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarities (B, Q, gh, gw) of windows ``x`` with the text embeddings ``text`` (Q, dim).

        ``x`` may have rows/columns past the last whole patch (``patch_fit='truncate'``):
        they are dropped, so ``gh, gw = h // p, w // p``. Methods overriding this do the same,
        or return logits at the window's own size (h, w), which the segmentor's stretch leaves
        as they are (CLIPtrase's per-pixel vote).
        """
        feats = F.normalize(self.features(encoder, truncate_to_patches(x, encoder.patch_size)).float(), dim=-1)
        return torch.einsum('bhwc,qc->bqhw', feats, text.to(feats.dtype))

    def options(self) -> dict:
        """The method's resolved options (for records and protocol cards)."""
        return {k: v for k, v in vars(self).items() if not k.startswith('_')}

    def describe(self) -> dict:
        return dict(type=self.method_name, **self.options())
