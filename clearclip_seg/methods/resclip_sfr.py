"""ResCLIP's Semantic Feedback Refinement (SFR): from first-pass labels to an attention prior.

Pure tensor functions, one per step of the authors' construction (official
yvhangyang/ResCLIP ``clip/model.py``: ``create_patch_matrix``, ``check_path``,
``generate_attention_sfr``):

1. ``patch_labels``: pixel labels = argmax over *queries* of the first pass's
   probabilities, 0 where the top probability is below ``temp_thd``; each
   p x p patch takes the ``torch.mode`` of its pixels (rows/columns past the
   last whole patch are dropped, as ``unfold`` does).
2. ``entity_paths``: whether the straight path from patch i towards patch j
   stays on i's label (the authors' check, partial-coverage quirk included).
3. ``sfr_affinity``: same-label matrix, distance decay of same-label pairs
   without a valid path, a 1-D Gaussian blur along the raster-flattened key
   index, row normalisation.
4. ``sfr_attention``: zero CLS row and column, divided by its global max,
   rounded to fp16 as the authors' code does.

Where the authors' code departs from the construction it describes (the path
check's partial coverage, the raster-order blur, the global-max scaling, the
fp16 rounding), it is reproduced on purpose because it changes the published
numbers; each is named where it happens.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
# (start patches x all patches) samples handled at once by the path check: bounds
# memory for whole-image grids (a 1120x336 VOC image has 1470 patches).
_CHUNK_ELEMENTS = 1 << 22


def patch_labels(probs: torch.Tensor, patch: Tuple[int, int], temp_thd: float) -> torch.Tensor:
    """Per-patch labels from per-pixel query probabilities.

    Args:
        probs: (B, Q, H, W) first-pass probabilities (softmax over queries).
        patch: (ph, pw) patch size.
        temp_thd: pixels whose top probability is below it get label 0 (query
            0, a real query: "aeroplane" for VOC20, "sky" for VOC21).

    Returns:
        (B, H // ph, W // pw) int64 labels; ties of the mode go to the
        smallest label (``torch.mode`` on the CPU).
    """
    ph, pw = patch
    top = probs.max(dim=1)[0]
    labels = probs.argmax(dim=1)
    labels[top < temp_thd] = 0
    gh, gw = labels.shape[-2] // ph, labels.shape[-1] // pw
    blocks = labels[:, :gh * ph, :gw * pw].unfold(1, ph, ph).unfold(2, pw, pw)
    return torch.mode(blocks.reshape(labels.shape[0], gh, gw, ph * pw), dim=-1)[0]


def _grid_coords(gh: int, gw: int, device) -> torch.Tensor:
    idx = torch.arange(gh * gw, device=device)
    return torch.stack((torch.div(idx, gw, rounding_mode='floor'), idx % gw), dim=-1)


def chebyshev_steps(gh: int, gw: int, device=None) -> torch.Tensor:
    """(T, T) int64 Chebyshev distances between raster-ordered patches of a gh x gw grid."""
    c = _grid_coords(gh, gw, device)
    return (c[:, None, :] - c[None, :, :]).abs().amax(dim=-1)


def _rounded_samples(n: int, t: torch.Tensor) -> torch.Tensor:
    """(n, n, S) int64 table ``round((1 - t_s) * a + t_s * b)`` for coordinates a, b < n.

    The authors interpolate (row, col) pairs with this float32 expression; it
    acts on each coordinate separately, so a table per axis gives the same
    rounded points (half to even) without building them for every pair.
    """
    a = torch.arange(n, device=t.device).view(n, 1, 1)
    b = torch.arange(n, device=t.device).view(1, n, 1)
    return (a * (1 - t) + b * t).round().long()


def entity_paths(labels: torch.Tensor) -> torch.Tensor:
    """The authors' "same entity" path check for every pair of patches.

    For patches i, j with Chebyshev distance c_ij and D = max(gh, gw) - 1,
    samples s = 0..c_ij of ``round((1 - t_s) p_i + t_s p_j)`` with
    ``t = linspace(0, 1, D + 1)`` must carry i's label. The samples are spaced
    by 1/D of the segment but only the first c_ij + 1 are read, so only the
    fraction c_ij / D of the path from p_i is checked (kept
    because it decides which pairs are decayed in the published runs).

    Args:
        labels: (gh, gw) integer patch labels.

    Returns:
        (T, T) bool, T = gh * gw, raster order.
    """
    gh, gw = labels.shape
    T = gh * gw
    device = labels.device
    valid = torch.ones((T, T), dtype=torch.bool, device=device)
    D = max(gh, gw) - 1
    if D == 0:
        return valid
    t = torch.linspace(0, 1, steps=D + 1, device=device)
    rows, cols = _rounded_samples(gh, t), _rounded_samples(gw, t)
    # int16 distances and torch.take: the loop is memory-bound, this halves its traffic
    steps = chebyshev_steps(gh, gw, device).to(torch.int16).view(gh, gw, T)
    flat = labels.reshape(-1)
    own = labels.view(gh, gw, 1)
    # Sample s of every pair at once: its row depends only on (r_i, r_j) and its
    # column only on (c_i, c_j), so the sampled patch indices are an outer sum.
    # Start rows are chunked to bound memory on large whole-image grids.
    per_chunk = max(1, _CHUNK_ELEMENTS // (gw * T))
    out = valid.view(gh, gw, T)
    for r0 in range(0, gh, per_chunk):
        r1 = min(gh, r0 + per_chunk)
        for s in range(1, D + 1):  # sample 0 is p_i itself
            idx = rows[r0:r1, :, s][:, None, :, None] * gw + cols[:, :, s][None, :, None, :]
            same = torch.take(flat, idx).view(r1 - r0, gw, T) == own[r0:r1]
            out[r0:r1] &= same | (steps[r0:r1] < s)
    return valid


def gaussian_kernel_size(num_patches: int, std: float) -> int:
    """The blur's kernel size for T patches (exposed for tests and docs)."""
    size = min(num_patches, int(6 * std + 1))
    return size if size % 2 == 1 else size + 1


def raster_blur(m: torch.Tensor, std: float) -> torch.Tensor:
    """1-D Gaussian blur of each row of ``m`` (T, T) along its (raster-ordered) columns.

    Kernel size ``min(T, int(6 std + 1))``, made odd; weights exp(-t^2 / 2 std^2)
    normalised to sum 1; zero padding. Along the flattened index, so it blends
    the ends of neighbouring grid rows and has no vertical part (as the authors' code).
    """
    size = gaussian_kernel_size(m.shape[-1], std)
    x = torch.arange(size, device=m.device) - size // 2
    kernel = torch.exp(-(x ** 2) / (2 * std ** 2))
    kernel = kernel / kernel.sum()
    return F.conv1d(m.unsqueeze(1), kernel.view(1, 1, -1).to(m.dtype), padding=size // 2).squeeze(1)


def sfr_affinity(labels: torch.Tensor, gaussian_std: float = 5.0,
                 delete_same_entity: bool = True) -> torch.Tensor:
    """SFR's patch-patch matrix S (T, T), float32, before the global-max scaling.

    M_ij = 1[l_i = l_j]; with ``delete_same_entity``, same-label pairs whose
    path check fails are scaled by exp(-c_ij / D); then ``raster_blur``, ReLU
    and S_ij = B_ij / (sum_j B_ij + 1e-8).
    """
    gh, gw = labels.shape
    flat = labels.reshape(-1)
    m = (flat[:, None] == flat[None, :]).float()
    if delete_same_entity and max(gh, gw) > 1:
        steps = chebyshev_steps(gh, gw, labels.device)
        decay = torch.exp(-steps / (max(gh, gw) - 1))
        m = torch.where(entity_paths(labels), m, m * decay)
    b = F.relu(raster_blur(m, gaussian_std))
    return b / (b.sum(dim=1, keepdim=True) + 1e-8)


def sfr_attention(labels: torch.Tensor, gaussian_std: float = 5.0, delete_same_entity: bool = True,
                  fp16_round: bool = True) -> torch.Tensor:
    """Ŝ for one window: (N, N) with N = T + 1, zero CLS row and column, float32.

    S is divided by its *global* max (the rarest label's patches get the
    largest entries, as the authors' code) and, with ``fp16_round``, rounded to
    float16 as the authors' code hard-codes, whatever the activations' dtype.
    """
    T = labels.numel()
    s = sfr_affinity(labels, gaussian_std, delete_same_entity)
    out = s.new_zeros((T + 1, T + 1))
    out[1:, 1:] = s
    out = out / out.max()
    return out.half().float() if fp16_round else out
