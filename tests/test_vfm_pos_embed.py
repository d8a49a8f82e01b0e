"""The proxy model's positional-embedding resize rules (``models/vfm_pos_embed.py``) against plain
numpy reimplementations of each rule's formula, on tiny random timm ViTs in DINO's and DINOv2's layouts."""
import math

import numpy as np
import pytest
import torch

# tiny random ViTs: DINO's layout (class token with a position, patch 8, 4 x 4 grid) and DINOv2's with
# registers (timm's no_embed_class layout: only patches have positions; patch 14, 4 x 4 grid)
DINO = dict(name='vit_small_patch8_224.dino', img_size=32, patch=8)
DINOV2 = dict(name='vit_small_patch14_reg4_dinov2', img_size=56, patch=14)


def _vit(spec, **kw):
    import timm
    torch.manual_seed(0)
    model = timm.create_model(spec['name'], pretrained=False, img_size=kw.pop('img_size', spec['img_size']),
                              embed_dim=16, depth=1, num_heads=2, dynamic_img_size=True, **kw)
    model.eval().requires_grad_(False)
    with torch.no_grad():  # timm starts some layouts' position embeddings near zero: make them count
        model.pos_embed.normal_()
    return model


def _cubic(x, a):
    """Keys' cubic convolution kernel with parameter a."""
    x = abs(x)
    if x <= 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def plain_bicubic(n_in, n_out, scale):
    """(n_out, n_in) weights: bicubic (a = -0.75), source (i + 0.5) / scale - 0.5, edge indices clamped."""
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) / scale - 0.5
        x0 = math.floor(src)
        for j in range(x0 - 1, x0 + 3):
            w[i, min(max(j, 0), n_in - 1)] += _cubic(src - j, -0.75)
    return w


def antialiased_bicubic(n_in, n_out):
    """(n_out, n_in) weights: the antialiased bicubic filter (a = -0.5), widened by the downscale, normalised."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo, hi = max(int(center - 2 * stretch + 0.5), 0), min(int(center + 2 * stretch + 0.5), n_in)
        row = np.array([_cubic((j - center + 0.5) / stretch, -0.5) for j in range(lo, hi)])
        w[i, lo:hi] = row / row.sum()
    return w


def reference_pos(pos, m, grid, rule):
    """The rule's resized patch positions (gh*gw, C) from the (m*m, C) ones, written from its formula."""
    gh, gw = grid
    if (gh, gw) == (m, m):      # the training grid: as it is (all rules)
        return pos
    if rule == 'dino_hub':      # scale factor (g + 0.1) / M, plain bicubic
        wh, ww = plain_bicubic(m, gh, (gh + 0.1) / m), plain_bicubic(m, gw, (gw + 0.1) / m)
    elif rule == 'mae':         # to the size, plain bicubic
        wh, ww = plain_bicubic(m, gh, gh / m), plain_bicubic(m, gw, gw / m)
    else:                       # dinov2_hub, timm: to the size, antialiased
        wh, ww = antialiased_bicubic(m, gh), antialiased_bicubic(m, gw)
    g = pos.reshape(m, m, -1)
    return np.einsum('ai,ijc,bj->abc', wh, g, ww).reshape(gh * gw, -1)


@pytest.mark.parametrize('rule', ['dino_hub', 'dinov2_hub', 'mae', 'timm'])
@pytest.mark.parametrize('spec', [DINO, DINOV2], ids=['dino', 'dinov2'])
def test_tokens_get_the_rules_positions(spec, rule):
    """Tokens after the position step = prefix tokens and patches + the rule's positions, for up- and
    downscaled and non-square windows, one with the training grid's token count (2 x 8 for 4 x 4)."""
    from clearclip_seg.models.vfm_pos_embed import use_pos_embed_rule
    model = use_pos_embed_rule(_vit(spec), rule)
    p, m = spec['patch'], spec['img_size'] // spec['patch']
    pos = model.pos_embed[0].double().numpy()
    prefix = 0 if model.no_embed_class else 1
    for h, w in [(6 * p, 5 * p), (3 * p, 2 * p), (4 * p, 4 * p), (2 * p, 8 * p), (7 * p, 3 * p)]:
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            patches = model.patch_embed(x)
            out = model._pos_embed(patches)[0].double().numpy()
        grid = (h // p, w // p)
        expected_pos = reference_pos(pos[prefix:], m, grid, rule)
        patches = patches[0].reshape(-1, patches.shape[-1]).double().numpy()
        np.testing.assert_allclose(out[-grid[0] * grid[1]:], patches + expected_pos, rtol=1e-5, atol=1e-5,
                                   err_msg=f'{rule} {h}x{w}')
        # prefix tokens: DINO's class token with its own (never resized) position; DINOv2's without
        cls = model.cls_token[0, 0].double().numpy() + (pos[0] if prefix else 0)
        np.testing.assert_allclose(out[0], cls, rtol=1e-6, atol=1e-6)
        if model.reg_token is not None:
            np.testing.assert_array_equal(out[1:5], model.reg_token[0].double().numpy())


def test_rules_differ_off_the_training_grid():
    """The DINO hub rule really is another resize than timm's (the reason for the option)."""
    from clearclip_seg.models.vfm_pos_embed import resize_patch_pos_embed
    pos = torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(0))
    dino, timm_like = (resize_patch_pos_embed(pos, (6, 6), r) for r in ('dino_hub', 'dinov2_hub'))
    assert (dino - timm_like).abs().max() > 1e-2


def test_at_the_training_size_all_rules_agree():
    """At 224 x 224 (the DINO ViT-B/8 grid, 28 x 28) every rule leaves the embedding as it is: same features."""
    from clearclip_seg.models.vfm_pos_embed import RULES, use_pos_embed_rule
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    feats = {}
    for rule in RULES:
        with torch.no_grad():
            feats[rule] = use_pos_embed_rule(_vit(DINO, img_size=224), rule).forward_features(x)
    for rule in RULES:
        assert torch.equal(feats[rule], feats['timm']), rule
    # at 336 x 336 DINO's rule moves the features, DINOv2's hub rule is timm's own
    x = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, dino = (use_pos_embed_rule(_vit(DINO, img_size=224), r).forward_features(x)
                       for r in ('timm', 'dino_hub'))
        v2 = [use_pos_embed_rule(_vit(DINOV2), r).forward_features(x) for r in ('timm', 'dinov2_hub')]
    assert (plain - dino).abs().max() > 1e-3
    assert torch.equal(v2[0], v2[1])


def test_proxyclip_presets_and_errors():
    from clearclip_seg.methods import build_method
    expected = {'dino': 'dino_hub', 'dinov2': 'dinov2_hub', 'sam': 'timm', 'mae': 'mae'}
    for vfm, rule in expected.items():
        m = build_method(dict(type='ProxyCLIP', vfm=vfm))
        assert m.pos_embed_resize == rule and m.options()['pos_embed_resize'] == rule
    assert build_method(dict(type='ProxyCLIP', vfm=DINO['name'])).pos_embed_resize == 'timm'
    m = build_method(dict(type='ProxyCLIP', vfm='dino', pos_embed_resize='timm', vfm_pretrained=False,
                          vfm_kwargs=dict(img_size=32, embed_dim=16, depth=1, num_heads=2)))
    assert m.pos_embed_resize == 'timm'
    with pytest.raises(ValueError, match=r"model.method.pos_embed_resize='bilinear': expected one of"):
        build_method(dict(type='ProxyCLIP', pos_embed_resize='bilinear'))
    with pytest.raises(ValueError, match='dynamic_img_size=True'):
        build_method(dict(type='ProxyCLIP', vfm=DINO['name'], vfm_pretrained=False, pos_embed_resize='dino_hub',
                          vfm_kwargs=dict(img_size=32, embed_dim=16, depth=1, num_heads=2))).load()
    loaded = build_method(dict(type='ProxyCLIP', vfm='dino', vfm_pretrained=False,
                               vfm_kwargs=dict(img_size=32, embed_dim=16, depth=1, num_heads=2))).load()
    assert loaded.pos_embed_resize == 'dino_hub'
