"""CLIPtrase (Shao et al., ECCV 2024): self-correlation recalibration and patch clustering.

As the authors' standalone evaluation runs it (official leaves162/CLIPtrase at
2b7de61, ``clip_utils/attn2.py::multi_head_attention_forward``,
``clip_self_correlation.py::self_clip``), per window:

* blocks 1..L-2 are CLIP's own. Block L-1 (the 11th of ViT-B/16) also runs
  unchanged; from its per-head q, k, v (of ``ln_1(x)``, biases included, class
  token included) it yields the **self-correlation map**::

      S = mean_h [cos(q_i, q_j) + cos(k_i, k_j) + cos(v_i, v_j)] / 3       (N x N)

* the last block is **recalibrated**: per head
  ``A = softmax(s QQ^T) + softmax(s KK^T) + softmax(s VV^T)`` (rows sum to 3,
  not renormalised), ``x' = x + out_proj(A V)``, ``x'' = x' + FFN(x')``
  (residual and FFN kept); then ``ln_post`` and ``proj`` on every token;
* logits: cosines of the patch features with the text rows, bilinearly
  stretched to the window; ``cls_scale`` (the authors' VOC20 rule) multiplies
  each class's map by the class token's cosine with it (sign included);
* **patch clustering**: the affinity ``A = S[1:, 1:] - S[0, 1:]`` (the class
  row subtracted from every patch row), negatives set to 0, is clustered with
  DBSCAN (Euclidean, ``eps``, ``min_samples``; rows are the samples). Each
  cluster's map is the mean of its members' rows, stretched x ``smooth_ratio``,
  median-filtered (``median_size``, scipy's 'reflect' border) and stretched to
  the window; a pixel's region is the first cluster of largest map value;
* **vote**: every pixel of a region takes the most frequent *class* of the
  region's first-pass argmax labels (ties: the smallest class index). When
  DBSCAN finds no cluster, the first-pass labels stand.

The vote is over classes, not queries: the authors merge their background
names into one background class before it, so the method reads the
vocabulary's query -> class map (``bind_vocabulary``). The result leaves the
method as one-hot logits on each class's first query, at the window's pixel
size: the segmentor's stretch of them is then the identity, overlapping
windows average their votes, and its argmax (after ``logit_scale``, max over
synonyms) is the voted class. A ``model.text_head`` whose rows are not the
queries is refused (the vote would see rows, not classes).

Deliberate differences from the official code:

* DBSCAN is implemented here (``dbscan``), with sklearn's labelling (clusters
  numbered by their first core point, a border point joins the lowest-numbered
  cluster that reaches it) and float64 Euclidean distances; sklearn computes
  the distances another way, so a pair within rounding of ``eps`` may fall on
  the other side (the fixture agreement in tests/test_cliptrase.py measures it).
* Block indices: the authors hard-code 11 and 12 (ViT-B/16); here the last two
  blocks of any depth with a class token.
* Windows of a batch are independent (the official code is batch 1).

The centre-crop protocol, the n = 224 / 336 settings (eps 0.7 / 1.1,
min_samples 3 / 7) and the metric are protocol values (``protocol/methods.py``).
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import median_filter
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ..options import check_bool, check_number
from .registry import DenseMethod, register_method, truncate_to_patches


# -- recalibration --------------------------------------------------------------------
def self_correlation(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, N, N) head-averaged ``[cos(q, q) + cos(k, k) + cos(v, v)] / 3`` of per-head (B, heads, N, d) tensors."""
    def cos(t):
        t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return t @ t.transpose(-2, -1)
    return ((cos(q) + cos(k) + cos(v)) / 3.0).mean(dim=1)


def recalibrated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-head weights (B, heads, N, N): ``softmax(s QQ^T) + softmax(s KK^T) + softmax(s VV^T)``, s = d ** -0.5."""
    s = q.shape[-1] ** -0.5
    return sum(torch.softmax((t * s) @ t.transpose(-2, -1), dim=-1) for t in (q, k, v))


def patch_affinity(corr: torch.Tensor) -> torch.Tensor:
    """(B, hw, hw) affinity: patch rows of the self-correlation minus the class row, negatives to 0."""
    return (corr[:, 1:, 1:] - corr[:, :1, 1:]).clamp_min(0)


# -- clustering ----------------------------------------------------------------------
def dbscan(points: torch.Tensor, eps: float, min_samples: int) -> torch.Tensor:
    """DBSCAN labels (n,) of ``points`` (n, d): 0..K-1 per cluster, -1 for noise.

    sklearn's semantics: a point's neighbourhood includes itself (distance <= eps),
    core points have at least ``min_samples`` neighbours, clusters are the
    connected components of core points numbered in order of their first
    (lowest-index) point, and a border point joins the lowest-numbered cluster
    among its core neighbours.
    """
    x = points.detach().cpu().to(torch.float64)
    n = x.shape[0]
    near = torch.cdist(x, x, compute_mode='donot_use_mm_for_euclid_dist') <= eps
    core = near.sum(dim=1) >= min_samples
    labels = torch.full((n,), -1, dtype=torch.long)
    if not bool(core.any()):
        return labels
    # components of the core graph, numbered by their lowest index (sklearn's discovery order)
    idx = torch.nonzero(core).flatten()
    _, comp = connected_components(csr_matrix(near[idx][:, idx].numpy()), directed=False)
    comp = torch.from_numpy(comp).long()
    first = torch.full((int(comp.max()) + 1,), n, dtype=torch.long).scatter_reduce(0, comp, idx, 'amin')
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(len(first))
    labels[idx] = rank[comp]
    # border points: the lowest cluster number among core neighbours
    reach = near & core[None, :]
    border = ~core & reach.any(dim=1)
    if bool(border.any()):
        big = int(labels.max()) + 1
        cand = torch.where(reach[border], labels[None, :].expand(int(border.sum()), n), torch.full((1,), big))
        labels[border] = cand.amin(dim=1)
    return labels


def cluster_regions(affinity: torch.Tensor, labels: torch.Tensor, grid: Tuple[int, int], size: Tuple[int, int],
                    smooth_ratio: int = 4, median_size: int = 7) -> Optional[torch.Tensor]:
    """(H, W) region index (0..K-1) of each pixel, or None when every patch is noise.

    Args:
        affinity: (hw, hw) rows of one window.
        labels: (hw,) DBSCAN labels.
        grid: (h, w) patch grid.
        size: (H, W) the window in pixels.
        smooth_ratio, median_size: the maps are stretched to ``smooth_ratio`` x the
            grid and median-filtered with a ``median_size`` window before the final stretch.
    """
    k = int(labels.max()) + 1
    if k == 0:
        return None
    h, w = grid
    maps = torch.stack([affinity[labels == c].mean(dim=0) for c in range(k)]).reshape(1, k, h, w)
    maps = F.interpolate(maps, size=(smooth_ratio * h, smooth_ratio * w), mode='bilinear', align_corners=False)[0]
    smooth = np.stack([median_filter(m, size=median_size) for m in maps.cpu().numpy()])
    maps = torch.from_numpy(smooth).to(affinity.device)[None]
    return F.interpolate(maps, size=tuple(size), mode='bilinear', align_corners=False)[0].argmax(dim=0)


def region_vote(pred: torch.Tensor, regions: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Every pixel of a region gets the region's most frequent label of ``pred`` (ties: the smallest label).

    Args:
        pred: (H, W) int64 labels in 0..num_labels-1.
        regions: (H, W) int64 region indices.
        num_labels: label count.
    """
    k = int(regions.max()) + 1
    counts = torch.bincount((regions * num_labels + pred).flatten(), minlength=k * num_labels).view(k, num_labels)
    return counts.argmax(dim=1)[regions]   # first maximum: the smallest label


@register_method('CLIPtrase')
class CLIPtrase(DenseMethod):
    """CLIPtrase: recalibrated last block, self-correlation clustering and a per-region class vote.

    Args:
        eps: DBSCAN radius (0.7, the authors' value for 224 x 224 inputs; 1.1 at 336).
        min_samples: DBSCAN core threshold, the point itself included (3; 7 at 336).
        smooth_ratio: the cluster maps' intermediate stretch (4).
        median_size: the median filter's window (7, ``2 * smooth_ratio - 1`` upstream).
        cls_scale: multiply each class's logits by the class token's cosine with it
            (the authors' VOC20-only rule; False).
        cluster: run the clustering and vote (True); False leaves the first-pass labels.
    """

    accepts_text_head = False   # the vote runs over the vocabulary's classes

    needs_class_token = True

    def __init__(self, eps: float = 0.7, min_samples: int = 3, smooth_ratio: int = 4, median_size: int = 7,
                 cls_scale: bool = False, cluster: bool = True, key: str = 'model.method'):
        self.eps = check_number(eps, f'{key}.eps', low=0, low_open=True)
        self.min_samples = check_number(min_samples, f'{key}.min_samples', low=1, integer=True)
        self.smooth_ratio = check_number(smooth_ratio, f'{key}.smooth_ratio', low=1, integer=True)
        self.median_size = check_number(median_size, f'{key}.median_size', low=1, integer=True)
        self.cls_scale = check_bool(cls_scale, f'{key}.cls_scale')
        self.cluster = check_bool(cluster, f'{key}.cluster')
        self._query_to_class: Optional[torch.Tensor] = None

    def bind(self, encoder) -> None:
        self.check_tower(encoder)
        if encoder.num_blocks < 2:
            raise ValueError(f'model.method.type={self.method_name} needs a tower of at least 2 blocks '
                             f'(it has {encoder.num_blocks})')

    def bind_vocabulary(self, query_to_class: Sequence[int]) -> None:
        self._query_to_class = torch.as_tensor(list(query_to_class), dtype=torch.long)
        # each class's vote leaves through its first query
        first = torch.full((int(self._query_to_class.max()) + 1,), -1, dtype=torch.long)
        for q in reversed(range(len(self._query_to_class))):
            first[int(self._query_to_class[q])] = q
        self._first_query = first

    def forward_tokens(self, encoder, x: torch.Tensor):
        """Projected tokens (B, N, dim) of the recalibrated tower, the self-correlation (B, N, N) and the grid."""
        z, grid = encoder.embed(x)
        last = encoder.num_blocks - 1
        z = encoder.run_blocks(z, 0, last - 1)
        t = encoder.qkv(z, ('q', 'k', 'v'), block=last - 1)
        corr = self_correlation(t['q'].float(), t['k'].float(), t['v'].float())  # fp32, as the authors' run
        z = encoder.run_blocks(z, last - 1, last)
        t = encoder.qkv(z, ('q', 'k', 'v'))
        y = z + encoder.project_heads(recalibrated_attention(t['q'], t['k'], t['v']) @ t['v'])
        y = y + encoder.ffn_branch(y)
        return encoder.head(y), corr, grid

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        out, _, (gh, gw) = self.forward_tokens(encoder, x)
        return out[:, 1:].reshape(out.shape[0], gh, gw, -1)

    def first_pass(self, encoder, x: torch.Tensor, text: torch.Tensor, size: Optional[Tuple[int, int]] = None):
        """Query logits (B, Q, H, W) stretched to ``size`` (default: ``x``'s), the affinity (B, hw, hw), the grid."""
        out, corr, (gh, gw) = self.forward_tokens(encoder, x)
        feats = F.normalize(out.float(), dim=-1)
        text = text.to(feats.dtype)
        logits = torch.einsum('bnc,qc->bqn', feats[:, 1:], text).reshape(feats.shape[0], -1, gh, gw)
        logits = F.interpolate(logits, size=size or tuple(x.shape[-2:]), mode='bilinear', align_corners=False)
        if self.cls_scale:
            logits = logits * (feats[:, 0] @ text.t())[:, :, None, None]
        return logits, patch_affinity(corr), (gh, gw)

    def patch_logits(self, encoder, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """One-hot class votes (B, Q, h, w) at the window's size (``x`` truncated to whole patches)."""
        q2c = self._query_to_class
        if q2c is None or len(q2c) != text.shape[0]:
            raise ValueError(f'model.method.type={self.method_name} votes over the vocabulary\'s classes: it needs '
                             f'one classifier row per query ({text.shape[0]} rows, '
                             f'{"no vocabulary bound" if q2c is None else f"{len(q2c)} queries"}); '
                             'model.text_head is not supported')
        size = tuple(x.shape[-2:])   # a truncated window's logits are stretched over all of it
        logits, affinity, grid = self.first_pass(encoder, truncate_to_patches(x, encoder.patch_size), text, size)
        q2c, first_query = q2c.to(logits.device), self._first_query.to(logits.device)
        num_classes = len(first_query)
        out = torch.zeros_like(logits)
        for b in range(logits.shape[0]):
            pred = q2c[logits[b].argmax(dim=0)]
            if self.cluster:
                labels = dbscan(affinity[b], self.eps, self.min_samples).to(logits.device)
                regions = cluster_regions(affinity[b], labels, grid, size, self.smooth_ratio,
                                          self.median_size)
                if regions is not None:
                    pred = region_vote(pred, regions, num_classes)
            out[b].scatter_(0, first_query[pred][None], 1.0)
        return out
