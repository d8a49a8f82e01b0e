"""Large images through the segmentor: bands of rows (PAMR with its halo, the area rule in two passes) give the
labels of the whole-map path; the memory benchmark's child reports its figures."""
import pytest
import torch
from mmseg.structures import SegDataSample

from clearclip_seg.models import classify, pamr
from helpers import TINY_ARCH, TINY_NAME, tiny_segmentor


def _sample(h, w, ori):
    s = SegDataSample()
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=ori))
    return s


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('keep_probs', [False, True])
def test_pamr_and_area_rule_in_bands_give_the_whole_map_labels(keep_probs, one_thread, monkeypatch):
    image = torch.randn(3, 70, 100, generator=torch.Generator().manual_seed(4))
    ori = (280, 400)
    kw = dict(vocabulary='voc21', prob_thd=0.05, area_thd=0.05, postprocess=dict(type='PAMR', num_iter=2,
                                                                                   dilations=(2, 4)),
              test_cfg=dict(crop_size=(64, 64), stride=(32, 32), keep_probs=keep_probs))
    seg = tiny_segmentor(**kw)
    whole = seg.predict([image], [_sample(70, 100, ori)])[0]          # one band: the whole-map path
    # 21 queries, 16 neighbours: bands of 12 rows (halo 8 rows), classified 5 rows at a time
    monkeypatch.setattr(pamr, 'BAND_BYTES', 4 * 400 * (2 * 8 * (16 + 8) + (21 + 16 + 8) * 12))
    monkeypatch.setattr(classify, 'TILE_BYTES', 4 * 400 * (3 * 21 + 21) * 5)
    monkeypatch.setattr(classify, 'RESIZE_ROWS', 7)                  # a band and its halo resized 7 rows at a time
    assert len(pamr.pamr_spans(ori, 21, 2, (2, 4))) == -(-280 // 12)
    made = []   # the guidance a band's rows at a time, never whole beside a band (classify.ResizedGuide)
    rows, full = classify.ResizedGuide.rows, classify.ResizedGuide.full
    monkeypatch.setattr(classify.ResizedGuide, 'rows', lambda self, lo, hi: made.append((lo, hi)) or rows(self, lo, hi))
    monkeypatch.setattr(classify.ResizedGuide, 'full', lambda self: made.append('full') or full(self))
    banded = seg.predict([image], [_sample(70, 100, ori)])[0]
    spans = pamr.pamr_spans(ori, 21, 2, (2, 4))   # halo 2 * 4 rows, and 4 more for the affinities
    expected = [(max(0, s - 8 - 4), min(280, e + 8 + 4)) for s, e in spans]
    # the area rule's second pass makes again the bands it recomputes
    assert made[0::2][:len(spans)] == expected and set(made[0::2]) <= set(expected)
    assert made[1::2] == ['full'] * (len(made) // 2)   # each band's rows made and cut from the whole, then freed
    assert torch.equal(banded.pred_sem_seg.data, whole.pred_sem_seg.data)
    assert len(whole.pred_sem_seg.data.unique()) > 1
    assert ('seg_logits' in banded) == ('seg_logits' in whole) == keep_probs
    if keep_probs:   # an ulp at most, where a band's softmax call ends
        assert (banded.seg_logits.data - whole.seg_logits.data).abs().max() <= 2 ** -24


def test_pamr_dilation_larger_than_the_image_is_refused():
    image = torch.randn(3, 70, 100, generator=torch.Generator().manual_seed(4))
    seg = tiny_segmentor(postprocess=dict(type='PAMR', num_iter=2, dilations=[8, 3000]),
                         test_cfg=dict(crop_size=(64, 64), stride=(32, 32)))
    with pytest.raises(ValueError, match=r'^model.postprocess.dilations=\(8, 3000\): dilation 3000 does not fit '
                                         r'the 400x600 image .*expected dilations below 600$'):
        seg.predict([image], [_sample(70, 100, (400, 600))])


@pytest.mark.slow
def test_memory_benchmark_child_reports_its_peak():
    """One case in a fresh process (the tiny CLIP instead of ViT-B/16): figures of that process."""
    from clearclip_seg.perf.image_memory import CASES, ROOT, measure_case
    config, options = CASES['sclip']
    r = measure_case(f'{ROOT}/{config}', {**options, 'model.clip.arch_file': TINY_ARCH, 'model.clip.arch': TINY_NAME},
                     (300, 200), threads=1, timeout=300)
    assert r['input_size'] == [504, 336] and r['labels_shape'] == [1, 300, 200] and r['area_thd'] == 0.1
    assert r['queries'] > r['classes'] == 21 and not r['pamr']
    assert 0 < r['model_rss_mib'] <= r['peak_rss_mib'] and r['time_s'] > 0
