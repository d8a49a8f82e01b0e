"""SCLIP and NACLIP: dense features against plain computations written from the method card.

The references below run open_clip's own modules (conv1, blocks, ln_post, proj)
and write the last block out by hand (SCLIP's and NACLIP's formulas), independent
of ``DenseCLIPEncoder`` and of the method modules.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from clearclip_seg.methods import build_method, list_methods
from clearclip_seg.methods.naclip import neighbourhood_bias
from clearclip_seg.models.encoder import DenseCLIPEncoder


@pytest.mark.parametrize('grid,std', [((14, 14), 5.0), ((3, 5), 5.0), ((21, 28), 5.0), ((4, 7), 1.5)])
def test_gaussian_bias_closed_form(grid, std):
    gh, gw = grid
    omega = neighbourhood_bias(grid, std)
    n = gh * gw
    assert omega.shape == (n + 1, n + 1) and omega.dtype == torch.float32
    assert torch.count_nonzero(omega[0]) == 0 and torch.count_nonzero(omega[:, 0]) == 0
    expected = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            d2 = (i // gw - j // gw) ** 2 + (i % gw - j % gw) ** 2
            expected[1 + i, 1 + j] = math.exp(-d2 / (2 * std ** 2))
    torch.testing.assert_close(omega.double(), expected, rtol=0, atol=3e-7)
    assert torch.all(omega[1:, 1:].diagonal() == 1)


def _reference_tokens(visual, img):
    """Tokens entering the last block, through open_clip's own modules (native grid: no pos resize)."""
    x = visual.conv1(img)
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    for blk in visual.transformer.resblocks[:-1]:
        x = blk(x)
    return x, (gh, gw)


def _heads(t, heads):
    B, N, C = t.shape
    return t.view(B, N, heads, C // heads).transpose(1, 2)


def _reference_features(visual, img, attention, residual, ffn):
    """Normalised patch features with the last block written out by hand."""
    x, (gh, gw) = _reference_tokens(visual, img)
    blk = visual.transformer.resblocks[-1]
    heads = blk.attn.num_heads
    q, k, v = F.linear(blk.ln_1(x), blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    a = attention(q, k, (gh, gw), q.shape[-1] ** -0.5)
    o = (a @ v).transpose(1, 2).reshape(x.shape)
    y = blk.attn.out_proj(o)
    if residual:
        y = x + y
    if ffn:
        y = y + blk.mlp(blk.ln_2(y))
    f = visual.ln_post(y) @ visual.proj
    f = F.normalize(f[:, 1:], dim=-1)
    return f.reshape(img.shape[0], gh, gw, -1)


def _omega_closed(grid, std):
    gh, gw = grid
    r = torch.arange(gh).repeat_interleave(gw).float()
    c = torch.arange(gw).repeat(gh).float()
    out = torch.zeros(gh * gw + 1, gh * gw + 1)
    out[1:, 1:] = torch.exp(-((r[:, None] - r) ** 2 + (c[:, None] - c) ** 2) / (2 * std ** 2))
    return out


def _soft(x):
    return torch.softmax(x, dim=-1)


REFERENCE_ATTENTION = {
    'csa': lambda q, k, g, s, std: _soft(q @ q.transpose(-1, -2) * s) + _soft(k @ k.transpose(-1, -2) * s),
    'naclip': lambda q, k, g, s, std: _soft(k @ k.transpose(-1, -2) * s + _omega_closed(g, std)),
    'kk': lambda q, k, g, s, std: _soft(k @ k.transpose(-1, -2) * s),
    'vanilla': lambda q, k, g, s, std: _soft(q @ k.transpose(-1, -2) * s),
    # m: mean over heads and token pairs of |q_p| |k_p'| (per window)
    'nonly': lambda q, k, g, s, std: _soft(_omega_closed(g, std) * s * torch.stack([
        (q[b].norm(dim=-1)[:, :, None] * k[b].norm(dim=-1)[:, None, :]).mean() for b in range(q.shape[0])
    ]).view(-1, 1, 1, 1)),
}


@pytest.fixture
def images():
    return torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))


def _features(method, visual, images):
    enc = DenseCLIPEncoder(visual)
    with torch.no_grad():
        return F.normalize(method.features(enc, images), dim=-1)


def test_sclip_is_csa_with_residual_and_ffn(tiny_clip, images):
    visual = tiny_clip[0].visual
    # the tiny tower's native grid is 4 x 4: use it so the reference needs no positional resize
    images = images[..., :64, :64]
    got = _features(build_method(dict(type='SCLIP')), visual, images)
    with torch.no_grad():
        ref = _reference_features(visual, images, lambda q, k, g, s: REFERENCE_ATTENTION['csa'](q, k, g, s, 0),
                                  residual=True, ffn=True)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # rows of CSA sum to 2 (two softmaxes, not renormalised): dropping one changes the features
    with torch.no_grad():
        half = _reference_features(visual, images, lambda q, k, g, s: _soft(q @ q.transpose(-1, -2) * s),
                                   residual=True, ffn=True)
    assert (got - half).abs().max() > 1e-3


@pytest.mark.parametrize('strategy,arch', [('naclip', 'reduced'), ('naclip', 'vanilla'), ('nonly', 'reduced'),
                                           ('kk', 'reduced'), ('vanilla', 'vanilla'), ('csa', 'vanilla')])
def test_naclip_strategies_and_archs(tiny_clip, images, strategy, arch):
    visual = tiny_clip[0].visual
    images = images[..., :64, :64]
    std = 1.5  # small σ: on a 4 x 4 grid the bias must visibly matter
    method = build_method(dict(type='NACLIP', arch=arch, attn_strategy=strategy, gaussian_std=std))
    got = _features(method, visual, images)
    with torch.no_grad():
        ref = _reference_features(visual, images,
                                  lambda q, k, g, s: REFERENCE_ATTENTION[strategy](q, k, g, s, std),
                                  residual=arch == 'vanilla', ffn=arch == 'vanilla')
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_naclip_default_is_reduced_kk_plus_gaussian(tiny_clip, images):
    method = build_method(dict(type='NACLIP'))
    assert method.describe() == dict(type='NACLIP', arch='reduced', attn_strategy='naclip', gaussian_std=5.0)
    visual = tiny_clip[0].visual
    images = images[..., :64, :64]
    got = _features(method, visual, images)
    with torch.no_grad():
        with_bias = _reference_features(visual, images, lambda q, k, g, s: REFERENCE_ATTENTION['naclip'](
            q, k, g, s, 5.0), residual=False, ffn=False)
        without = _reference_features(visual, images, lambda q, k, g, s: REFERENCE_ATTENTION['kk'](q, k, g, s, 0),
                                      residual=False, ffn=False)
    torch.testing.assert_close(got, with_bias, rtol=1e-5, atol=1e-5)
    assert (got - without).abs().max() > 1e-4


def test_methods_on_resized_grid_and_truncated_windows(tiny_clip, images):
    """A 64 x 80 window (grid 4 x 5, positions resized) and a 70 x 90 one truncated to it agree."""
    enc = DenseCLIPEncoder(tiny_clip[0].visual)
    text = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    big = F.pad(images, (0, 10, 0, 6), value=7.0)  # 70 x 90: the extra rows/columns must be ignored
    for cfg in (dict(type='SCLIP'), dict(type='NACLIP'), dict(type='LastBlock')):
        m = build_method(cfg)
        with torch.no_grad():
            a, b = m.patch_logits(enc, images, text), m.patch_logits(enc, big, text)
        assert a.shape == (2, 5, 4, 5)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_registry_and_option_errors():
    assert {'SCLIP', 'NACLIP', 'LastBlock'} <= set(list_methods())
    with pytest.raises(ValueError, match=r"model.method.attn_strategy='csa' needs model.method.arch='vanilla'"):
        build_method(dict(type='NACLIP', attn_strategy='csa'))
    with pytest.raises(ValueError, match=r"model.method.attn_strategy='gav'"):
        build_method(dict(type='NACLIP', attn_strategy='gav'))
    with pytest.raises(ValueError, match=r"model.method.arch='wo_resi'"):
        build_method(dict(type='NACLIP', arch='wo_resi'))
    with pytest.raises(ValueError, match=r'model.method.gaussian_std=0'):
        build_method(dict(type='NACLIP', gaussian_std=0))
    with pytest.raises(ValueError, match=r"unknown keys \['sigma'\] in model.method \(type=NACLIP\)"):
        build_method(dict(type='NACLIP', sigma=5))
    with pytest.raises(ValueError, match=r"model.method.residual='maybe'"):
        build_method(dict(type='SCLIP', residual='maybe'))
