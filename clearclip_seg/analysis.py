"""Decomposing CLIP's last block: norms, attention entropy, per-component segmentation.

The computations behind the paper's analysis (Sec. 3, figures 2 to 4), used by
``tools/analyze_decomposition.py``. The last block of CLIP's ViT is

    X_sum = X_res + X_attn,      X_res = the block's input (the residual stream)
                                 X_attn = ls_1(out_proj(Attn(ln_1(X_res))))
    output = X_sum + FFN(X_sum)  (when the FFN is kept)

so ``X_res + X_attn`` is exactly the block's output with the residual on and
the FFN off. With the FFN on, the output adds ``ls_2(mlp(ln_2(X_res + X_attn)))``
to that sum: the decomposition here (as in the paper's figures) is of the
sum *before* the FFN.

Nothing in ``DenseCLIPEncoder`` or ``ClearCLIPSegmentor`` is changed: the
attention mode is switched temporarily on an encoder instance
(:func:`last_block_settings`); the per-component logits reuse the
segmentor's text classifier and ``slide_inference`` / ``whole_inference``,
and are classified by its ``postprocess_result`` (resize, logit scale,
synonyms, ``prob_thd``).
"""
import math
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .models.attention import ATTENTION_MODES, attention_map, check_mode
from .models.slide import patch_padding, slide_inference, whole_inference, window_boxes

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


@contextmanager
def last_block_settings(encoder, attn: Optional[str] = None, residual: Optional[bool] = None,
                        ffn: Optional[bool] = None) -> Iterator:
    """Temporarily switch a ``DenseCLIPEncoder``'s last block, restoring it afterwards.

    Args:
        encoder: the encoder (``segmentor.encoder``).
        attn: attention mode (``qk | qq | kk | vv | qq+kk | identity``); None keeps it.
        residual: residual switch; None keeps it.
        ffn: FFN switch; None keeps it.

    Yields:
        The encoder, switched.
    """
    saved = (encoder.attn_mode, encoder.residual, encoder.ffn)
    try:
        if attn is not None:
            encoder.attn_mode = check_mode(attn)
        if residual is not None:
            encoder.residual = bool(residual)
        if ffn is not None:
            encoder.ffn = bool(ffn)
        yield encoder
    finally:
        encoder.attn_mode, encoder.residual, encoder.ffn = saved


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


# -- (a) norms -------------------------------------------------------------------
def frobenius_norm(tokens: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of each token matrix, in float64.

    Args:
        tokens: (B, N, C) tokens (all N tokens, the class token included).

    Returns:
        (B,) float64 norms ``sqrt(sum_ij x_ij^2)``.
    """
    return torch.linalg.matrix_norm(tokens.double(), ord='fro', dim=(-2, -1))


def decompose_last_block(encoder, x: torch.Tensor, mode: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The last block's components for one attention mode.

    Args:
        encoder: a ``DenseCLIPEncoder``.
        x: normalised images (B, 3, H, W), H and W multiples of the patch size.
        mode: attention mode for ``X_attn``; None uses the encoder's own.

    Returns:
        ``x_res`` (B, N, C) the block's input, ``x_attn`` (B, N, C) the
        attention branch (no residual), ``x_res+x_attn`` their sum, ``ffn``
        the FFN term the block would add to that sum (``ls_2(mlp(ln_2(.)))``),
        and ``grid`` (gh, gw).
    """
    with last_block_settings(encoder, attn=mode):
        x_res, grid = encoder.last_block_input(x)
        x_attn = encoder.attention_branch(x_res)
    total = x_res + x_attn
    block = encoder.visual.transformer.resblocks[-1]
    mlp = block.mlp(block.ln_2(total))
    ffn = block.ls_2(mlp) if hasattr(block, 'ls_2') else mlp
    return {'x_res': x_res, 'x_attn': x_attn, 'x_res+x_attn': total, 'ffn': ffn, 'grid': grid}


# -- (b) entropy -----------------------------------------------------------------
def normalized_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of each attention row, in float64.

    ``H(p) = -sum_j p_j log p_j / log N`` with ``0 log 0 = 0``: 1 for a uniform
    row, 0 for a one-hot row (identity attention). Rows are divided by their
    sum first, so a sum of softmaxes (``qq+kk``, rows summing to 2) is read as
    the average of its two distributions.

    Args:
        attn: (..., N_query, N) non-negative attention weights.

    Returns:
        (..., N_query) float64 entropies in [0, 1].
    """
    p = attn.double()
    n = p.shape[-1]
    p = p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    if n < 2:
        return torch.zeros(p.shape[:-1], dtype=torch.float64, device=p.device)
    return -torch.xlogy(p, p).sum(dim=-1) / math.log(n)


def qkv_float64(encoder, x_res: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The last block's per-head q, k, v (B, heads, N, d), cast to float64."""
    return {name: t.double() for name, t in encoder.qkv(x_res).items()}


def attention_map_float64(encoder, x_res: torch.Tensor, mode: str,
                          qkv: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """The last block's attention matrix for ``mode``, computed in float64.

    The projections come from the model in its own precision; the scaled
    products and the softmax are done in float64.

    Args:
        encoder: a ``DenseCLIPEncoder``.
        x_res: tokens entering the last block (B, N, C).
        mode: attention mode.
        qkv: :func:`qkv_float64` of ``x_res``, to share between modes.

    Returns:
        (B, heads, N, N) float64 attention weights (a sum of softmaxes for ``qq+kk``).
    """
    t = qkv if qkv is not None else qkv_float64(encoder, x_res)
    return attention_map(check_mode(mode), t['q'], t['k'], t['v'])


# -- per-window statistics (a) + (b) ---------------------------------------------
def iter_windows(image: torch.Tensor, crop, stride, patch) -> Iterator[torch.Tensor]:
    """The slide-inference windows of one image, each zero-padded to the patch size.

    Args:
        image: normalised image (3, H, W).
        crop, stride, patch: window size, step and patch size (int or (h, w)).

    Yields:
        (1, 3, h', w') padded windows, in slide-inference order.
    """
    H, W = image.shape[-2:]
    for y1, y2, x1, x2 in window_boxes(H, W, crop, stride):
        win = image[:, y1:y2, x1:x2]
        left, right, top, bottom = patch_padding(y2 - y1, x2 - x1, patch)
        if left or right or top or bottom:
            win = F.pad(win, (left, right, top, bottom))
        yield win[None]


@torch.no_grad()
def window_statistics(encoder, windows: Sequence[torch.Tensor], modes: Sequence[str],
                      cache: Optional[LastBlockInputCache] = None) -> Dict[str, Dict]:
    """Norms and attention entropy of the last block, averaged over an image's windows.

    Args:
        encoder: a ``DenseCLIPEncoder``.
        windows: (1, 3, h, w) padded windows of one image (:func:`iter_windows`).
        modes: attention modes.
        cache: reuse blocks 0..L-2 across passes (:class:`LastBlockInputCache`).

    Returns:
        Per mode: ``x_res_norm``, ``x_attn_norm`` (Frobenius norms over all
        tokens, mean over windows), ``attn_to_res`` (mean of the per-window
        ratio), ``entropy`` (normalised entropy, mean over heads, query tokens
        and windows) and ``entropy_per_head`` (list, mean over query tokens and
        windows).
    """
    acc = {m: dict(x_res_norm=0.0, x_attn_norm=0.0, attn_to_res=0.0, entropy=0.0, entropy_per_head=None)
           for m in modes}
    count = 0
    last_block_input = cache or encoder.last_block_input
    for win in windows:
        x_res, _ = last_block_input(win)
        res_norm = frobenius_norm(x_res)
        qkv = qkv_float64(encoder, x_res)
        for m in modes:
            with last_block_settings(encoder, attn=m):
                x_attn = encoder.attention_branch(x_res)
            attn_norm = frobenius_norm(x_attn)
            ent = normalized_entropy(attention_map_float64(encoder, x_res, m, qkv))  # (B, heads, N)
            a = acc[m]
            a['x_res_norm'] += res_norm.sum().item()
            a['x_attn_norm'] += attn_norm.sum().item()
            a['attn_to_res'] += (attn_norm / res_norm).sum().item()
            a['entropy'] += ent.mean(dim=(1, 2)).sum().item()
            per_head = ent.mean(dim=2).sum(dim=0)
            a['entropy_per_head'] = per_head if a['entropy_per_head'] is None else a['entropy_per_head'] + per_head
        count += win.shape[0]
    if not count:
        raise ValueError('no windows to analyse')
    out = {}
    for m, a in acc.items():
        out[m] = dict(x_res_norm=a['x_res_norm'] / count, x_attn_norm=a['x_attn_norm'] / count,
                      attn_to_res=a['attn_to_res'] / count, entropy=a['entropy'] / count,
                      entropy_per_head=(a['entropy_per_head'] / count).tolist())
    return out


# -- (c) segmentation from one component -----------------------------------------
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
        with last_block_settings(encoder, attn=mode):
            x_attn = encoder.attention_branch(x_res)
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


def miou_from_areas(area_intersect, area_union, area_pred, area_label) -> Dict:
    """mIoU / aAcc (percent) and per-class IoU from summed areas, as MMSeg's IoUMetric.

    Classes absent from both prediction and labels (union 0) are NaN and left
    out of the mean, as in MMSeg.

    Args:
        area_intersect, area_union, area_pred, area_label: (num_classes,) sums.

    Returns:
        ``mIoU``, ``aAcc`` (floats, percent; None when undefined) and ``IoU``
        (list, percent, None for NaN).
    """
    import numpy as np
    inter = np.asarray(area_intersect, np.float64)
    union = np.asarray(area_union, np.float64)
    label = np.asarray(area_label, np.float64)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = inter / union
        aacc = inter.sum() / label.sum()

    def pct(v):
        v = float(v)
        return None if math.isnan(v) else 100.0 * v

    miou = np.nanmean(iou) if np.isfinite(iou).any() else float('nan')
    return dict(mIoU=pct(miou), aAcc=pct(aacc), IoU=[pct(v) for v in iou])


class AreaAccumulator:
    """Sums MMSeg's ``intersect_and_union`` areas per key (e.g. (mode, source)).

    Args:
        num_classes: number of classes.
        ignore_index: label value left out of the metric (255).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.areas: Dict = {}

    def add(self, key, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add one image's (H, W) prediction against its (H, W) labels."""
        from mmseg.evaluation.metrics import IoUMetric
        areas = IoUMetric.intersect_and_union(pred.reshape(label.shape).to(label.device), label,
                                              self.num_classes, self.ignore_index)
        areas = [a.double() for a in areas]
        if key in self.areas:
            self.areas[key] = [s + a for s, a in zip(self.areas[key], areas)]
        else:
            self.areas[key] = areas

    def metrics(self, key) -> Dict:
        """``miou_from_areas`` of one key's sums."""
        return miou_from_areas(*[a.numpy() for a in self.areas[key]])
