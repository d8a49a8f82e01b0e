"""The last block's components as features: X_res, X_attn and their sum, scored like the segmentor scores.

The decomposition itself is ``DenseEncoder.decompose`` / ``decompose_tokens``;
here the components of slide-inference windows are projected (``ln_post`` +
``proj``), compared with the segmentor's text classifier and stitched by its
own slide (or whole) inference rules. The encoder is never switched: each
mode's attention branch is asked for by name (``attention_branch(x, mode)``).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..models.attention import ATTENTION_MODES, check_mode
from ..models.slide import slide_inference, whole_inference

#: The feature sources of the decomposition, in plotting order.
SOURCES: Tuple[str, ...] = ('x_res', 'x_attn', 'x_res+x_attn')
#: Every attention mode, in the paper's order.
ALL_MODES: Tuple[str, ...] = tuple(ATTENTION_MODES)


def parse_modes(spec) -> List[str]:
    """Parse ``'qk,qq,qq+kk'`` (or a list) into checked attention-mode names.

    Args:
        spec: comma-separated string or a sequence of names.

    Returns:
        The mode names, in the given order, without duplicates.

    Raises:
        ValueError: for an unknown mode or an empty list.
    """
    items = spec.split(',') if isinstance(spec, str) else list(spec)
    modes = []
    for m in (s.strip() for s in items):
        if m and m not in modes:
            modes.append(check_mode(m))
    if not modes:
        raise ValueError(f'no attention mode in {spec!r}: expected some of {list(ALL_MODES)}')
    return modes


class LastBlockInputCache:
    """Memoise ``encoder.last_block_input`` per window, for several passes over one image.

    The analysis reads the same windows once per attention mode; blocks
    0..L-2 do not depend on the mode, so their output is computed once per
    window and reused. A window is found again by exact equality of its
    pixels (any batch grouping), so a hit returns exactly what was computed.
    Use one cache per image and drop it afterwards.

    Args:
        encoder: a ``DenseCLIPEncoder``.
    """

    def __init__(self, encoder):
        self.encoder = encoder
        self.entries: List[Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]] = []
        self.hits = 0
        self.misses = 0

    def _find(self, window: torch.Tensor):
        for key, value, grid in self.entries:
            if key.shape == window.shape and torch.equal(key, window):
                return value, grid
        return None

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Same contract as ``encoder.last_block_input``: (B, N, C) tokens and the grid."""
        found = [self._find(w) for w in x]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            tokens, grid = self.encoder.last_block_input(x[missing])
            for j, i in enumerate(missing):
                found[i] = (tokens[j], grid)
                self.entries.append((x[i], tokens[j], grid))
        self.hits += len(x) - len(missing)
        self.misses += len(missing)
        return torch.stack([f[0] for f in found]), found[0][1]


def component_features(encoder, x: torch.Tensor, mode: str, sources: Sequence[str] = SOURCES,
                       cache: Optional[LastBlockInputCache] = None) -> Dict[str, torch.Tensor]:
    """L2-normalised patch features of each component through ``ln_post`` + ``proj``.

    Args:
        encoder: a ``DenseCLIPEncoder``.
        x: normalised, patch-divisible images (B, 3, H, W).
        mode: attention mode for ``X_attn``.
        sources: any of ``x_res``, ``x_attn``, ``x_res+x_attn``.
        cache: reuse blocks 0..L-2 across calls (:class:`LastBlockInputCache`).

    Returns:
        source -> (B, gh, gw, dim) float32 features, class token dropped.
    """
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f'unknown feature sources {sorted(unknown)}: expected some of {list(SOURCES)}')
    x_res, (gh, gw) = (cache or encoder.last_block_input)(x)
    tokens = {'x_res': x_res}
    if 'x_attn' in sources or 'x_res+x_attn' in sources:
        x_attn = encoder.attention_branch(x_res, mode)
        tokens['x_attn'] = x_attn
        tokens['x_res+x_attn'] = x_res + x_attn
    out = {}
    for s in sources:
        feats = encoder.head(tokens[s])[:, 1:]
        out[s] = F.normalize(feats.float().reshape(feats.shape[0], gh, gw, -1), dim=-1)
    return out


@torch.no_grad()
def component_query_logits(segmentor, images, mode: str, sources: Sequence[str] = SOURCES,
                           cache: Optional[LastBlockInputCache] = None) -> Dict[str, List[torch.Tensor]]:
    """Per-component query logits, scored like the segmentor scores its own features.

    Each window runs the encoder once; the chosen components go through
    ``ln_post`` + ``proj``, are compared with the segmentor's text classifier
    (cosine similarity) and stitched by the segmentor's own slide (or whole)
    inference rules. ``segmentor.postprocess_result`` then applies the same
    resize, logit scale, synonym max and ``prob_thd`` as for its predictions.

    Args:
        segmentor: a ``ClearCLIPSegmentor``.
        images: normalised images, a (B, 3, H, W) tensor or a list of (3, H, W).
        mode: attention mode for ``X_attn``.
        sources: feature sources to score.
        cache: reuse blocks 0..L-2 across modes (:class:`LastBlockInputCache`).

    Returns:
        source -> one (Q, H, W) logit map per image.
    """
    sources = list(sources)
    text = segmentor.build_text_classifier()
    encoder = segmentor.encoder
    num_q = text.shape[0]

    def encode(crops: torch.Tensor) -> torch.Tensor:
        feats = component_features(encoder, crops, mode, sources, cache)
        return torch.cat([torch.einsum('bhwc,qc->bqhw', feats[s], text) for s in sources], dim=1)

    images = list(images)
    cfg = segmentor.test_cfg
    if cfg['mode'] == 'whole':
        logits = whole_inference(images, encode, encoder.patch_size)
    else:
        logits = slide_inference(images, encode, num_q * len(sources), cfg['crop_size'], cfg['stride'],
                                 encoder.patch_size, max_windows=segmentor.max_windows(images[0].device))
    return {s: [lg[i * num_q:(i + 1) * num_q] for lg in logits] for i, s in enumerate(sources)}
