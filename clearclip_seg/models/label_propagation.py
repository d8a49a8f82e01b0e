"""Label propagation as LPOSS runs it: two graphs and a truncated conjugate-gradient solve.

As the authors' evaluation code computes it (vladan-stojnic/LPOSS,
``segmentation/evaluation/lposs_eval.py``; docs/protocol.md, "Other methods"):

* **Patch graph** (``patch_graph``): nodes are the patches of all windows of
  one image. Each node's ``k`` nearest neighbours by the inner product of its
  (normalised) VFM feature, itself included, get the weight
  ``w_ij = max(s_ij, 0)^gamma * exp(-sigma * ||pos_i - pos_j||^power)``
  (positions: patch centres in image pixels); ``W + W^T`` (mutual neighbours
  count twice), the diagonal removed.
* **Pixel graph** (``PixelGraph``): every pixel links to the other pixels of
  its ``(2 n + 1)^2`` neighbourhood (no padding) with
  ``w = exp(-||lab_i - lab_j|| / tau)``, Lab scaled by (100, 128, 128).
* Both are normalised ``W^ = D^-1/2 W D^-1/2`` (a zero degree counts as 1) in
  float32, the system is ``L = I - alpha W^`` in float64 (``alpha W^`` rounded
  to float32 first, as the authors' sparse code does), and each right-hand
  side column is solved by ``conjugate_gradient``: plain CG from zero, at
  most ``iters`` steps, a column stopping once its residual norm is at most
  ``tol * ||b||``. This is not the closed-form solve: truncated CG is not
  linear in b.

The pixel graph is a fixed stencil, so it is stored as one weight plane per
neighbour offset (H x W each, float32) rather than a sparse matrix with
index lists, and the solve runs over chunks of right-hand-side columns
(``chunk``): memory stays (offsets + 4 x chunk x 2) x H x W values, and the
numbers do not depend on the chunk (every operation is per column).
"""
import warnings
from itertools import product
from typing import Callable, Optional, Sequence, Tuple

import torch


# -- kNN ---------------------------------------------------------------------------
def knn_inner_product(x: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest inner products of each row of ``x`` (N, C) with all rows, itself included.

    faiss-cpu's exact search when installed (the authors use faiss's exact GPU
    search, ``knn_gpu``); otherwise ``torch.topk`` over the dense product, ties
    going to the lower index (faiss keeps the first of equal candidates).

    Returns:
        (similarities (N, k) float32, indices (N, k) int64).
    """
    x = x.detach().float().contiguous()
    k = min(int(k), x.shape[0])
    try:
        import faiss  # optional: the exact search of the authors' library
    except ImportError:
        faiss = None
    if faiss is not None and x.device.type == 'cpu':
        arr = x.numpy()
        sims, idx = faiss.knn(arr, arr, k, metric=faiss.METRIC_INNER_PRODUCT)
        return torch.from_numpy(sims), torch.from_numpy(idx).long()
    sims = x @ x.T
    vals, order = torch.sort(sims, dim=1, descending=True, stable=True)
    return vals[:, :k].contiguous(), order[:, :k].contiguous()


# -- patch graph -------------------------------------------------------------------
def patch_positions(origins: torch.Tensor, grid: Tuple[int, int], patch: Tuple[int, int]) -> torch.Tensor:
    """Patch centres (N_win * gh * gw, 2) float32, window-major then row-major.

    ``origins`` (N_win, 2): each window's top-left corner (y, x) in image pixels.
    """
    gh, gw = grid
    ph, pw = patch
    rows = torch.arange(gh, dtype=torch.float32).repeat_interleave(gw) * ph + ph // 2
    cols = torch.arange(gw, dtype=torch.float32).repeat(gh) * pw + pw // 2
    o = origins.float()
    return torch.stack([(o[:, :1] + rows).flatten(), (o[:, 1:] + cols).flatten()], dim=1)


def patch_graph(feats: torch.Tensor, positions: torch.Tensor, k: int, gamma: float, sigma: float,
                power: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LPOSS's symmetric patch affinities ``W + W^T`` without the diagonal, as COO triplets.

    Args:
        feats: normalised VFM features (N, C) of all patches of the image.
        positions: patch centres (N, 2) (``patch_positions``).
        k, gamma, sigma, power: neighbours, similarity exponent, geometry scale and exponent.

    Returns:
        (rows, cols, values float32), coalesced (sorted by row, then column).
    """
    N = feats.shape[0]
    sims, idx = knn_inner_product(feats, k)
    k = idx.shape[1]
    rows = torch.arange(N).repeat_interleave(k)
    cols = idx.flatten()
    # distances only for the kNN pairs (the authors take them from a dense cdist matrix)
    dist = (positions[rows] - positions[cols]).pow(2).sum(dim=1).sqrt()
    geometry = torch.exp(-sigma * dist ** power)
    weights = sims.clamp(min=0).flatten() ** gamma * geometry
    both = torch.sparse_coo_tensor(torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])]),
                                   torch.cat([weights, weights]), (N, N),
                                   check_invariants=False).coalesce()  # W + W^T: sums the pairs
    r, c = both.indices()
    v = both.values()
    off = r != c
    return r[off], c[off], v[off]


def normalized_operator(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int,
                        alpha: float) -> torch.Tensor:
    """``alpha * D^-1/2 W D^-1/2`` as a float64 CSR matrix (values rounded in float32 first, as the authors')."""
    degree = torch.zeros(n, dtype=torch.float32).index_add_(0, rows, values)
    degree[degree == 0] = 1
    dinv = 1.0 / torch.sqrt(degree)
    scaled = (dinv[rows] * values) * dinv[cols]
    scaled = (scaled * alpha).double()
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), scaled, (n, n), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all that is used
        warnings.simplefilter('ignore', UserWarning)
        return coo.to_sparse_csr()


# -- solver ------------------------------------------------------------------------
def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       tol: float = 1e-6) -> torch.Tensor:
    """Column-wise CG for ``L x = b`` from ``x0 = 0``, as ``cupyx.scipy.sparse.linalg.cg`` iterates.

    Each column runs its own CG (own step sizes) for at most ``iters`` steps and
    stops once its residual norm is ``<= tol * ||b||``; a zero column returns zeros.

    Args:
        matvec: ``L @ X`` for a block of columns laid out like ``b``.
        b: right-hand sides, float64, columns on dim 0 (Q, ...).
    """
    b = b.double()
    dims = tuple(range(1, b.dim()))
    shape = (-1,) + (1,) * (b.dim() - 1)
    bnorm = b.pow(2).sum(dim=dims).sqrt()
    atol = tol * bnorm
    active = bnorm != 0
    x = torch.zeros_like(b)
    r = b.clone()
    p = torch.zeros_like(b)
    rho_prev = torch.ones_like(bnorm)
    for it in range(int(iters)):
        if not bool(active.any()):
            break
        rho = (r * r).sum(dim=dims)
        p_new = r.clone() if it == 0 else r + (rho / rho_prev).view(shape) * p
        q = matvec(p_new)
        step = (rho / (p_new * q).sum(dim=dims)).view(shape)
        keep = active.view(shape)
        x = torch.where(keep, x + step * p_new, x)
        r_new = r - step * q
        r = torch.where(keep, r_new, r)
        p = torch.where(keep, p_new, p)
        rho_prev = torch.where(active, rho, rho_prev)
        active = active & ~(r.pow(2).sum(dim=dims).sqrt() <= atol)
    return x


def propagate_patches(y: torch.Tensor, operator: torch.Tensor, iters: int = 10, tol: float = 1e-6) -> torch.Tensor:
    """Solve ``(I - A) Z = Y`` column-wise (``conjugate_gradient``): y (N, Q), A CSR (N, N) -> (N, Q) float64."""
    def matvec(p: torch.Tensor) -> torch.Tensor:  # p: (Q, N)
        return p - (operator @ p.T).T
    return conjugate_gradient(matvec, y.double().T.contiguous(), iters, tol).T


# -- pixel graph -------------------------------------------------------------------
def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (3, H, W) -> CIE Lab (D65) with kornia 0.7's constants, float32."""
    rgb = rgb.float()
    lin = torch.where(rgb > 0.04045, torch.pow((rgb + 0.055) / 1.055, 2.4), rgb / 12.92)
    r, g, b = lin[0], lin[1], lin[2]
    xyz = torch.stack([0.412453 * r + 0.357580 * g + 0.180423 * b,
                       0.212671 * r + 0.715160 * g + 0.072169 * b,
                       0.019334 * r + 0.119193 * g + 0.950227 * b])
    xyz = xyz / torch.tensor([0.95047, 1.0, 1.08883]).view(3, 1, 1)
    f = torch.where(xyz > 0.008856, torch.pow(xyz.clamp(min=0.008856), 1 / 3.0), 7.787 * xyz + 4.0 / 29.0)
    x, y, z = f[0], f[1], f[2]
    return torch.stack([116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)])


def stencil_offsets(neigh: int) -> Sequence[Tuple[int, int]]:
    """Neighbour offsets (dy, dx) of a (2 neigh + 1)^2 window without (0, 0), in the authors' order."""
    return [m for m in product(range(-neigh, neigh + 1), repeat=2) if m != (0, 0)]


def _span(d: int, n: int) -> Tuple[slice, slice]:
    """Rows (or columns) i with i + d inside [0, n), and the matching i + d."""
    return slice(max(0, -d), n - max(0, d)), slice(max(0, d), n + min(0, d))


class PixelGraph:
    """LPOSS+'s pixel graph over an H x W guide image, one normalised weight plane per offset.

    ``planes[o][y, x]`` is ``float32(alpha * W^)`` between pixel (y, x) and
    (y + dy, x + dx) for offset ``o = (dy, dx)`` (0 where the neighbour falls
    outside the image), so ``L x = x - sum_o planes[o] * shift_o(x)``.
    """

    def __init__(self, rgb: torch.Tensor, neigh: int, tau: float, alpha: float):
        lab = rgb_to_lab(rgb) / torch.tensor([100.0, 128.0, 128.0]).view(3, 1, 1)
        _, H, W = lab.shape
        self.size = (H, W)
        self.offsets = stencil_offsets(neigh)
        planes = torch.zeros((len(self.offsets), H, W), dtype=torch.float32)
        for o, (dy, dx) in enumerate(self.offsets):
            (ys, yn), (xs, xn) = _span(dy, H), _span(dx, W)
            diff = lab[:, ys, xs] - lab[:, yn, xn]
            sq = diff[0] * diff[0] + diff[1] * diff[1] + diff[2] * diff[2]
            planes[o, ys, xs] = torch.exp(-torch.sqrt(sq) / tau)
        degree = planes.sum(dim=0)
        degree[degree == 0] = 1
        dinv = 1.0 / torch.sqrt(degree)
        for o, (dy, dx) in enumerate(self.offsets):
            (ys, yn), (xs, xn) = _span(dy, H), _span(dx, W)
            planes[o, ys, xs] = (dinv[ys, xs] * planes[o, ys, xs]) * dinv[yn, xn] * alpha
        self.planes = planes

    def matvec(self, p: torch.Tensor) -> torch.Tensor:
        """``L p`` for p (Qc, H, W) float64."""
        H, W = self.size
        out = p.clone()
        for o, (dy, dx) in enumerate(self.offsets):
            (ys, yn), (xs, xn) = _span(dy, H), _span(dx, W)
            out[:, ys, xs].addcmul_(self.planes[o, ys, xs].double(), p[:, yn, xn], value=-1)  # no product copy
        return out

    def propagate(self, y: torch.Tensor, iters: int = 10, tol: float = 1e-6,
                  chunk: Optional[int] = None) -> torch.Tensor:
        """Solve ``L Z = Y`` column-wise for Y (Q, H, W) -> (Q, H, W) float64, ``chunk`` columns at a time."""
        chunk = y.shape[0] if not chunk else int(chunk)
        return torch.cat([conjugate_gradient(self.matvec, y[s:s + chunk].double(), iters, tol)
                          for s in range(0, y.shape[0], chunk)])
