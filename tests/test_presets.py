"""The paper's baseline rows, written here as plain data, against the presets and published mapping."""
from clearclip_seg.protocol import published
from clearclip_seg.protocol.presets import BASELINE_PRESETS, PRESETS

# ClearCLIP paper, backbone table: "MaskCLIP / + no-residual", "SCLIP-style / + no-residual".
# In the authors' evaluation code the plain column keeps the residual AND the FFN,
# "+ no-residual" drops both. Attention: MaskCLIP = identity (value path), SCLIP-style = qq + kk.
PAPER_ROWS = {
    'maskclip': (dict(attn='identity', residual=True, ffn=True), (74.9, 26.4, 16.4, 12.6, 9.8)),
    'maskclip-nores': (dict(attn='identity', residual=False, ffn=False), (61.4, 28.3, 18.4, 24.7, 13.6)),
    'sclip-style': (dict(attn='qq+kk', residual=True, ffn=True), (78.2, 33.0, 21.1, 29.1, 14.6)),
    'sclip-style-nores': (dict(attn='qq+kk', residual=False, ffn=False), (77.9, 35.6, 23.6, 31.0, 17.0)),
    'clip': (dict(attn='qk', residual=True, ffn=True), None),
    'clearclip': (dict(attn='qq', residual=False, ffn=False), None),
}
NO_BG5 = ('voc20', 'context59', 'coco_stuff164k', 'cityscapes', 'ade20k')


def test_baseline_presets_follow_the_paper_definition():
    for name, (switches, _) in PAPER_ROWS.items():
        assert PRESETS[name].last_block == switches, name
    assert set(BASELINE_PRESETS) == {'clip', 'maskclip', 'maskclip-nores', 'sclip-style', 'sclip-style-nores'}


def test_published_columns_map_to_the_presets_that_reproduce_them():
    for name, (_, row) in PAPER_ROWS.items():
        if row is None:
            continue
        got = tuple(published.published_miou('vit-b16', name, b) for b in NO_BG5)
        assert got == row, name


def test_residual_only_points_are_not_published_rows():
    for name in ('maskclip-res-noffn', 'sclip-style-res-noffn'):
        assert PRESETS[name].last_block['residual'] is True and PRESETS[name].last_block['ffn'] is False
        assert all(published.published_miou('vit-b16', name, b) is None for b in NO_BG5)
