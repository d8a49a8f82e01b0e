"""PAMR against a plain per-pixel reference written from the method card (section 4)."""
import numpy as np
import pytest
import torch

from clearclip_seg.models import pamr as pamr_module
from clearclip_seg.models.pamr import pamr, pamr_affinity
from clearclip_seg.models.postprocess import build_postprocessor, list_postprocessors

OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _resize_align_corners(m, H, W):
    """Bilinear, align_corners=True, by its formula: src = dst * (n_in - 1) / (n_out - 1)."""
    C, h, w = m.shape
    out = np.zeros((C, H, W))
    for i in range(H):
        y = i * (h - 1) / (H - 1) if H > 1 else 0.0
        y0 = min(int(np.floor(y)), h - 1)
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(W):
            x = j * (w - 1) / (W - 1) if W > 1 else 0.0
            x0 = min(int(np.floor(x)), w - 1)
            x1, fx = min(x0 + 1, w - 1), x - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * m[:, y0, x0] + fx * m[:, y0, x1])
                            + fy * ((1 - fx) * m[:, y1, x0] + fx * m[:, y1, x1]))
    return out


def _reference_pamr(img, mask, num_iter, dilations):
    """One image: img (K, H, W), mask (C, h, w) as float64 numpy; loops over pixels."""
    K, H, W = img.shape
    mask = _resize_align_corners(mask, H, W)
    at = lambda a, i, j: a[:, min(max(i, 0), H - 1), min(max(j, 0), W - 1)]  # replicate border
    nbrs = [(d * dy, d * dx) for d in dilations for dy, dx in OFFSETS]
    weights = np.zeros((H, W, len(nbrs)))
    for i in range(H):
        for j in range(W):
            samples = np.stack([at(img, i + d * dy, j + d * dx) for d in dilations
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1)])      # (18, K)
            sigma = np.sqrt(((samples - samples.mean(0)) ** 2).sum(0) / (len(samples) - 1))
            a = np.array([np.mean(-np.abs(img[:, i, j] - at(img, i + oy, j + ox)) / (1e-8 + 0.1 * sigma))
                          for oy, ox in nbrs])
            e = np.exp(a - a.max())
            weights[i, j] = e / e.sum()
    for _ in range(num_iter):
        new = np.zeros_like(mask)
        for i in range(H):
            for j in range(W):
                new[:, i, j] = sum(weights[i, j, n] * at(mask, i + oy, j + ox) for n, (oy, ox) in enumerate(nbrs))
        mask = new
    return mask


@pytest.mark.parametrize('dilations,num_iter,low_res', [((1, 2), 3, False), ((8, 16), 10, False),
                                                        ((2, 3), 2, True)])
def test_pamr_equals_plain_loop(dilations, num_iter, low_res):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, 19, 23, generator=g)
    img[0, :, :8] += 3.0  # an edge: affinities must not be uniform
    mask = torch.randn(2, 4, *((7, 9) if low_res else (19, 23)), generator=g)
    out = pamr(img.double(), mask.double(), num_iter, dilations)   # float64: the formula, exactly
    out32 = pamr(img, mask, num_iter, dilations)                   # the working precision
    assert out.shape == out32.shape == (2, 4, 19, 23) and out32.dtype == torch.float32
    for b in range(2):
        ref = _reference_pamr(img[b].double().numpy(), mask[b].double().numpy(), num_iter, dilations)
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-6, rtol=0)
        np.testing.assert_allclose(out32[b].numpy(), ref, atol=1e-5, rtol=0)


def test_pamr_affinity_is_a_softmax_over_16_neighbours_and_channels_are_chunked(monkeypatch):
    g = torch.Generator().manual_seed(1)
    img, mask = torch.randn(1, 3, 12, 10, generator=g), torch.randn(1, 5, 12, 10, generator=g)
    aff = pamr_affinity(img, (8, 16))
    assert aff.shape == (1, 1, 16, 12, 10)
    torch.testing.assert_close(aff.sum(2), torch.ones(1, 1, 12, 10))
    whole = pamr(img, mask, 4, (8, 16))
    monkeypatch.setattr(pamr_module, '_CHUNK_BYTES', 4 * 12 * 10 * 2)  # 2 channels a time
    assert torch.equal(pamr(img, mask, 4, (8, 16)), whole)
    # a constant mask stays constant (weights are a convex combination)
    torch.testing.assert_close(pamr(img, torch.full((1, 2, 12, 10), 0.3), 5, (1, 2)),
                               torch.full((1, 2, 12, 10), 0.3))


def test_registered_postprocessor_and_strict_options():
    assert 'PAMR' in list_postprocessors()
    post = build_postprocessor(dict(type='PAMR'))
    assert (post.num_iter, post.dilations) == (10, (8, 16))
    assert post.describe() == dict(type='PAMR', num_iter=10, dilations=(8, 16))
    assert build_postprocessor(None) is None and build_postprocessor({}) is None
    g = torch.Generator().manual_seed(2)
    img, mask = torch.randn(1, 3, 9, 9, generator=g), torch.randn(1, 2, 9, 9, generator=g)
    post = build_postprocessor(dict(type='PAMR', num_iter=3, dilations=[1, 2]))
    assert torch.equal(post(img, mask), pamr(img, mask, 3, (1, 2)))
    with pytest.raises(ValueError, match=r"unknown keys \['iters'\] in model.postprocess"):
        build_postprocessor(dict(type='PAMR', iters=3))
    with pytest.raises(ValueError, match=r"unknown post-processor 'CRF' \(model.postprocess.type\)"):
        build_postprocessor(dict(type='CRF'))
    with pytest.raises(ValueError, match=r'model.postprocess.num_iter=0'):
        build_postprocessor(dict(type='PAMR', num_iter=0))
    with pytest.raises(ValueError, match=r'model.postprocess.dilations'):
        build_postprocessor(dict(type='PAMR', dilations=(8, -1)))


def test_propagation_equals_the_stacked_neighbour_sum_bit_for_bit():
    """The reference code stacks the 16 shifted copies and sums over them: same floats as ours."""
    g = torch.Generator().manual_seed(3)
    img, mask = torch.randn(1, 3, 40, 56, generator=g), torch.randn(1, 6, 40, 56, generator=g)
    aff = pamr_affinity(img, (8, 16))
    ref = mask
    for _ in range(4):
        copies = []
        for d in (8, 16):
            p = torch.nn.functional.pad(ref, [d] * 4, mode='replicate')
            copies += [p[..., d + dy * d:d + dy * d + 40, d + dx * d:d + dx * d + 56] for dy, dx in OFFSETS]
        ref = (torch.stack(copies, dim=2) * aff).sum(dim=2)
    assert torch.equal(pamr(img, mask, 4, (8, 16)), ref)
