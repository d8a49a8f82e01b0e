"""SC-CLIP and GEM against plain computations written here from the method cards.

Every reference below is written independently of ``clearclip_seg.methods``:
numpy / explicit loops for the formulas, open_clip's own blocks for the tower.
"""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clearclip_seg.methods import build_method
from clearclip_seg.methods.gem import GEM, self_self_attention
from clearclip_seg.methods.scclip import (SCCLIP, aggregate, lof_outliers, lof_scores, mean_interpolation,
                                          outlier_grid_mask, prior_attention, top_norm_outliers)
from clearclip_seg.models.encoder import DenseCLIPEncoder, interpolate_pos_embed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY12 = os.path.join(ROOT, 'tests', 'assets', 'tiny12oa.json')
TINY3 = os.path.join(ROOT, 'tests', 'assets', 'clearclip-tiny-vit.json')


def _clip(arch_file, seed=0):
    from clearclip_seg.models.clip_loader import create_clip
    torch.manual_seed(seed)
    model, _ = create_clip(None, arch_file=arch_file)
    return model.double().eval()


@pytest.fixture(scope='module')
def tiny12():
    return _clip(TINY12)


@pytest.fixture(scope='module')
def tiny3():
    return _clip(TINY3)


def _images(n, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g, dtype=torch.float64)


# -- plain references (the card's formulas) ----------------------------------------------
def plain_lof(x, k=30):
    """LOF(p) = mean_{o in kNN(p)} kd(p) / kd(o), squared Euclidean distances."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind='stable')
    neighbours = order[:, 1:k + 1]
    kd = d[np.arange(n), order[:, k]]
    return np.array([np.mean(kd[p] / kd[neighbours[p]]) for p in range(n)])


def plain_outliers(x, k=30, contamination=0.05):
    s = plain_lof(x, k)
    return s > np.quantile(s, 1 - contamination)


def plain_mean_interp(tokens, mask, h, w):
    """tokens (h*w, C) row-major; each outlier -> mean of its non-outlier 8-neighbours on the grid."""
    out = tokens.clone()
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            vals = [tokens[rr * w + cc] for rr in range(r - 1, r + 2) for cc in range(c - 1, c + 2)
                    if (rr, cc) != (r, c) and 0 <= rr < h and 0 <= cc < w and not mask[rr, cc]]
            if vals:
                out[r * w + c] = sum(vals) / len(vals)
    return out


def plain_aggregate(x, sim, beta=0.4):
    a = torch.where(sim >= beta, sim, torch.zeros_like(sim))
    out = torch.zeros_like(x)
    for i in range(len(x)):
        out[i] = (a[i] @ x) / (a[i].sum() + 1e-6)
    return out


def plain_prior(sim, factor=3.0):
    m = factor * (sim - sim.mean())
    e = torch.where(m >= 0, torch.exp(m), torch.zeros_like(m))
    return e / e.sum(dim=1, keepdim=True)


def _heads(t, heads):
    n, c = t.shape
    return t.view(n, heads, c // heads).transpose(0, 1)  # (heads, n, d)


def plain_kk_attn(blk, y, prior):
    """out_proj(1/2 [prior + softmax(k k^T / sqrt d)] v) per head, k and v of ln_1(y); y (N, C)."""
    mha = blk.attn
    h = blk.ln_1(y)
    qkv = h @ mha.in_proj_weight.T + mha.in_proj_bias
    C = y.shape[-1]
    k, v = _heads(qkv[:, C:2 * C], mha.num_heads), _heads(qkv[:, 2 * C:], mha.num_heads)
    outs = []
    for hd in range(mha.num_heads):
        kk = torch.softmax(k[hd] @ k[hd].T / k.shape[-1] ** 0.5, dim=-1)
        outs.append(0.5 * (prior + kk) @ v[hd])
    return mha.out_proj(torch.cat(outs, dim=-1))


def tower_outputs(visual, x):
    """Outputs of every block (open_clip's own embedding and blocks)."""
    z = visual._embeds(x)
    outs = []
    for blk in visual.transformer.resblocks:
        z = blk(z)
        outs.append(z)
    return outs


def plain_scclip(visual, x, pre, post, start, end, res_cls, beta=0.4, k=30, contamination=0.05):
    """Card 1, one window at a time; x at the native grid (square)."""
    outs = tower_outputs(visual, x)
    L = len(outs)
    blocks = visual.transformer.resblocks
    gh = gw = x.shape[-1] // 16
    feats = []
    for b in range(x.shape[0]):
        z = outs[L - 2][b]
        X, cls = z[1:], z[0]
        flags = plain_outliers(X.numpy(), k, contamination)
        mask = np.zeros((gh, gw), bool)
        for p in np.flatnonzero(flags):
            mask[p // gw, p % gw] = True
        X = plain_mean_interp(X, mask, gh, gw)
        Fp = plain_mean_interp(outs[pre][b][1:], mask, gh, gw)
        Fp = Fp / Fp.norm(dim=-1, keepdim=True)
        s_pre = Fp @ Fp.T
        X = plain_aggregate(X, s_pre, beta)
        prior = plain_prior(s_pre)
        out = plain_kk_attn(blocks[-1], X, prior) + res_cls * cls
        G = outs[post][b][1:]
        G = G / G.norm(dim=-1, keepdim=True)
        s_post = G @ G.T
        main = plain_aggregate(out, s_post, beta)
        sigma = sum(outs[i][b] for i in range(start, end))
        fused = plain_aggregate(plain_kk_attn(blocks[-1], sigma[1:], prior) + res_cls * sigma[0], s_post, beta)
        feats.append(visual.ln_post(main + fused) @ visual.proj)
    return torch.stack(feats).view(x.shape[0], gh, gw, -1)


# -- SC-CLIP formulas ---------------------------------------------------------------------
def test_lof_scores_equal_the_card_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 60, 8, generator=g, dtype=torch.float64)
    x[0, 5] *= 6  # a clear anomaly
    got = lof_scores(x, 30)
    for b in range(2):
        np.testing.assert_allclose(got[b].numpy(), plain_lof(x[b].numpy(), 30), rtol=1e-12)
    assert got[0].argmax() == 5 and got[0, 5] > 1.5


@pytest.mark.parametrize('side,expected', [(14, 10), (16, 13), (24, 29)])
def test_outlier_selection_strictly_above_the_095_quantile(side, expected):
    g = torch.Generator().manual_seed(side)
    x = torch.randn(1, side * side, 16, generator=g, dtype=torch.float64)
    got = lof_outliers(x, 30, 0.05)[0].numpy()
    np.testing.assert_array_equal(got, plain_outliers(x[0].numpy()))
    assert got.sum() == expected  # the card's counts for 196 / 256 / 576 tokens


def test_lof_is_not_sklearns_variant():
    # reachability with the query's own k-distance: LRD(p) = k / kd(p) exactly
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 40, 4, generator=g, dtype=torch.float64)
    d = torch.cdist(x[0], x[0]) ** 2
    kd = d.sort(dim=1).values[:, 30]
    knn = d.sort(dim=1).indices[:, 1:31]
    assert torch.allclose(lof_scores(x, 30)[0], (kd[:, None] / kd[knn]).mean(1), rtol=1e-12)


def test_top_norm_outliers_flag_the_largest_norms():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 50, 6, generator=g)
    got = top_norm_outliers(x, 10)
    for b in range(2):
        top = set(torch.argsort(x[b].norm(dim=1), descending=True)[:10].tolist())
        assert set(torch.nonzero(got[b]).flatten().tolist()) == top


def test_outlier_grid_official_mapping_on_non_square_grids():
    h, w = 3, 5
    flags = torch.zeros(1, h * w, dtype=torch.bool)
    flags[0, [1, 4, 7, 14]] = True
    plain = np.zeros((h, w), bool)
    for p in (1, 4, 7, 14):
        r, c = divmod(p, h)  # the authors' (p // rows, p % rows)
        if r < h and c < w:
            plain[r, c] = True
    np.testing.assert_array_equal(outlier_grid_mask(flags, (h, w), 'official')[0].numpy(), plain)
    # 1 -> (0, 1), 4 -> (1, 1), 7 -> (2, 1); 14 -> (4, 2) is off the grid and dropped
    assert plain.sum() == 3 and plain[:, 1].all()
    np.testing.assert_array_equal(outlier_grid_mask(flags, (h, w), 'row_major')[0].view(-1).numpy(),
                                  flags[0].numpy())
    # square grids: both mappings agree
    sq = torch.rand(2, 16) > 0.7
    assert torch.equal(outlier_grid_mask(sq, (4, 4), 'official'), outlier_grid_mask(sq, (4, 4), 'row_major'))


def test_mean_interpolation_excludes_outliers_and_borders():
    g = torch.Generator().manual_seed(5)
    h, w, C = 5, 6, 3
    fmap = torch.randn(2, C, h, w, generator=g, dtype=torch.float64)
    mask = torch.zeros(2, h, w, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 4, 5] = mask[0, 2, 3] = True   # corner, border, adjacent pair
    mask[1, 1:4, 1:4] = True                                              # a 3x3 block: centre has no valid neighbour
    got = mean_interpolation(fmap, mask)
    for b in range(2):
        tokens = fmap[b].reshape(C, -1).T
        want = plain_mean_interp(tokens, mask[b].numpy(), h, w).T.reshape(C, h, w)
        torch.testing.assert_close(got[b], want, rtol=1e-12, atol=1e-12)
    assert torch.equal(got[1, :, 2, 2], fmap[1, :, 2, 2])  # isolated outlier left unchanged
    assert not torch.equal(got[1, :, 1, 1], fmap[1, :, 1, 1])
    assert torch.equal(mean_interpolation(fmap, torch.zeros_like(mask)), fmap)  # nothing flagged


def test_thresholded_aggregation_with_row_normalisation():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 12, 5, generator=g, dtype=torch.float64)
    t = F.normalize(torch.randn(2, 12, 4, generator=g, dtype=torch.float64), dim=-1)
    sim = t @ t.transpose(1, 2)
    got = aggregate(x, sim, 0.4)
    for b in range(2):
        torch.testing.assert_close(got[b], plain_aggregate(x[b], sim[b], 0.4), rtol=1e-12, atol=1e-12)


def test_prior_attention_is_per_window():
    g = torch.Generator().manual_seed(7)
    t = F.normalize(torch.randn(3, 10, 4, generator=g, dtype=torch.float64), dim=-1)
    t[1] += 0.5  # a window with a different mean cosine
    t = F.normalize(t, dim=-1)
    sim = t @ t.transpose(1, 2)
    got = prior_attention(sim, 3.0)
    assert got.shape == (3, 1, 10, 10)
    for b in range(3):
        torch.testing.assert_close(got[b, 0], plain_prior(sim[b]), rtol=1e-12, atol=1e-12)


def test_scclip_features_equal_the_card(tiny12):
    enc = DenseCLIPEncoder(tiny12.visual)
    x = _images(2, 224, 224)
    method = build_method(dict(type='SCCLIP'))
    with torch.no_grad():
        got = method.features(enc, x)
        want = plain_scclip(tiny12.visual, x, 8, 3, 3, 10, 0.3)
    assert got.shape == (2, 14, 14, 64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_scclip_batch_gives_per_window_results(tiny12):
    enc = DenseCLIPEncoder(tiny12.visual)
    x = _images(3, 224, 224, seed=2)
    method = SCCLIP()
    with torch.no_grad():
        batch = method.features(enc, x)
        single = torch.cat([method.features(enc, x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-12, atol=1e-12)


def test_scclip_options_and_layer_defaults(tiny12, tiny3):
    m = SCCLIP()
    assert m.layers(12) == dict(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10,
                                res_cls=0.3)
    assert m.layers(24) == dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19,
                                res_cls=0.1)
    m.bind(DenseCLIPEncoder(tiny12.visual))
    assert m.options()['pre_adjust_idx'] == 8 and m.options()['res_cls'] == 0.3  # records show resolved values
    with pytest.raises(ValueError, match='pre_adjust_idx'):
        SCCLIP().bind(DenseCLIPEncoder(tiny3.visual))  # no defaults for 3 blocks
    with pytest.raises(ValueError, match=r'model.method.pre_adjust_idx=11'):
        SCCLIP(pre_adjust_idx=11).bind(DenseCLIPEncoder(tiny12.visual))
    with pytest.raises(ValueError, match=r'model.method.anomaly'):
        SCCLIP(anomaly='sklearn')
    with pytest.raises(ValueError, match=r'model.method.outlier_grid'):
        SCCLIP(outlier_grid='columns')
    with pytest.raises(ValueError, match=r'model.method.res_cls'):
        SCCLIP(res_cls='0.3')


def test_scclip_runs_on_non_square_and_small_windows(tiny3):
    enc = DenseCLIPEncoder(tiny3.visual)
    m = dict(pre_adjust_idx=1, post_adjust_idx=0, multi_start_idx=0, multi_end_idx=2, res_cls=0.3)
    x = _images(2, 48, 112)  # 3 x 7 grid: fewer tokens than 31 neighbours, not square
    with torch.no_grad():
        off = SCCLIP(**m, outlier_grid='official').features(enc, x)
        rm = SCCLIP(**m, outlier_grid='row_major').features(enc, x)
        top = SCCLIP(**m, anomaly='top_norm', top_norm_k=2).features(enc, x)
    assert off.shape == rm.shape == top.shape == (2, 3, 7, 32)
    assert torch.isfinite(off).all() and torch.isfinite(top).all()
    assert not torch.allclose(off, rm)  # the coordinate quirk changes numbers off square grids


# -- GEM ----------------------------------------------------------------------------------
def plain_ss(y, qkv, heads, temp=None, iters=1):
    """Card 2 SS_l for one window: y (N, C) ln_1 output, qkv (N, 3C); returns concat heads (N, C)."""
    N, C = y.shape
    d = C // heads
    inv_t = y.norm(dim=-1).mean() / d ** 0.5 if temp is None else temp
    outs = []
    for h in range(heads):
        q, k, v = (qkv[:, i * C + h * d: i * C + (h + 1) * d] for i in range(3))
        acc = 0
        for p in (q, k, v):
            for _ in range(iters):
                ph = p / p.norm(dim=-1, keepdim=True)
                p = torch.softmax(inv_t * ph @ ph.T, dim=-1) @ ph
            ph = p / p.norm(dim=-1, keepdim=True)
            acc = acc + torch.softmax(inv_t * ph @ ph.T, dim=-1) @ v
        outs.append(acc / 3)
    return torch.cat(outs, dim=-1)


def plain_gem(visual, x, depth=7, temp=None, iters=1, ignore_residual=False):
    blocks = visual.transformer.resblocks
    L = len(blocks)
    s = L - (depth - 1)
    feats = []
    for b in range(x.shape[0]):
        z = visual._embeds(x[b:b + 1])
        for i in range(s):
            z = blocks[i](z)
        gem = z[0].clone()
        for i in range(s, L):
            blk = blocks[i]
            y = blk.ln_1(z[0])
            qkv = y @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias
            ss = blk.attn.out_proj(plain_ss(y, qkv, blk.attn.num_heads, temp, iters))
            gem = ss if ignore_residual else gem + ss
            z = blk(z)  # the original stream, open_clip's own block
        feats.append((visual.ln_post(gem) @ visual.proj)[1:])
    return torch.stack(feats)


@pytest.mark.parametrize('temp,iters', [(None, 1), (None, 0), (None, 2), (4.0, 1)])
def test_self_self_attention_equals_the_card(temp, iters):
    g = torch.Generator().manual_seed(8)
    B, N, C, H = 2, 9, 12, 3
    y = torch.randn(B, N, C, generator=g, dtype=torch.float64)
    w = torch.randn(3 * C, C, generator=g, dtype=torch.float64) / C ** 0.5
    qkv = y @ w.T
    per_head = qkv.view(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
    got = self_self_attention(y, per_head[0], per_head[1], per_head[2], temp, iters)
    got = got.transpose(1, 2).reshape(B, N, C)
    for b in range(B):
        torch.testing.assert_close(got[b], plain_ss(y[b], qkv[b], H, temp, iters), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('temp,iters', [(None, 1), (None, 0), (None, 2), (4.0, 1)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_in_place_self_self_attention_is_bit_identical_to_the_plain_expression(temp, iters, dtype):
    """The in-place scaling and sums give GEM's expression bit for bit (not only to rounding)."""
    g = torch.Generator().manual_seed(9)
    B, N, H, d = 2, 50, 3, 8
    y = torch.randn(B, N, H * d, generator=g).to(dtype)
    q, k, v = (torch.randn(B, H, N, d, generator=g).to(dtype) for _ in range(3))
    t = y.norm(dim=-1).mean(dim=-1).view(-1, 1, 1, 1) * d ** -0.5 if temp is None else temp

    def weights(p):
        for _ in range(iters):
            p = F.normalize(p, dim=-1)
            p = torch.softmax((p @ p.transpose(-2, -1)) * t, dim=-1) @ p
        p = F.normalize(p, dim=-1)
        return torch.softmax((p @ p.transpose(-2, -1)) * t, dim=-1)

    plain = weights(v) @ v
    plain = plain + weights(k) @ v
    plain = (plain + weights(q) @ v) / 3
    got = self_self_attention(y, q, k, v, temp, iters)
    assert got.dtype == dtype and torch.equal(got, plain)


@pytest.mark.parametrize('ignore', [False, True])
def test_gem_features_equal_the_card(tiny12, ignore):
    enc = DenseCLIPEncoder(tiny12.visual)
    x = _images(2, 224, 224, seed=3)
    with torch.no_grad():
        got = GEM(ignore_residual=ignore).features(enc, x)  # depth 7: blocks 7..12
        want = plain_gem(tiny12.visual, x, 7, ignore_residual=ignore)
    torch.testing.assert_close(got.flatten(1, 2), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('depth', [2, 4])
def test_gem_depth_bounds(tiny3, depth):
    enc = DenseCLIPEncoder(tiny3.visual)  # 3 blocks: depth 2 = last block only, 4 = every block
    x = _images(2, 64, 64, seed=3)
    with torch.no_grad():
        got = GEM(depth=depth).features(enc, x)
        want = plain_gem(tiny3.visual, x, depth)
    torch.testing.assert_close(got.flatten(1, 2), want, rtol=1e-9, atol=1e-9)


def test_gem_temperature_iterations_and_batch(tiny3):
    enc = DenseCLIPEncoder(tiny3.visual)
    x = _images(3, 64, 64, seed=4)
    with torch.no_grad():
        got = GEM(depth=4, ss_attn_temp=2.0, ss_attn_iter=2).features(enc, x)
        want = plain_gem(tiny3.visual, x, 4, temp=2.0, iters=2)
        single = torch.cat([GEM(depth=4, ss_attn_temp=2.0, ss_attn_iter=2).features(enc, x[i:i + 1])
                            for i in range(3)])
    torch.testing.assert_close(got.flatten(1, 2), want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got, single, rtol=1e-12, atol=1e-12)


def test_gem_positional_embedding_is_antialiased(tiny3):
    pe = tiny3.visual.positional_embedding
    got = interpolate_pos_embed(pe, (4, 4), (7, 5), 'antialias')
    grid = pe[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(7, 5), mode='bicubic', antialias=True, align_corners=False)
    torch.testing.assert_close(got[1:], want.permute(0, 2, 3, 1).reshape(35, -1), rtol=0, atol=0)
    assert torch.equal(got[0], pe[0])
    assert not torch.allclose(got, interpolate_pos_embed(pe, (4, 4), (7, 5), 'dino'))
    enc = DenseCLIPEncoder(tiny3.visual)
    x = _images(1, 112, 80)
    with torch.no_grad():
        aa = GEM(depth=4).features(enc, x)
        dino = GEM(depth=4, pos_interp='dino').features(enc, x)
    assert aa.shape == (1, 7, 5, 32) and not torch.allclose(aa, dino)


def test_gem_options():
    assert GEM().options() == dict(depth=7, ss_attn_iter=1, ss_attn_temp=None, ignore_residual=False,
                                   pos_interp='antialias')
    with pytest.raises(ValueError, match=r'model.method.depth=14: expected <= 13'):
        GEM(depth=14).first_block(12)
    with pytest.raises(ValueError, match=r'model.method.depth'):
        GEM(depth=1)
    with pytest.raises(ValueError, match=r'model.method.ignore_residual'):
        GEM(ignore_residual='yes')
    with pytest.raises(ValueError, match=r'model.method.pos_interp'):
        GEM(pos_interp='bilinear')
    assert build_method(dict(type='GEM', depth=5)).depth == 5


# -- shared work and precision ------------------------------------------------------------
def _count_calls(visual):
    """Forward-call counters on every block, its ln_1 and its mlp; returns (counts, handles)."""
    counts, handles = {}, []
    for i, blk in enumerate(visual.transformer.resblocks):
        for name, mod in (('block', blk), ('ln_1', blk.ln_1), ('mlp', blk.mlp)):
            counts[(i, name)] = 0

            def hook(*_, key=(i, name)):
                counts[key] += 1
            handles.append(mod.register_forward_hook(hook))
    return counts, handles


def test_each_frozen_block_runs_once(tiny12):
    visual = tiny12.visual
    enc = DenseCLIPEncoder(visual)
    x = _images(1, 224, 224)
    counts, handles = _count_calls(visual)
    try:
        with torch.no_grad():
            SCCLIP().features(enc, x)
        sc = dict(counts)
        counts.update({k: 0 for k in counts})
        with torch.no_grad():
            GEM().features(enc, x)
        gem = dict(counts)
    finally:
        for h in handles:
            h.remove()
    # SC-CLIP: blocks 1..11 once each; the last block only through its ln_1 (main pass + fusion pass)
    assert all(sc[(i, 'block')] == 1 for i in range(11)) and sc[(11, 'block')] == 0
    assert sc[(11, 'ln_1')] == 2 and sc[(11, 'mlp')] == 0
    # GEM: blocks 1..6 whole; blocks 7..12 share one ln_1 (and one q/k/v) between both paths; no last MLP
    assert all(gem[(i, 'block')] == 1 for i in range(6))
    assert all(gem[(i, 'block')] == 0 and gem[(i, 'ln_1')] == 1 for i in range(6, 12))
    assert all(gem[(i, 'mlp')] == 1 for i in range(6, 11)) and gem[(11, 'mlp')] == 0


@pytest.mark.parametrize('cfg', [dict(type='SCCLIP'), dict(type='GEM')], ids=['SCCLIP', 'GEM'])
def test_half_precision_tracks_fp32(cfg):
    from clearclip_seg.models.clip_loader import create_clip
    x = _images(1, 224, 224, seed=5).float()
    feats = {}
    for precision in ('fp32', 'bf16'):
        torch.manual_seed(0)
        model, _ = create_clip(None, arch_file=TINY12, precision=precision)
        with torch.no_grad():
            feats[precision] = build_method(cfg).features(DenseCLIPEncoder(model.visual), x).float()
    cos = F.cosine_similarity(feats['fp32'], feats['bf16'], dim=-1)
    assert feats['bf16'].isfinite().all() and cos.min() > 0.98, cos.min()


# -- protocol cards, generated configs, end to end ----------------------------------------
# The official configs' values (SC-CLIP's; GEM's = ClearCLIP's harness), typed here, not read from protocol/methods.py.
SCCLIP_B16 = {  # benchmark: (resize short side, logit scale, prob_thd, area_thd); slide 224/112 unpadded
    'voc21': (336, 50.0, 0.15, 0.1), 'context60': (336, 40.0, 0.15, None), 'coco_object': (336, 55.0, 0.35, None),
    'voc20': (336, 40.0, 0.0, None), 'context59': (336, 40.0, 0.0, None), 'coco_stuff164k': (336, 40.0, 0.0, None),
    'cityscapes': (560, 40.0, 0.0, None), 'ade20k': (336, 40.0, 0.0, None)}
SCCLIP_L14 = {**SCCLIP_B16, 'voc21': (336, 40.0, 0.2, 0.1), 'coco_object': (336, 40.0, 0.25, None)}
SCCLIP_VOCAB = {'voc21': 'voc21_bg26', 'voc20': 'voc20_synonyms', 'coco_object': 'coco_object_bg26'}
GEM_PROB = {'voc21': 0.5, 'context60': 0.15, 'coco_object': 0.4}  # ClearCLIP's harness; resize 448, logit 50
GEM_METHOD = dict(type='GEM', depth=7, ss_attn_iter=1, ss_attn_temp=None, ignore_residual=False)


def _config(card, backbone, key):
    from mmengine.config import Config

    from clearclip_seg.protocol.constants import config_path
    return Config.fromfile(os.path.join(ROOT, config_path(card, backbone, key)))


@pytest.mark.parametrize('backbone', ['vit-b16', 'vit-l14'])
def test_generated_configs_follow_the_cards(backbone):
    from clearclip_seg.protocol.benchmarks import BENCHMARKS
    for key, b in BENCHMARKS.items():
        cfg = _config('scclip', backbone, key)
        m, t = cfg.model, cfg.model.test_cfg
        resize, logit, prob, area = (SCCLIP_B16 if backbone == 'vit-b16' else SCCLIP_L14)[key]
        assert m.method.to_dict() == dict(type='SCCLIP') and m.last_block is None
        assert (m.logit_scale, m.prob_thd, m.area_thd, m.postprocess) == (logit, prob, area, None), key
        assert m.vocabulary == SCCLIP_VOCAB.get(key, key)
        assert (t.mode, tuple(t.crop_size), tuple(t.stride), t.patch_fit) == ('slide', (224, 224), (112, 112),
                                                                              'truncate')
        assert tuple(cfg.test_dataloader.dataset.pipeline[1].scale) == (2048, resize)

        cfg = _config('gem', backbone, key)
        m, t = cfg.model, cfg.model.test_cfg
        crop, stride = (224, 224) if key == 'cityscapes' else (448, 224)
        assert m.method.to_dict() == GEM_METHOD and m.vocabulary == key
        assert (m.logit_scale, m.prob_thd, m.area_thd, m.postprocess) == (50.0, GEM_PROB.get(key, 0.0), None, None)
        assert (tuple(t.crop_size), tuple(t.stride), t.patch_fit) == ((crop, crop), (stride, stride), 'pad')
        assert tuple(cfg.test_dataloader.dataset.pipeline[1].scale) == (2048, 448)
        assert cfg.model.clip.arch == {'vit-b16': 'ViT-B-16', 'vit-l14': 'ViT-L-14'}[backbone]


@pytest.mark.parametrize('card,key', [('scclip', 'voc21'), ('gem', 'cityscapes')])
def test_configs_end_to_end_on_the_12_block_tower(tmp_path, card, key):
    """The generated config runs through MMSeg on synthetic data; its mIoU equals an independent count."""
    from clearclip_seg.apis import evaluate
    from clearclip_seg.protocol.benchmarks import BENCHMARKS
    from clearclip_seg.protocol.constants import config_path
    from clearclip_seg.synthetic import write_benchmark
    from helpers import confusion_miou, tiny_cfg_options
    b = BENCHMARKS[key]
    root = tmp_path / 'data'
    ids = write_benchmark(key, str(root), sizes=((230, 260),), seed=3)
    preds = tmp_path / 'preds'
    opts = tiny_cfg_options(root, **{'model.clip.arch_file': TINY12, 'model.clip.arch': 'tiny12oa',
                                     'test_evaluator.output_dir': str(preds), 'model.templates': 'a_photo_of',
                                     'model.text_cache': False})
    rec = evaluate(os.path.join(ROOT, config_path(card, 'vit-b16', key)), opts, work_dir=str(tmp_path / 'w'))
    assert rec['model']['method']['type'] == {'scclip': 'SCCLIP', 'gem': 'GEM'}[card]
    pairs = [(os.path.join(preds, os.path.splitext(os.path.basename(i) + b.img_suffix)[0] + '.png'),
              os.path.join(root, b.ann_dir, i + b.seg_map_suffix)) for i in ids]
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, b.num_classes, b.reduce_zero_label)[0],
                                                   abs=1e-6)
