"""PAMR against a plain per-pixel reference written from the method card (section 4)."""
import numpy as np
import pytest
import torch

from clearclip_seg.models import pamr as pamr_module
from clearclip_seg.models.pamr import pamr, pamr_affinity
from clearclip_seg.models.postprocess import build_postprocessor, list_postprocessors

@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons run on one thread: with several, ATen's vectorised softmax rounds the last few
    elements of each thread's share apart, so even the whole image's affinities shift by an ulp with the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.mark.parametrize('H,W,num_iter,dilations,band_rows,tile_px', [
    (150, 131, 3, (2, 5), 7, 900),      # many bands, square affinity tiles, odd width
    (97, 64, 2, (1, 3), 20, 30000),     # whole-width affinity tiles
    (40, 77, 10, (8, 16), 9, 2000),     # the default dilations: every band's halo covers the image
])
def test_banded_pamr_equals_the_whole_image_bit_for_bit(H, W, num_iter, dilations, band_rows, tile_px, one_thread):
    """Bands of a few rows with a halo of num_iter * max(dilation) rows give the whole image's floats."""
    g = torch.Generator().manual_seed(4)
    img = torch.randn(1, 3, H, W, generator=g)
    img[..., : H // 3, :] += 2.0
    img[..., :, W // 2:] -= 1.0
    Q = 13
    low = torch.randn(Q, 11, 9, generator=g)
    full = torch.nn.functional.interpolate(low[None], size=(H, W), mode='bilinear', align_corners=False)
    whole = pamr(img, full, num_iter, dilations)[0]
    halo, P = num_iter * max(dilations), 8 * len(dilations)
    budget = 4 * W * (2 * halo * (P + 8) + (Q + P + 8) * band_rows)   # band_rows core rows a band
    spans = pamr_module.pamr_spans((H, W), Q, num_iter, dilations, band_bytes=budget)
    assert spans[0] == (0, band_rows) and spans[-1][1] == H and len(spans) == -(-H // band_rows)
    rows = lambda lo, hi, c0, c1: full[0, c0:c1, lo:hi]                   # noqa: E731
    out = torch.cat([pamr_module.pamr_band(img, rows, Q, s, e, num_iter, dilations, tile_bytes=4 * 220 * tile_px,
                                           slice_bytes=4 * W * H) for s, e in spans], dim=1)
    assert torch.equal(out, whole)
    # the affinities of some rows, tile by tile, are the whole image's
    aff = pamr_affinity(img, dilations)
    assert torch.equal(pamr_module.affinity_rows(img, dilations, 5, H - 3, tile_bytes=4 * 220 * tile_px),
                       aff[..., 5:H - 3, :])


@pytest.mark.parametrize('H,W,num_iter,dilations,band_rows', [
    (150, 131, 3, (2, 5), 7),
    pytest.param(40, 77, 10, (8, 16), 9, marks=pytest.mark.slow),  # ~10-20 s: thousands of tiny tiles
])
def test_banded_pamr_with_a_lazily_resized_guidance_equals_the_whole_image(H, W, num_iter, dilations, band_rows,
                                                                           one_thread):
    """The segmentor's guidance made a band's rows at a time (ResizedGuide) gives the floats of the whole image
    refined with the whole guidance, F.interpolate of the same small input."""
    from clearclip_seg.models.classify import ResizedGuide
    g = torch.Generator().manual_seed(8)
    small = torch.randn(3, 23, 19, generator=g)
    small[:, :8] += 2.0
    guide = torch.nn.functional.interpolate(small[None], size=(H, W), mode='bilinear', align_corners=False)
    Q = 13
    low = torch.randn(Q, 11, 9, generator=g)
    full = torch.nn.functional.interpolate(low[None], size=(H, W), mode='bilinear', align_corners=False)
    whole = pamr(guide, full, num_iter, dilations)[0]
    halo, P, D = num_iter * max(dilations), 8 * len(dilations), max(dilations)
    budget = 4 * W * (2 * halo * (P + 8) + (Q + P + 8) * band_rows)
    spans = pamr_module.pamr_spans((H, W), Q, num_iter, dilations, band_bytes=budget)
    lazy, made = ResizedGuide(small, (H, W)), []
    rows_of = lazy.rows
    lazy.rows = lambda lo, hi: made.append((lo, hi)) or rows_of(lo, hi)
    rows = lambda lo, hi, c0, c1: full[0, c0:c1, lo:hi]                   # noqa: E731
    out = torch.cat([pamr_module.pamr_band(lazy, rows, Q, s, e, num_iter, dilations, tile_bytes=4 * 220 * 900,
                                           slice_bytes=4 * W * H) for s, e in spans], dim=1)
    assert torch.equal(out, whole)
    # each band made only its rows, its halo and the affinities' margin
    assert made == [(max(0, s - halo - D), min(H, e + halo + D)) for s, e in spans]
    assert len(spans) > 1


def test_dilations_must_fit_the_image():
    post = build_postprocessor(dict(type='PAMR', num_iter=2, dilations=[8, 3000]))
    img, mask = torch.randn(1, 3, 40, 60), torch.randn(1, 5, 40, 60)
    msg = (r'^model.postprocess.dilations=\(8, 3000\): dilation 3000 does not fit the 40x60 image \(every '
           r'neighbour at that distance lies outside it\); expected dilations below 60$')
    with pytest.raises(ValueError, match=msg):
        post(img, mask)
    with pytest.raises(ValueError, match=msg):
        post.bands(img, lambda *a: None, 5)
    post = build_postprocessor(dict(type='PAMR', num_iter=2, dilations=[59]))   # below the longer side: runs
    assert post(img, mask).shape == (1, 5, 40, 60)


def test_pamr_module_does_not_import_the_postprocessor_registry():
    """pamr.py is the math, postprocess.py wraps it: no import cycle between the two (function-level included)."""
    import ast
    tree = ast.parse(open(pamr_module.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any('postprocess' in (m or '') for m in imported), imported


def test_a_halo_past_the_budget_gives_one_band():
    """Dilations near the image size: every band's halo would cover the image, so one band does the least work."""
    assert pamr_module.pamr_spans((4000, 6000), 21, 10, (3000,)) == [(0, 4000)]
    spans = pamr_module.pamr_spans((4000, 6000), 21, 10, (8, 16))
    assert len(spans) > 1 and spans[-1][1] == 4000
    assert pamr_module.pamr_spans((375, 500), 21, 10, (8, 16)) is None   # fits whole: the plain path
