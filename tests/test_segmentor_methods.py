"""The segmentor around the method registry: model.method / model.last_block, PAMR placement,
patch_fit, keep_probs (banded labels) and strict option checks."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.structures import SegDataSample

from clearclip_seg.models.pamr import pamr
from helpers import tiny_segmentor


def _sample(h, w, ori):
    s = SegDataSample()
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=ori))
    return s


@pytest.fixture(scope='module')
def image():
    return torch.randn(3, 70, 100, generator=torch.Generator().manual_seed(4))


def test_method_lastblock_equals_last_block_keys(image):
    a = tiny_segmentor(last_block=dict(attn='kk', residual=True, ffn=False))
    b = tiny_segmentor(last_block=None, method=dict(type='LastBlock', attn='kk', residual=True, ffn=False))
    c = tiny_segmentor(last_block=dict(attn='kk'), method=dict(type='LastBlock', attn='kk', residual=True))
    assert a.method.describe() == b.method.describe() == c.method.describe()
    qa, qb = a.query_logits([image])[0], b.query_logits([image])[0]
    assert torch.equal(qa, qb)
    assert not hasattr(b.encoder, 'attn_mode')  # the switches are LastBlock's only, passed on each call


def test_sclip_method_matches_the_equivalent_last_block(image):
    """SCLIP = CSA (qq+kk softmaxes) with residual and FFN: LastBlock('qq+kk', True, True) through SDPA."""
    sclip = tiny_segmentor(last_block=None, method=dict(type='SCLIP'))
    same = tiny_segmentor(last_block=dict(attn='qq+kk', residual=True, ffn=True))
    torch.testing.assert_close(sclip.query_logits([image])[0], same.query_logits([image])[0], rtol=1e-4, atol=1e-5)


def test_conflicts_and_unknown_keys_are_one_line_errors():
    with pytest.raises(ValueError, match=r"model.last_block=.* and model.method.type='NACLIP' both set"):
        tiny_segmentor(last_block=dict(attn='qq'), method=dict(type='NACLIP'))
    with pytest.raises(ValueError, match=r'model.last_block .*attn.* conflicts with model.method'):
        tiny_segmentor(last_block=dict(attn='qq'), method=dict(type='LastBlock', attn='kk'))
    bad = [
        (dict(method=dict(type='NACLIP', std=5)), r"unknown keys \['std'\] in model.method \(type=NACLIP\)"),
        (dict(method=dict(type='NoSuch')), r"unknown method 'NoSuch' \(model.method.type\)"),
        (dict(postprocess=dict(type='PAMR', steps=3)), r"unknown keys \['steps'\] in model.postprocess"),
        (dict(test_cfg=dict(mode='slide', patchfit='pad')), r"unknown keys \['patchfit'\] in model.test_cfg"),
        (dict(test_cfg=dict(patch_fit='crop')), r"model.test_cfg.patch_fit='crop'"),
        (dict(test_cfg=dict(crop_size=64, stride=65)), r'model.test_cfg.stride=65: expected at most'),
        (dict(test_cfg=dict(crop_size=0)), r'model.test_cfg.crop_size=0'),
        (dict(test_cfg=dict(max_windows='many')), r"model.test_cfg.max_windows='many'"),
        (dict(test_cfg=dict(max_windows=0)), r'model.test_cfg.max_windows=0'),
        (dict(test_cfg=dict(keep_probs='yes')), r"model.test_cfg.keep_probs='yes'"),
        (dict(test_cfg=dict(mode='tiles')), r"unknown test mode 'tiles' \(model.test_cfg.mode\)"),
        (dict(prob_thd=1.5), r'model.prob_thd=1.5: expected a finite number in \[0, 1\]'),
        (dict(logit_scale=0), r'model.logit_scale=0: expected a finite number > 0'),
        (dict(area_thd=-0.1), r'model.area_thd=-0.1'),
    ]
    for kw, message in bad:
        kw.setdefault('last_block', None if 'method' in kw else dict(attn='qq'))
        with pytest.raises(ValueError, match=message):
            tiny_segmentor(**kw)


def test_pamr_runs_on_raw_logits_at_the_original_size(image):
    """Card 2.2 step 3: resize to ori_shape, PAMR guided by the normalised input resized there, then softmax."""
    seg = tiny_segmentor(postprocess=dict(type='PAMR', num_iter=3, dilations=(2, 4)), logit_scale=40.0)
    ori = (45, 61)
    out = seg.predict([image], [_sample(70, 100, ori)])[0]
    q = seg.query_logits([image])[0]
    logits = F.interpolate(q[None], size=ori, mode='bilinear', align_corners=False)
    guide = F.interpolate(image[None], size=ori, mode='bilinear', align_corners=False)
    refined = pamr(guide, logits, 3, (2, 4))[0]
    probs = torch.softmax(refined * 40.0, dim=0)                  # then scale, softmax, synonym max
    probs = torch.stack([probs[0], probs[1], torch.maximum(probs[2], probs[3])])
    assert torch.equal(out.pred_sem_seg.data[0], probs.argmax(0))
    torch.testing.assert_close(out.seg_logits.data, probs)
    plain = tiny_segmentor(logit_scale=40.0).predict([image], [_sample(70, 100, ori)])[0]
    assert not torch.equal(plain.pred_sem_seg.data, out.pred_sem_seg.data)  # PAMR changed something
    with pytest.raises(ValueError, match='needs the input images'):
        seg.postprocess_result([q], [_sample(70, 100, ori)])


def test_truncate_stretches_the_cut_grid_over_the_whole_input(image):
    """patch_fit='truncate', whole image: conv1 drops 70 % 16 rows and 100 % 16 columns, the 4 x 6
    logits are stretched bilinearly over 70 x 100, then resized to the original size."""
    seg = tiny_segmentor(test_cfg=dict(mode='whole', patch_fit='truncate'))
    q = seg.query_logits([image])[0]
    with torch.no_grad():
        grid = seg.method.patch_logits(seg.encoder, image[None, :, :64, :96], seg.build_text_classifier())
    assert grid.shape[-2:] == (4, 6)
    expected = F.interpolate(grid, size=(70, 100), mode='bilinear', align_corners=False)[0]
    torch.testing.assert_close(q, expected, rtol=0, atol=0)
    padded = tiny_segmentor(test_cfg=dict(mode='whole')).query_logits([image])[0]
    assert not torch.allclose(q, padded)


def test_keep_probs_false_gives_the_same_labels_without_probabilities(image):
    ori = (150, 210)
    full = tiny_segmentor(prob_thd=0.3).predict([image], [_sample(70, 100, ori)])[0]
    windows = dict(crop_size=(64, 64), stride=(32, 32))          # tiny_segmentor's own
    lean = tiny_segmentor(prob_thd=0.3, test_cfg=dict(windows, keep_probs=False))
    out = lean.predict([image], [_sample(70, 100, ori)])[0]
    assert torch.equal(out.pred_sem_seg.data, full.pred_sem_seg.data)
    assert 'seg_logits' not in out
    assert 'seg_logits' in lean.predict([image], [_sample(70, 100, ori)], keep_probs=True)[0]
    # area_thd needs the full map: labels follow the area rule even with keep_probs=False
    area = tiny_segmentor(area_thd=0.4, test_cfg=dict(windows, keep_probs=False)).predict([image], [_sample(70, 100, ori)])[0]
    ref = tiny_segmentor(area_thd=0.4).predict([image], [_sample(70, 100, ori)])[0]
    assert torch.equal(area.pred_sem_seg.data, ref.pred_sem_seg.data)


def test_banded_labels_through_the_segmentor(image, monkeypatch):
    """21 queries, an image 12x the input: many bands of rows, same labels as the full map."""
    from clearclip_seg.models import classify
    ori = (840, 1200)
    windows = dict(crop_size=(64, 64), stride=(32, 32))
    full = tiny_segmentor(vocabulary='voc21', prob_thd=0.05, test_cfg=dict(windows, keep_probs=True))
    ref = full.predict([image], [_sample(70, 100, ori)])[0].pred_sem_seg.data
    lean = tiny_segmentor(vocabulary='voc21', prob_thd=0.05, test_cfg=dict(windows, keep_probs=False))
    monkeypatch.setattr(classify, 'TILE_BYTES', 4 * 1200 * (3 * 21 + 21) * 37)      # 37 rows a band
    assert torch.equal(lean.predict([image], [_sample(70, 100, ori)])[0].pred_sem_seg.data, ref)
    assert len(ref.unique()) > 1


def test_class_token_methods_refuse_towers_without_exactly_one_class_token():
    from types import SimpleNamespace

    import pytest as _pytest

    from clearclip_seg.methods import build_method
    for name in ('SCLIP', 'NACLIP', 'GEM'):
        method = build_method(dict(type=name))
        for prefix in (0, 3):  # SigLIP (no class token), PE (class token + registers)
            with _pytest.raises(ValueError, match=f'type={name} needs a tower with exactly one class token.*{prefix} prefix'):
                method.check_tower(SimpleNamespace(num_prefix_tokens=prefix, num_blocks=12))
        method.check_tower(SimpleNamespace(num_prefix_tokens=1, num_blocks=12, kind='openclip_vit'))
    build_method(dict(type='LastBlock')).check_tower(SimpleNamespace(num_prefix_tokens=0))
