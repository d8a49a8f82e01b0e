"""The dense encoder against open_clip's own forward and the attention formulas."""
import pytest
import torch
import torch.nn.functional as F

from clearclip_seg.models.attention import ATTENTION_MODES, attend, attention_map, check_mode
from clearclip_seg.models.encoder import DenseCLIPEncoder, interpolate_pos_embed


def _images(n=2, h=64, w=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g)


def test_surgery_off_equals_open_clip_forward(tiny_clip):
    model, _ = tiny_clip
    visual = model.visual
    enc = DenseCLIPEncoder(visual)
    x = _images()
    visual.output_tokens = True
    try:
        pooled, tokens = visual(x)
    finally:
        visual.output_tokens = False
    patches, cls = enc(x, return_cls=True, attn='qk', residual=True, ffn=True)
    assert patches.shape == (2, 4, 4, 32)
    torch.testing.assert_close(patches.flatten(1, 2), tokens @ visual.proj, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls, pooled, rtol=1e-5, atol=1e-5)
    # and the image embedding open_clip reports
    torch.testing.assert_close(cls, model.encode_image(x), rtol=1e-5, atol=1e-5)


def test_plain_and_fused_encoder_agree_for_every_mode(tiny_clip):
    model, _ = tiny_clip
    x = _images(h=96, w=48)
    for mode in ATTENTION_MODES:
        for residual in (False, True):
            for ffn in (False, True):
                fused = DenseCLIPEncoder(model.visual, fused_attn=True)(x, attn=mode, residual=residual, ffn=ffn)
                plain = DenseCLIPEncoder(model.visual, fused_attn=False)(x, attn=mode, residual=residual, ffn=ffn)
                torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def _manual_last_block(visual, x_in, mode, residual, ffn):
    """The protocol's formulas written out directly from the block's weights."""
    blk = visual.transformer.resblocks[-1]
    mha = blk.attn
    h = blk.ln_1(x_in)
    q, k, v = F.linear(h, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    B, N, C = q.shape
    H = mha.num_heads
    d = C // H

    def heads(t):
        return t.reshape(B, N, H, d).permute(0, 2, 1, 3)
    q, k, v = heads(q), heads(k), heads(v)
    s = d ** -0.5

    def sm(a, b):
        return torch.softmax(a @ b.transpose(-1, -2) * s, dim=-1)
    weights = {'qk': sm(q, k), 'qq': sm(q, q), 'kk': sm(k, k), 'vv': sm(v, v),
               'qq+kk': sm(q, q) + sm(k, k), 'identity': torch.eye(N).expand(B, H, N, N)}[mode]
    o = (weights @ v).permute(0, 2, 1, 3).reshape(B, N, C)
    y = mha.out_proj(o)
    if residual:
        y = x_in + y
    if ffn:
        y = y + blk.mlp(blk.ln_2(y))
    return y


@pytest.mark.parametrize('mode', list(ATTENTION_MODES))
def test_each_mode_equals_its_formula(tiny_clip, mode):
    model, _ = tiny_clip
    visual = model.visual
    enc = DenseCLIPEncoder(visual)
    x = _images(n=1)
    x_in, grid = enc.last_block_input(x)
    for residual, ffn in [(False, False), (True, False), (False, True), (True, True)]:
        expected = _manual_last_block(visual, x_in, mode, residual, ffn)
        torch.testing.assert_close(enc.last_block(x_in, mode, residual, ffn), expected, rtol=1e-5, atol=1e-5)
    # and the whole head: ln_post on every token, drop the class token, proj
    y = _manual_last_block(visual, x_in, mode, False, False)
    expected = (visual.ln_post(y) @ visual.proj)[:, 1:].reshape(1, *grid, -1)
    torch.testing.assert_close(enc(x, attn=mode, residual=False, ffn=False), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mode', list(ATTENTION_MODES))
def test_attend_fused_equals_plain_on_small_tensors(mode):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 5, generator=g) for _ in range(3))
    plain = attend(mode, q, k, v, fused=False)
    fused = attend(mode, q, k, v, fused=True)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention_map(mode, q, k, v) @ v, plain, rtol=1e-5, atol=1e-6)
    if mode == 'identity':
        assert torch.equal(plain, v)
    if mode == 'qq':
        w = torch.softmax(q @ q.transpose(-1, -2) / 5 ** 0.5, dim=-1)
        torch.testing.assert_close(plain, w @ v)


def test_unknown_mode_is_a_clear_error(tiny_clip):
    with pytest.raises(ValueError, match=r"unknown attention mode 'qv' \(model.last_block.attn\)"):
        check_mode('qv')
    with pytest.raises(ValueError, match='model.last_block.attn'):
        DenseCLIPEncoder(tiny_clip[0].visual).last_block(torch.zeros(1, 17, 64), attn='qv')


def test_pos_embed_identity_at_native_grid(tiny_clip):
    visual = tiny_clip[0].visual
    pe = visual.positional_embedding
    assert interpolate_pos_embed(pe, (4, 4), (4, 4)) is pe


def test_pos_embed_interpolation_follows_protocol():
    g = torch.Generator().manual_seed(0)
    pe = torch.randn(1 + 14 * 14, 8, generator=g)
    out = interpolate_pos_embed(pe, (14, 14), (28, 20))
    assert out.shape == (1 + 28 * 20, 8)
    assert torch.equal(out[0], pe[0])
    grid = pe[1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(28.1 / 14, 20.1 / 14), mode='bicubic', align_corners=False)
    torch.testing.assert_close(out[1:], ref.permute(0, 2, 3, 1).reshape(-1, 8))
    # the DINO offset matters: a plain size= resize samples differently
    by_size = F.interpolate(grid, size=(28, 20), mode='bicubic', align_corners=False)
    assert not torch.allclose(ref, by_size)


def test_non_square_crop_and_identity_skips_qk(tiny_clip, monkeypatch):
    enc = DenseCLIPEncoder(tiny_clip[0].visual)
    seen = {}
    orig = enc.qkv

    def spy(x, names=('q', 'k', 'v')):
        seen['names'] = names
        return orig(x, names)
    monkeypatch.setattr(enc, 'qkv', spy)
    out = enc(_images(n=1, h=32, w=80), attn='identity')
    assert out.shape == (1, 2, 5, 32)
    assert seen['names'] == ('v',)


def test_decompose_reconstructs_block_output(tiny_clip):
    enc = DenseCLIPEncoder(tiny_clip[0].visual)
    parts = enc.decompose(_images(n=1), 'qq', attn_map=True, residual=True, ffn=False)
    torch.testing.assert_close(parts['x_res'] + parts['x_attn'], parts['output'])
    n = parts['x_res'].shape[1]
    assert parts['attn_map'].shape[-2:] == (n, n)
    torch.testing.assert_close(parts['attn_map'].sum(-1), torch.ones(parts['attn_map'].shape[:-1]))
