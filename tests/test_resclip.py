"""ResCLIP (RCS + SFR) against plain computations written here from the official code's construction.

Every reference below is written from the card's formulas with loops or the
block weights directly, not through the module's helpers.
"""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clearclip_seg.methods import build_method
from clearclip_seg.methods.resclip import ResCLIP
from clearclip_seg.methods.resclip_sfr import (entity_paths, patch_labels, raster_blur, sfr_affinity,
                                               sfr_attention)
from clearclip_seg.models.encoder import DenseCLIPEncoder
from clearclip_seg.models.pamr import pamr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY12 = os.path.join(ROOT, 'tests', 'assets', 'tiny12oa.json')

VOC20 = dict(temp_thd=0.1, attn_rcs_weights=[2.0, 0.6], attn_sfr_weights=[2.1, 0.6])


@pytest.fixture(scope='module')
def enc12():
    """A 12-block tiny CLIP tower (RCS reads blocks 5..8), seeded random weights."""
    from clearclip_seg.models.clip_loader import create_clip
    torch.manual_seed(0)
    model, _ = create_clip(None, arch_file=TINY12)
    return DenseCLIPEncoder(model.visual)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _text(q=6, dim=64, seed=3):
    return F.normalize(_randn(q, dim, seed=seed), dim=-1)


def _scene(n, size, seed=0):
    """Images made of 3x4 flat regions plus noise: random weights then give several labels."""
    g = torch.Generator().manual_seed(seed)
    regions = F.interpolate(torch.randn(n, 3, 3, 4, generator=g) * 2, size=size, mode='nearest')
    return regions + 0.3 * torch.randn(n, 3, *size, generator=g)


def _scene_text(enc, x):
    """Queries = features of five patches (corners and one inner patch) of the first image,
    so that SFR's first pass labels differ across the window."""
    with torch.no_grad():
        feats = enc(x[:1, :, :x.shape[-2] // 16 * 16, :x.shape[-1] // 16 * 16])[0]
    gh, gw = feats.shape[:2]
    pick = torch.tensor([0, gw - 1, (gh - 1) * gw, gh * gw - 1, gw + 1])
    return F.normalize(feats.reshape(gh * gw, -1)[pick], dim=-1)


# -- plain SFR, straight from the construction -----------------------------------------
def plain_path_valid(labels, i, j):
    """Samples s = 0..c of round((1 - t_s) p_i + t_s p_j), t = linspace(0, 1, D + 1), in float32."""
    gh, gw = len(labels), len(labels[0])
    D = max(gh, gw) - 1
    t = torch.linspace(0, 1, D + 1).numpy()
    (ri, ci), (rj, cj) = divmod(i, gw), divmod(j, gw)
    c = max(abs(ri - rj), abs(ci - cj))
    for s in range(c + 1):
        one = np.float32(1) - t[s]
        r = int(np.rint(np.float32(ri) * one + np.float32(rj) * t[s]))
        k = int(np.rint(np.float32(ci) * one + np.float32(cj) * t[s]))
        if labels[r][k] != labels[ri][ci]:
            return False
    return True


def plain_sfr(labels, std=5.0, delete=True):
    """(T, T) S: same-label matrix, decay, 1-D blur along raster order, row normalisation (float64)."""
    gh, gw = len(labels), len(labels[0])
    T, D = gh * gw, max(gh, gw) - 1
    flat = [labels[r][c] for r in range(gh) for c in range(gw)]
    m = np.zeros((T, T))
    for i in range(T):
        for j in range(T):
            if flat[i] != flat[j]:
                continue
            m[i, j] = 1.0
            if delete and D > 0 and not plain_path_valid(labels, i, j):
                (ri, ci), (rj, cj) = divmod(i, gw), divmod(j, gw)
                m[i, j] = math.exp(-max(abs(ri - rj), abs(ci - cj)) / D)
    size = min(T, int(6 * std + 1))
    size += 1 - size % 2
    g = np.exp(-np.arange(-(size // 2), size // 2 + 1) ** 2 / (2 * std ** 2))
    g /= g.sum()
    b = np.zeros((T, T))
    for i in range(T):
        for j in range(T):
            b[i, j] = sum(g[o + size // 2] * m[i, j + o] for o in range(-(size // 2), size // 2 + 1)
                          if 0 <= j + o < T)
    return b / (b.sum(axis=1, keepdims=True) + 1e-8)


def plain_s_hat(labels, std=5.0, delete=True):
    s = plain_sfr(labels, std, delete)
    T = s.shape[0]
    out = np.zeros((T + 1, T + 1))
    out[1:, 1:] = s / s.max()
    return torch.from_numpy(out).float().half().float()


def plain_patch_labels(probs, thd, p):
    """probs (Q, H, W) -> per patch the most frequent pixel label (ties: smallest)."""
    q_top, lab = probs.max(0)
    lab = torch.where(q_top < thd, torch.zeros_like(lab), lab)
    gh, gw = probs.shape[1] // p, probs.shape[2] // p
    out = []
    for r in range(gh):
        row = []
        for c in range(gw):
            vals = lab[r * p:(r + 1) * p, c * p:(c + 1) * p].flatten().tolist()
            counts = {v: vals.count(v) for v in set(vals)}
            best = max(counts.values())
            row.append(min(v for v, n in counts.items() if n == best))
        out.append(row)
    return out


LABEL_GRIDS = [
    [[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 2], [0, 0, 0, 1, 2, 0], [3, 3, 0, 0, 0, 0]],
    [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 2, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
    [[0, 1, 0, 1, 0, 1, 0], [2, 2, 2, 2, 2, 2, 2], [0, 0, 1, 1, 0, 0, 1]],
    [[5], [5], [4], [5]],
]


@pytest.mark.parametrize('grid', LABEL_GRIDS)
def test_path_check_equals_plain_loop(grid):
    lab = torch.tensor(grid)
    T = lab.numel()
    expected = torch.tensor([[plain_path_valid(grid, i, j) for j in range(T)] for i in range(T)])
    assert torch.equal(entity_paths(lab), expected)
    assert not expected.all()  # the grids do exercise failing paths


def test_path_check_reads_only_the_first_part_of_long_segments():
    """The path check's partial coverage: on a 1x14 grid with a barrier at column 3, (0 -> 5) passes, (0 -> 13) fails.

    Samples of (0 -> 5) sit at round(5 s / 13), s = 0..5: columns 0 0 1 1 2 2, never 3; those of
    (5 -> 0) at round(5 - 5 s / 13): 5 5 4 4 3 ..., so the check is not even symmetric.
    """
    lab = torch.zeros(1, 14, dtype=torch.long)
    lab[0, 3] = 1
    valid = entity_paths(lab)
    assert valid[0, 5] and valid[0, 4] and not valid[5, 0]
    assert not valid[0, 13] and not valid[13, 0]


@pytest.mark.parametrize('grid', LABEL_GRIDS)
@pytest.mark.parametrize('delete', [True, False])
def test_sfr_affinity_equals_plain(grid, delete):
    lab = torch.tensor(grid)
    got = sfr_affinity(lab, 5.0, delete)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), plain_sfr(grid, 5.0, delete), rtol=1e-5, atol=1e-7)


def test_delete_same_entity_decays_only_blocked_same_label_pairs():
    grid = LABEL_GRIDS[1]  # a ring of 1s around a 0-square with a 2 in the middle
    lab = torch.tensor(grid)
    # sigma 0.1: the blur kernel has size 1, so the decay is seen before any blending
    kept = sfr_affinity(lab, 0.1, delete_same_entity=False)
    cut = sfr_affinity(lab, 0.1, delete_same_entity=True)
    np.testing.assert_allclose(cut.numpy(), plain_sfr(grid, 0.1, True), rtol=1e-5, atol=1e-7)
    # the ring pair (0,0) -> (4,4) crosses the 0s and the 2: decayed by exp(-4/4) before the row norm
    i, j = 0, 24
    ratio = (cut[i, j] / cut[i, 1]) / (kept[i, j] / kept[i, 1])
    assert ratio.item() == pytest.approx(math.exp(-1.0), rel=1e-5)


def test_raster_blur_wraps_across_grid_rows():
    """The blur runs along the flattened key index, not in 2-D."""
    gh, gw, std = 3, 4, 1.0
    m = torch.zeros(1, gh * gw)
    m[0, gw - 1] = 1.0  # last patch of grid row 0
    out = raster_blur(m, std)
    g = np.exp(-np.arange(-3, 4) ** 2 / 2.0)
    g /= g.sum()
    assert out[0, gw].item() == pytest.approx(g[4], rel=1e-6)      # first patch of grid row 1
    assert out[0, gw - 1 + gw].item() == 0.0                        # no vertical neighbour


def test_sfr_attention_is_globally_scaled_fp16_with_zero_cls():
    grid = LABEL_GRIDS[0]
    lab = torch.tensor(grid)
    got = sfr_attention(lab, 5.0, True)
    # equal up to one fp16 step (float32 sums may round to either side of an fp16 boundary)
    torch.testing.assert_close(got, plain_s_hat(grid), rtol=2 ** -10, atol=0)
    assert got.max().item() == 1.0
    assert (got[0] == 0).all() and (got[:, 0] == 0).all()
    assert torch.equal(got, got.half().float())
    exact = sfr_attention(lab, 5.0, True, fp16_round=False)
    assert torch.equal(got, exact.half().float())


def test_patch_labels_threshold_mode_and_ties():
    p = 2
    probs = torch.zeros(4, 4, 6)
    lab = torch.tensor([[1, 1, 2, 2, 3, 3],
                        [3, 1, 2, 1, 3, 0],
                        [2, 2, 1, 1, 0, 0],
                        [3, 3, 1, 1, 0, 2]])
    probs.scatter_(0, lab[None], 0.9)
    probs[:, 0, 0] = torch.tensor([0.05, 0.05, 0.05, 0.04])  # below temp_thd: label 0 (query 0)
    got = patch_labels(probs[None], (p, p), temp_thd=0.1)[0]
    expected = plain_patch_labels(probs, 0.1, p)
    assert got.tolist() == expected
    # the first patch now holds {0, 1, 3, 1}: 1; the second {2, 2, 2, 1}: 2; the third {3, 3, 3, 0}: 3;
    # the fourth {2, 2, 3, 3}: a tie, the smallest wins
    assert expected[0] == [1, 2, 3]
    assert expected[1][0] == 2


# -- the method against a plain forward -----------------------------------------------
def _heads(t, n_heads):
    B, N, C = t.shape
    return t.view(B, N, n_heads, C // n_heads).transpose(1, 2)


def plain_resclip(enc, x, text, rcs_w, sfr_w, temp_thd, std=5.0, layers=(5, 6, 7, 8),
                  use_rcs=True, use_sfr=True, delete=True):
    """Card 3.1-3.3 written out from the weights for one window x (1, 3, H, W): frozen
    blocks, RCS, pass 1, PAMR on the whole window, labels, Ŝ, pass 2."""
    blocks = enc.visual.transformer.resblocks
    p = 16
    gh, gw = x.shape[-2] // p, x.shape[-1] // p
    tok, _ = enc.embed(x[..., :gh * p, :gw * p])
    maps = []
    for n, blk in enumerate(blocks[:-1]):
        q, k, v = (_heads(t, blk.attn.num_heads) for t in
                   F.linear(blk.ln_1(tok), blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, -1))
        a = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        tok = tok + blk.attn.out_proj((a @ v).transpose(1, 2).flatten(2))
        tok = tok + blk.mlp(blk.ln_2(tok))
        if n in layers:
            maps.append(a)
    a_rcs = sum(maps) / len(maps)
    last = blocks[-1]
    q, k, v = (_heads(t, last.attn.num_heads) for t in
               F.linear(last.ln_1(tok), last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, -1))
    z = k @ k.transpose(-1, -2) * k.shape[-1] ** -0.5
    rr, cc = np.divmod(np.arange(gh * gw), gw)
    omega = np.zeros((gh * gw + 1,) * 2)
    omega[1:, 1:] = np.exp(-((rr[:, None] - rr[None]) ** 2 + (cc[:, None] - cc[None]) ** 2) / (2 * std ** 2))
    omega = torch.from_numpy(omega).float()

    def logits(attn):
        y = enc.visual.ln_post(last.attn.out_proj((attn @ v).transpose(1, 2).flatten(2))) @ enc.visual.proj
        f = F.normalize(y[:, 1:], dim=-1)
        return (f @ text.t()).transpose(1, 2).reshape(x.shape[0], -1, gh, gw)

    def mix(a):
        return rcs_w[0] * ((1 - rcs_w[1]) * a + rcs_w[1] * a_rcs) if use_rcs else a

    first = logits(mix(torch.softmax(z + omega, dim=-1)))
    if not use_sfr:
        return first
    up = F.interpolate(first, size=x.shape[-2:], mode='bilinear', align_corners=False)
    probs = torch.softmax(40 * pamr(x, up, 10, (8, 16)), dim=1)[0]
    s_hat = plain_s_hat(plain_patch_labels(probs, temp_thd, p), std, delete)
    z2 = sfr_w[0] * ((1 - sfr_w[1]) * z + sfr_w[1] * s_hat) + omega
    return logits(mix(torch.softmax(z2, dim=-1)))


@pytest.mark.parametrize('size', [(64, 80), (70, 90)])
def test_rcs_only_equals_plain(enc12, size):
    x, text = _randn(1, 3, *size, seed=1), _text()
    method = ResCLIP(**VOC20, use_sfr=False)
    with torch.no_grad():
        got = method.patch_logits(enc12, x, text)
        want = plain_resclip(enc12, x, text, VOC20['attn_rcs_weights'], None, None, use_sfr=False)
    assert got.shape == (1, 6, size[0] // 16, size[1] // 16)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('size, temp_thd', [((64, 80), 0.1), ((70, 90), 0.1), ((70, 90), 0.35)])
def test_rcs_and_sfr_equal_plain(enc12, size, temp_thd, monkeypatch):
    """The whole window (70x90, not a patch multiple) guides SFR's pass 1; the tower sees 64x80."""
    import clearclip_seg.methods.resclip as module
    x = _scene(1, size, seed=2)
    text = _scene_text(enc12, x)
    opts = dict(VOC20, temp_thd=temp_thd)
    seen = []

    def spy(probs, patch, thd):
        seen.append((probs.max(dim=1)[0], patch_labels(probs, patch, thd)))
        return seen[-1][1]
    monkeypatch.setattr(module, 'patch_labels', spy)
    with torch.no_grad():
        first = ResCLIP(**opts, use_sfr=False).patch_logits(enc12, x, text)
        got = ResCLIP(**opts).patch_logits(enc12, x, text)
        want = plain_resclip(enc12, x, text, opts['attn_rcs_weights'], opts['attn_sfr_weights'], temp_thd)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (got - first).abs().max() > 1e-3  # SFR changed the logits
    # the case is not degenerate: several labels, and same-label pairs whose path is blocked
    top, labels = seen[0][0][0], seen[0][1][0]
    flat = labels.flatten()
    assert len(set(flat.tolist())) >= 3
    assert ((flat[:, None] == flat[None, :]) & ~entity_paths(labels)).any()
    below = (top < temp_thd).float().mean()
    assert (below > 0.05) if temp_thd > 0.3 else (below == 0)  # the threshold acts in the 0.35 case


def test_feedback_is_fp16_rounded_and_globally_scaled(enc12):
    """Ŝ enters the last block rounded to fp16 (hard-coded officially), max 1, zero CLS row/column."""
    x = _scene(2, (64, 64), seed=6)
    logits = _randn(2, 5, 4, 4, seed=7) * 0.2
    s_hat = ResCLIP(**VOC20).feedback(enc12, x, logits, torch.float32)
    assert s_hat.shape == (2, 1, 17, 17)
    assert torch.equal(s_hat, s_hat.half().float())
    assert (s_hat.amax(dim=(1, 2, 3)) == 1).all()
    assert (s_hat[:, :, 0] == 0).all() and (s_hat[:, :, :, 0] == 0).all()
    exact = ResCLIP(**VOC20, sfr_fp16=False).feedback(enc12, x, logits, torch.float32)
    assert not torch.equal(exact, s_hat) and torch.equal(exact.half().float(), s_hat)


def test_windows_of_a_batch_are_independent(enc12):
    x = _scene(2, (64, 64), seed=4)
    text = _scene_text(enc12, x)
    method = ResCLIP(**VOC20)
    with torch.no_grad():
        both = method.patch_logits(enc12, x, text)
        alone = torch.cat([method.patch_logits(enc12, x[i:i + 1], text) for i in range(2)])
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-5)


def test_no_block_runs_twice(enc12):
    """The frozen blocks and the last block's projections serve both passes."""
    blocks = enc12.visual.transformer.resblocks
    calls = {}

    def counter(name):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
        return hook
    handles = [m.register_forward_hook(counter(f'{i}.{part}'))
               for i, blk in enumerate(blocks) for part, m in (('ln_1', blk.ln_1), ('mlp', blk.mlp))]
    try:
        with torch.no_grad():
            ResCLIP(**VOC20).patch_logits(enc12, _randn(1, 3, 64, 64), _text())
    finally:
        for h in handles:
            h.remove()
    L = len(blocks)
    assert all(calls[f'{i}.ln_1'] == 1 and calls[f'{i}.mlp'] == 1 for i in range(L - 1)), calls
    assert calls[f'{L - 1}.ln_1'] == 1 and f'{L - 1}.mlp' not in calls, calls


# -- switches off: the plain last blocks of the other registered methods ---------------
@pytest.mark.parametrize('resclip_opts, other', [
    (dict(attn_strategy='resclip'), dict(type='NACLIP')),
    (dict(attn_strategy='naclip'), dict(type='NACLIP')),
    (dict(attn_strategy='clearclip'), dict(type='LastBlock', attn='qq')),
    (dict(attn_strategy='sclip', arch='w_resi'), dict(type='SCLIP')),
    (dict(attn_strategy='vanilla', arch='w_resi'), dict(type='LastBlock', attn='qk', residual=True, ffn=True)),
])
def test_without_rcs_and_sfr_each_strategy_is_its_base_method(enc12, resclip_opts, other):
    x, text = _randn(1, 3, 64, 80, seed=5), _text()
    plain = ResCLIP(use_rcs=False, use_sfr=False, **resclip_opts)
    with torch.no_grad():
        got = plain.patch_logits(enc12, x, text)
        want = build_method(other).patch_logits(enc12, x, text)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_registered_and_options():
    m = build_method(dict(type='ResCLIP', **VOC20))
    assert isinstance(m, ResCLIP)
    opts = m.describe()
    assert opts['type'] == 'ResCLIP' and opts['delete_same_entity'] is True
    assert opts['rcs_layers'] == [5, 6, 7, 8] and opts['attn_rcs_weights'] == [2.0, 0.6]


@pytest.mark.parametrize('opts, key', [
    (dict(attn_rcs_weights=[2.0, 0.6], attn_sfr_weights=[2.1, 0.6]), 'model.method.temp_thd'),
    (dict(temp_thd=0.1, attn_sfr_weights=[2.1, 0.6]), 'model.method.attn_rcs_weights'),
    (dict(VOC20, attn_sfr_weights=[2.1]), 'model.method.attn_sfr_weights'),
    (dict(VOC20, attn_rcs_weights=[2.0, 1.5]), 'model.method.attn_rcs_weights[1]'),
    (dict(VOC20, temp_thd=1.5), 'model.method.temp_thd'),
    (dict(VOC20, attn_strategy='sclip'), "model.method.arch='w_resi'"),
    (dict(VOC20, arch='reduced'), 'model.method.arch'),
    (dict(VOC20, use_rcs='no'), 'model.method.use_rcs'),
    (dict(VOC20, rcs_layers=[]), 'model.method.rcs_layers'),
])
def test_bad_options_are_one_line_errors(opts, key):
    with pytest.raises(ValueError) as e:
        ResCLIP(**opts)
    assert key in str(e.value) and '\n' not in str(e.value)


def test_rcs_layers_must_exist_in_the_tower(tiny_clip):
    enc = DenseCLIPEncoder(tiny_clip[0].visual)  # 3 blocks
    with pytest.raises(ValueError, match='model.method.rcs_layers'):
        ResCLIP(**VOC20).patch_logits(enc, _randn(1, 3, 64, 64), _text(dim=32))
    out = ResCLIP(**VOC20, rcs_layers=[0, 1]).patch_logits(enc, _randn(1, 3, 64, 64), _text(dim=32))
    assert out.shape == (1, 6, 4, 4) and torch.isfinite(out).all()


# -- protocol card, generated configs, end to end -------------------------------------
# The official configs' values, typed here: benchmark -> (resize, mode, prob_thd, temp_thd, RCS, SFR)
CARD_35 = {
    'voc21': (336, 'whole', 0.1, 0.50, (2.0, 0.3), (2.2, 0.7)),
    'context60': (336, 'slide', 0.1, 0.30, (2.0, 0.3), (1.8, 0.7)),
    'coco_object': (336, 'slide', 0.1, 0.11, (2.0, 0.4), (1.8, 0.7)),
    'voc20': (336, 'whole', 0.0, 0.10, (2.0, 0.6), (2.1, 0.6)),
    'context59': (336, 'slide', 0.0, 0.25, (2.0, 0.4), (1.8, 0.7)),
    'coco_stuff164k': (336, 'slide', 0.0, 0.11, (2.0, 0.4), (1.8, 0.7)),
    'cityscapes': (560, 'slide', 0.0, 0.10, (2.0, 0.2), (2.1, 0.6)),
    'ade20k': (336, 'slide', 0.0, 0.25, (2.0, 0.3), (2.1, 0.7)),
}
FAMILY_VOCAB = {'voc21': 'voc21_bg26', 'voc20': 'voc20_synonyms', 'coco_object': 'coco_object_bg26'}


@pytest.mark.parametrize('backbone', ['vit-b16', 'vit-l14'])
def test_generated_configs_are_card_35(backbone):
    from mmengine.config import Config

    from clearclip_seg.protocol.constants import config_path
    for key, (resize, mode, prob, thd, rcs, sfr) in CARD_35.items():
        path = os.path.join(ROOT, config_path('resclip', backbone, key))
        cfg = Config.fromfile(path)
        m = cfg.model
        method = m.method.to_dict()
        assert method == dict(type='ResCLIP', arch='wo_resi', attn_strategy='resclip', gaussian_std=5.0,
                              delete_same_entity=True, temp_thd=thd, attn_rcs_weights=rcs,
                              attn_sfr_weights=sfr), path
        assert m.last_block is None and m.postprocess is None and m.area_thd is None, path  # final PAMR off
        assert (m.logit_scale, m.prob_thd, m.vocabulary) == (40.0, prob, FAMILY_VOCAB.get(key, key)), path
        t = m.test_cfg
        assert (t.mode, tuple(t.crop_size), tuple(t.stride), t.patch_fit) == (mode, (224, 224), (112, 112),
                                                                              'truncate'), path
        assert [tuple(s.scale) for s in cfg.test_dataloader.dataset.pipeline if s.type == 'Resize'] == \
            [(2048, resize)], path
        build_method(method)  # the options are valid


@pytest.mark.parametrize('key', ['voc20', 'cityscapes'])
def test_config_end_to_end_on_synthetic_data(tmp_path, key):
    """The generated config (whole-image VOC20, slide Cityscapes) through MMSeg on the 12-block tiny CLIP."""
    from clearclip_seg.apis import evaluate
    from clearclip_seg.protocol.constants import config_path
    from clearclip_seg.synthetic import write_benchmark
    root = tmp_path / 'data'
    ids = write_benchmark(key, str(root), sizes=((120, 90),), seed=3)
    opts = {'model.clip.arch_file': TINY12, 'model.clip.arch': 'tiny12oa', 'model.clip.pretrained': None,
            'test_dataloader.num_workers': 0, 'test_dataloader.persistent_workers': False,
            'test_dataloader.dataset.data_root': str(root), 'model.templates': 'a_photo_of',
            'model.text_cache': False,
            # short side 224 instead of the card's 336 (checked above): 298x224, two slide windows
            'test_dataloader.dataset.pipeline.1.scale': (2048, 224)}
    rec = evaluate(os.path.join(ROOT, config_path('resclip', 'vit-b16', key)), opts, work_dir=str(tmp_path / 'w'))
    assert rec['model']['method']['type'] == 'ResCLIP'
    assert rec['model']['method']['temp_thd'] == CARD_35[key][3]
    assert rec['dataset']['num_images'] == len(ids)
    assert 0.0 <= rec['metrics']['mIoU'] <= 100.0
