"""SC-CLIP (Self-Calibrated CLIP, Bai et al., arXiv 2411.15869) as a registered method.

Only the last block changes; blocks 1..L-1 run once, unchanged, and the
outputs the method reads (z_pre+1, z_post+1, the multi-level range, z_{L-1})
are kept as they pass. With ``feats[i]`` = output of block i+1 (0-idx, the
authors' ``feats_list``), X = patch tokens of z_{L-1}, R(A) = A / (rowsum + 1e-6)::

    outliers  = LOF(X) > quantile_0.95          (or the top-10 L2 norms)
    X         = mean_interp(X), F = mean_interp(feats[pre])  (8-neighbour mean,
                outliers and off-grid neighbours excluded)
    S_pre     = F^ F^T (cosines);  X = R(S_pre * [S_pre >= 0.4]) X
    M         = 3 (S_pre - mean(S_pre)), M < 0 -> -inf        (one M, all heads)
    attn(Y)   = out_proj(1/2 [softmax(M) + softmax(k k^T / sqrt(d))] v),  k, v of ln_1(Y)
    out       = attn(X) + res_cls * z_{L-1}[CLS]
    S_post    = cosines of feats[post] (not repaired);  P = R(S_post * [S_post >= 0.4])
    Sigma     = sum_{i=start}^{end-1} feats[i]  (a sum, CLS row included, not repaired)
    out'      = attn(Sigma[patches]) + res_cls * Sigma[CLS]
    features  = ln_post(P out + P out') @ proj      (patch tokens only)

Choices, each the authors' code (SuleBai/SC-CLIP, ``scclip_segmentor.py``) unless an
option says otherwise:

* **Anomaly detector.** ``anomaly='lof'`` is the repository's HEAD
  (``lof_pytorch``), *not* sklearn's LOF: squared Euclidean distances, 30
  nearest neighbours (the nearest, assumed to be the token itself, dropped),
  reachability uses the *query's* k-distance, LRD = k / mean(reach) with NaN
  means replaced by 1e-6, LOF(p) = mean over neighbours of LRD(o) / LRD(p);
  outliers are scores strictly above ``torch.quantile(scores, 0.95)``
  (linear), compared in the tokens' dtype as the authors' code does.
  ``anomaly='top_norm'`` is the first commit's detector (the 10 patch tokens
  of largest L2 norm). Distances are computed in fp32 and rounded to the
  tokens' dtype before squaring, so fp16 overflows to inf exactly where the
  authors' ``torch.norm(...) ** 2`` does.
* **Grid coordinates.** The authors turn a flat index p into (p // rows,
  p % rows): right only for square grids (all the published windows are
  224 x 224). ``outlier_grid='official'`` reproduces that mapping; a
  coordinate it puts off the grid (where their code raises IndexError) is
  dropped. ``'row_major'`` uses the correct (p // cols, p % cols).
* **Batches.** The authors' code assumes one window per forward (LOF over a
  squeezed batch, one mean(S_pre) over the batch, heads and batch interleaved
  in the attention prior). Here every statistic is per window, so a batch of
  windows gives per-window the numbers of one-window forwards.
* **Degenerate windows.** No outlier flagged (ties at the quantile, NaN
  scores): nothing is replaced (their code crashes indexing an empty tensor).
  Fewer than ``lof_neighbors + 1`` tokens: the neighbour count is clamped to
  the tokens available (their ``topk`` fails).
* **Sharing.** softmax(M) is computed once and used by both passes (the
  authors compute it twice, with the same result); each frozen block runs once.
* **Layer defaults** depend on the backbone: ViT-B/16 (12 blocks) uses the HEAD
  base config (pre 8, post 3, multi 3..10, res_cls 0.3); ViT-L/14 (24 blocks)
  the first commit's commented L/14 block (pre 16, post 6, multi 8..19,
  res_cls 0.1). ``None`` picks them by the tower's depth; other depths must
  set them. beta = 0.4 and the prior's factor 3 are hard-coded upstream and are
  options here with those defaults.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..options import check_number
from .registry import DenseMethod, register_method

# Per-depth layer settings: 12 blocks = ViT-B/16 (HEAD configs/base_config.py),
# 24 blocks = ViT-L/14 (commented block of the first commit's base_config.py).
LAYER_DEFAULTS: Dict[int, Dict[str, float]] = {
    12: dict(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10, res_cls=0.3),
    24: dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19, res_cls=0.1),
}
ANOMALY_DETECTORS = ('lof', 'top_norm')
OUTLIER_GRIDS = ('official', 'row_major')


# -- anomaly tokens -----------------------------------------------------------------
def lof_scores(x: torch.Tensor, n_neighbors: int = 30) -> torch.Tensor:
    """SC-CLIP's simplified local outlier factor of each token, per window.

    Args:
        x: tokens (B, N, C); arithmetic stays in their dtype (fp16 on a GPU, as upstream).
        n_neighbors: k (clamped to N - 1).

    Returns:
        (B, N) scores: mean over the k nearest o of LRD(o) / LRD(p), with
        LRD(p) = k / mean_o max(d(p, o), kd(p)) and d the squared distance.
    """
    n = x.shape[1]
    k = min(int(n_neighbors), n - 1)
    wide = x if x.dtype == torch.float64 else x.float()  # norms in >= fp32, as torch.norm accumulates
    dist = torch.cdist(wide, wide, compute_mode='donot_use_mm_for_euclid_dist').to(x.dtype) ** 2
    knn_dist, knn_idx = torch.topk(dist, k + 1, dim=-1, largest=False)
    knn_dist, knn_idx = knn_dist[..., 1:], knn_idx[..., 1:]        # drop "self"
    k_dist = knn_dist[..., -1:]                                      # the query's k-distance
    reach = torch.maximum(knn_dist, k_dist.expand_as(knn_dist))
    lrd = k / torch.nan_to_num(reach.mean(dim=-1), nan=1e-6)         # (B, N)
    neighbour_lrd = torch.gather(lrd, 1, knn_idx.flatten(1)).view_as(knn_idx)
    return (neighbour_lrd / lrd.unsqueeze(-1)).mean(dim=-1)


def lof_outliers(x: torch.Tensor, n_neighbors: int = 30, contamination: float = 0.05) -> torch.Tensor:
    """(B, N) mask of tokens whose LOF score is strictly above the (1 - contamination) quantile."""
    scores = lof_scores(x, n_neighbors)
    threshold = torch.quantile(scores.float(), 1 - contamination, dim=-1, keepdim=True)
    # upstream compares the scores with a 0-dim fp32 threshold, i.e. in the scores' dtype
    return scores > threshold.to(scores.dtype)


def top_norm_outliers(x: torch.Tensor, k: int = 10) -> torch.Tensor:
    """(B, N) mask of the k tokens with the largest L2 norm (SC-CLIP's first commit)."""
    idx = torch.sort(x.norm(dim=-1), dim=-1, descending=True).indices[:, :min(int(k), x.shape[1])]
    return torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device).scatter_(1, idx, True)


def outlier_grid_mask(flags: torch.Tensor, grid: Tuple[int, int], mode: str = 'official') -> torch.Tensor:
    """Place flat outlier flags (B, N) on the (B, h, w) grid.

    ``'row_major'``: token p is at (p // w, p % w). ``'official'``: at
    (p // h, p % h), the authors' mapping (equal for square grids); positions
    it puts outside the grid are dropped.
    """
    h, w = grid
    if mode == 'row_major' or h == w:
        return flags.view(-1, h, w)
    p = torch.arange(h * w, device=flags.device)
    rows, cols = torch.div(p, h, rounding_mode='trunc'), p % h
    inside = (rows < h) & (cols < w)
    out = torch.zeros_like(flags)
    out[:, rows[inside] * w + cols[inside]] = flags[:, inside]
    return out.view(-1, h, w)


def mean_interpolation(fmap: torch.Tensor, outliers: torch.Tensor) -> torch.Tensor:
    """Replace outlier positions by the mean of their valid 8-neighbours.

    Args:
        fmap: (B, C, h, w) features.
        outliers: (B, h, w) boolean mask.

    Returns:
        ``fmap`` with every outlier that has at least one non-outlier neighbour
        on the grid (zero padding, off-grid neighbours not counted) replaced,
        on all channels; everything else unchanged.
    """
    B, C, h, w = fmap.shape
    valid = (~outliers).to(fmap.dtype).unsqueeze(1)                   # (B, 1, h, w)
    ring = torch.ones(C, 1, 3, 3, dtype=fmap.dtype, device=fmap.device)
    ring[:, :, 1, 1] = 0
    neighbour_sum = F.conv2d(fmap * valid, ring, padding=1, groups=C)
    count = F.conv2d(valid, ring[:1], padding=1)
    update = outliers.unsqueeze(1) & (count > 0)
    return torch.where(update, neighbour_sum / count.clamp(min=1), fmap)


# -- aggregation ----------------------------------------------------------------------
def cosine_matrix(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, N) cosines of tokens (B, N, C) (divided by the norm, no epsilon, as upstream)."""
    t = tokens / tokens.norm(dim=-1, keepdim=True)
    return t @ t.transpose(1, 2)


def aggregate(x: torch.Tensor, sim: torch.Tensor, beta: float) -> torch.Tensor:
    """R(A) x with A = sim where sim >= beta, else 0, and R(A) = A / (rowsum(A) + 1e-6)."""
    a = sim.masked_fill(sim < beta, 0.0)
    return (a / (a.sum(dim=-1, keepdim=True) + 1e-6)) @ x


def prior_attention(sim: torch.Tensor, factor: float = 3.0) -> torch.Tensor:
    """softmax_row(M), M = factor (S - mean(S)) with M < 0 -> -inf; mean per window. (B, 1, N, N)."""
    m = (sim - sim.mean(dim=(-2, -1), keepdim=True)) * factor
    return torch.softmax(m.masked_fill(m < 0, float('-inf')), dim=-1).unsqueeze(1)


def kk_attention(encoder, y: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Last block: out_proj(1/2 [prior + softmax(k k^T / sqrt(d))] v), k and v of ln_1(y); (B, N, width)."""
    t = encoder.qkv(y, ('k', 'v'))
    k, v = t['k'], t['v']
    kk = torch.softmax((k @ k.transpose(-2, -1)) * k.shape[-1] ** -0.5, dim=-1)
    return encoder.project_heads(((prior + kk) / 2) @ v)


@register_method('SCCLIP')
class SCCLIP(DenseMethod):
    """SC-CLIP: anomaly-token repair, similarity-guided aggregation and multi-level fusion.

    Args:
        pre_adjust_idx: block output (0-idx ``feats_list`` index) whose repaired
            cosines aggregate the penultimate tokens and form the attention prior.
        post_adjust_idx: block output whose cosines aggregate the last block's output.
        multi_start_idx, multi_end_idx: block outputs summed for the fusion
            branch (``start..end-1``).
        res_cls: weight of the CLS residual added to every patch.
            The five above default (None) to the authors' values for the
            tower's depth (12: ViT-B/16, 24: ViT-L/14).
        beta: cosine threshold of the aggregation matrices (0.4).
        prior_scale: factor of the centred prior before the softmax (3).
        anomaly: ``'lof'`` (HEAD) or ``'top_norm'`` (first commit).
        lof_neighbors: LOF's k (30).
        contamination: the share of tokens above the LOF threshold quantile (0.05).
        top_norm_k: tokens flagged by ``'top_norm'`` (10).
        outlier_grid: ``'official'`` (the authors' square-grid coordinates) or ``'row_major'``.
    """

    needs_class_token = True

    def __init__(self, pre_adjust_idx: Optional[int] = None, post_adjust_idx: Optional[int] = None,
                 multi_start_idx: Optional[int] = None, multi_end_idx: Optional[int] = None,
                 res_cls: Optional[float] = None, beta: float = 0.4, prior_scale: float = 3.0,
                 anomaly: str = 'lof', lof_neighbors: int = 30, contamination: float = 0.05,
                 top_norm_k: int = 10, outlier_grid: str = 'official', key: str = 'model.method'):
        self._key = key
        for name, value in (('pre_adjust_idx', pre_adjust_idx), ('post_adjust_idx', post_adjust_idx),
                            ('multi_start_idx', multi_start_idx), ('multi_end_idx', multi_end_idx)):
            if value is not None:
                check_number(value, f'{key}.{name}', low=0, integer=True)
        self.pre_adjust_idx = pre_adjust_idx
        self.post_adjust_idx = post_adjust_idx
        self.multi_start_idx = multi_start_idx
        self.multi_end_idx = multi_end_idx
        self.res_cls = None if res_cls is None else check_number(res_cls, f'{key}.res_cls')
        self.beta = check_number(beta, f'{key}.beta', low=-1, high=1)
        self.prior_scale = check_number(prior_scale, f'{key}.prior_scale', low=0, low_open=True)
        if anomaly not in ANOMALY_DETECTORS:
            raise ValueError(f'{key}.anomaly={anomaly!r}: expected one of {list(ANOMALY_DETECTORS)}')
        self.anomaly = anomaly
        self.lof_neighbors = check_number(lof_neighbors, f'{key}.lof_neighbors', low=1, integer=True)
        self.contamination = check_number(contamination, f'{key}.contamination', low=0, high=1, high_open=True)
        self.top_norm_k = check_number(top_norm_k, f'{key}.top_norm_k', low=0, integer=True)
        if outlier_grid not in OUTLIER_GRIDS:
            raise ValueError(f'{key}.outlier_grid={outlier_grid!r}: expected one of {list(OUTLIER_GRIDS)}')
        self.outlier_grid = outlier_grid

    def layers(self, num_blocks: int) -> Dict[str, float]:
        """The five layer settings for a tower of ``num_blocks`` blocks (defaults filled, checked)."""
        names = ('pre_adjust_idx', 'post_adjust_idx', 'multi_start_idx', 'multi_end_idx', 'res_cls')
        given = {n: getattr(self, n) for n in names}
        missing = [n for n, v in given.items() if v is None]
        if missing and num_blocks not in LAYER_DEFAULTS:
            raise ValueError(f'{self._key}: no SC-CLIP defaults for a {num_blocks}-block tower '
                             f'(known: {sorted(LAYER_DEFAULTS)}); set {", ".join(missing)}')
        out = {n: (LAYER_DEFAULTS[num_blocks][n] if v is None else v) for n, v in given.items()}
        last = num_blocks - 2  # feats_list holds the outputs of blocks 1..L-1
        for n in ('pre_adjust_idx', 'post_adjust_idx', 'multi_start_idx'):
            if out[n] > last:
                raise ValueError(f'{self._key}.{n}={out[n]}: expected <= {last} for a {num_blocks}-block tower')
        if not out['multi_start_idx'] < out['multi_end_idx'] <= last + 1:
            raise ValueError(f"{self._key}.multi_end_idx={out['multi_end_idx']}: expected in "
                             f"({out['multi_start_idx']}, {last + 1}] for a {num_blocks}-block tower")
        return out

    def bind(self, encoder) -> None:
        self.check_tower(encoder)
        # fail at build time, not on the first window; records then show the resolved values
        self._resolved = self.layers(encoder.num_blocks)

    def options(self) -> dict:
        own = {k: v for k, v in vars(self).items() if not k.startswith('_')}
        return {**own, **getattr(self, '_resolved', {})}

    def outliers(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """(B, h, w) anomaly mask of patch tokens (B, N, C)."""
        if self.anomaly == 'lof':
            flags = lof_outliers(tokens, self.lof_neighbors, self.contamination)
        else:
            flags = top_norm_outliers(tokens, self.top_norm_k)
        return outlier_grid_mask(flags, grid, self.outlier_grid)

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        cfg = self.layers(encoder.num_blocks)
        pre, post = cfg['pre_adjust_idx'], cfg['post_adjust_idx']
        start, end = cfg['multi_start_idx'], cfg['multi_end_idx']
        z, (gh, gw) = encoder.embed(x)
        kept, multi = {}, None
        for i in range(encoder.num_blocks - 1):  # each frozen block once; keep what is read
            z = encoder.run_blocks(z, i, i + 1)
            if i in (pre, post):
                kept[i] = z
            if start <= i < end:
                multi = z.clone() if multi is None else multi.add_(z)
        B, _, C = z.shape
        anomalies = self.outliers(z[:, 1:], (gh, gw))

        def repair(tokens):  # (B, N, C) patches, mean-interpolated at the anomaly positions
            fmap = tokens.transpose(1, 2).reshape(B, C, gh, gw)
            return mean_interpolation(fmap, anomalies).reshape(B, C, gh * gw).transpose(1, 2)

        s_pre = cosine_matrix(repair(kept[pre][:, 1:]))
        tokens = aggregate(repair(z[:, 1:]), s_pre, self.beta)
        prior = prior_attention(s_pre, self.prior_scale)  # one prior for both passes
        post_sim = cosine_matrix(kept[post][:, 1:])         # not repaired
        main = kk_attention(encoder, tokens, prior) + cfg['res_cls'] * z[:, :1]
        fused = kk_attention(encoder, multi[:, 1:], prior) + cfg['res_cls'] * multi[:, :1]
        main = aggregate(main, post_sim, self.beta)
        out = main + aggregate(fused, post_sim, self.beta)
        return encoder.head(out).reshape(B, gh, gw, -1)
