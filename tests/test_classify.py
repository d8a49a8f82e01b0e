"""The classification rule (softmax, synonyms, area_thd, prob_thd) and its banded, bounded-memory path."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clearclip_seg.models import classify as cl


def _plain_rule(logits, scale, q2c, num_classes, prob_thd, area_thd):
    """SCLIP's area rule (docs/protocol.md, "Other methods"), one pixel and one class at a time (numpy, float64)."""
    x = logits.double().numpy() * scale
    e = np.exp(x - x.max(0))
    p = e / e.sum(0)
    probs = np.stack([p[[q for q, c in enumerate(q2c) if c == k]].max(0) for k in range(num_classes)])
    if area_thd is not None:
        arg = probs.argmax(0)
        area = np.array([(arg == k).sum() for k in range(1, num_classes)], dtype=np.float64)
        for k in range(1, num_classes):
            if not area[k - 1] > area_thd * area.sum():
                probs[k] = 0.0
    labels = probs.argmax(0)
    labels[probs.max(0) < prob_thd] = 0
    return probs, labels


def test_area_threshold_is_relative_to_foreground_and_reassigns_to_next_best():
    # 3 classes x 1 x 10 pixels: class 0 wins 6 pixels, class 1 wins 3, class 2 wins 1.
    # Foreground area = 4: class 2 (1 <= 0.3 * 4) is suppressed, class 1 (3 > 1.2) kept.
    # Relative to the image (0.3 * 10 = 3) class 1 would have been suppressed too.
    logits = torch.tensor([[5.0] * 6 + [0.0] * 3 + [0.0],
                           [0.0] * 6 + [5.0] * 3 + [2.0],
                           [0.0] * 6 + [0.0] * 3 + [5.0]]).view(3, 1, 10)
    q2c = torch.arange(3)
    probs, labels = cl.classify(logits, 1.0, q2c, 3, prob_thd=0.0, area_thd=0.3)
    # the suppressed pixel goes to the next best class (1), not to background
    assert labels.flatten().tolist() == [0] * 6 + [1] * 4
    assert torch.all(probs[2] == 0) and torch.all(probs[0] > 0)
    ref_probs, ref_labels = _plain_rule(logits, 1.0, [0, 1, 2], 3, 0.0, 0.3)
    np.testing.assert_array_equal(labels[0].numpy(), ref_labels)
    np.testing.assert_allclose(probs.double().numpy(), ref_probs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('area_thd,prob_thd', [(None, 0.0), (None, 0.3), (0.1, 0.0), (0.25, 0.2), (1.0, 0.0)])
def test_rule_equals_plain_reference_with_synonyms(area_thd, prob_thd):
    g = torch.Generator().manual_seed(0)
    q2c = [0, 0, 0, 1, 2, 2, 3]             # background with 3 names, class 2 with 2 synonyms
    logits = torch.randn(7, 9, 11, generator=g) * 0.05
    probs, labels = cl.classify(logits, 40.0, torch.tensor(q2c), 4, prob_thd, area_thd)
    ref_probs, ref_labels = _plain_rule(logits, 40.0, q2c, 4, prob_thd, area_thd)
    np.testing.assert_array_equal(labels[0].numpy(), ref_labels)
    np.testing.assert_allclose(probs.double().numpy(), ref_probs, rtol=1e-5, atol=1e-7)
    assert probs.shape == (4, 9, 11) and labels.shape == (1, 9, 11)


@pytest.mark.parametrize('q,h,w,H,W', [(21, 56, 84, 500, 750),   # upsampling (image larger than the input)
                                       (30, 448, 597, 375, 500),  # downsampling (VOC-size image)
                                       (7, 120, 90, 333, 251)])
def test_banded_labels_equal_the_full_map(q, h, w, H, W):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(q, h, w, generator=g) * 0.1
    q2c = torch.arange(q) // 2 if q > 7 else torch.tensor([0, 0, 1, 2, 3, 3, 4])
    C = int(q2c.max()) + 1
    full = F.interpolate(logits[None], size=(H, W), mode='bilinear', align_corners=False)[0]
    ref_probs, ref_labels = cl.classify(full, 50.0, q2c, C, 0.2)
    # bands of a few rows (forced by a tiny budget), also checking the band resize itself
    budget = 4 * W * (3 * q + C) * 13
    assert cl.band_rows(q, C, W, budget) == 13
    banded = cl.classify_tiled(logits, (H, W), 50.0, q2c, C, 0.2, tile_bytes=budget)
    assert torch.equal(banded, ref_labels)
    rows = torch.cat([cl.resize_rows(logits, (H, W), s, min(H, s + 13)) for s in range(0, H, 13)], dim=1)
    assert torch.equal(rows, full)  # bit for bit: same source rows, weights and rounding as ATen
    # one band (the default budget for a small image) is the full path itself
    assert torch.equal(cl.classify_tiled(logits, (H, W), 50.0, q2c, C, 0.2), ref_labels)


@pytest.fixture
def one_thread():
    """Probabilities are compared on one thread: with several, ATen's vectorised softmax rounds the last few
    elements of each thread's share apart (an ulp), for the whole map as much as for a band."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _area_case(seed=2, H=160, W=143):
    g = torch.Generator().manual_seed(seed)
    q2c = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9])
    low = torch.randn(12, 22, 19, generator=g) * 0.2
    low[3, :5] += 1.0      # class 2 on top in the first rows only
    low[5, 10:] += 0.5     # class 3 over the lower half
    return low, q2c, 10, (H, W)


@pytest.mark.parametrize('keep_probs', [False, True])
@pytest.mark.parametrize('area_thd', [None, 0.05, 0.3])
@pytest.mark.parametrize('post,lazy', [(None, False), (dict(type='PAMR', num_iter=3, dilations=(2, 5)), False),
                                       (dict(type='PAMR', num_iter=3, dilations=(2, 5)), True)])
def test_banded_rule_with_area_and_pamr_equals_the_whole_map(keep_probs, area_thd, post, lazy, one_thread,
                                                             monkeypatch):
    """lazy: the guidance is a ResizedGuide of a small input (as the segmentor passes it), made a band's rows at
    a time on the banded path; the whole map is refined with that input resized whole by F.interpolate."""
    from functools import partial

    from clearclip_seg.models import pamr
    from clearclip_seg.models.postprocess import build_postprocessor
    low, q2c, C, (H, W) = _area_case()
    g = torch.Generator().manual_seed(3)
    if lazy:
        small = torch.randn(3, 37, 41, generator=g)
        small[:, :14] += 2.0
        whole_guide = F.interpolate(small[None], size=(H, W), mode='bilinear', align_corners=False)
        guide, made = cl.ResizedGuide(small, (H, W)), []
        rows = guide.rows
        monkeypatch.setattr(guide, 'rows', lambda lo, hi: made.append((lo, hi)) or rows(lo, hi))
    else:
        guide = whole_guide = torch.randn(1, 3, H, W, generator=g)
        guide[..., :60, :] += 2.0
    post = build_postprocessor(post)
    full = F.interpolate(low[None], size=(H, W), mode='bilinear', align_corners=False)[0]
    if post is not None:
        full = post(whole_guide, full[None])[0]
    ref_probs, ref_labels = cl.classify(full, 30.0, q2c, C, 0.2, area_thd)
    monkeypatch.setattr(pamr, 'BAND_BYTES', 4 * W * (2 * 15 * (16 + 8) + (12 + 16 + 8) * 9))   # 9 rows a band
    to_probs = partial(cl.class_probabilities, logit_scale=30.0, query_to_class=q2c, num_classes=C)
    probs, labels = cl.classify_at_size(low, (H, W), to_probs, C, 0.2, area_thd, keep_probs, post, guide,
                                        tile_bytes=4 * W * (3 * 12 + C) * 5)     # classified 5 rows at a time
    assert torch.equal(labels, ref_labels) and len(ref_labels.unique()) > 1
    assert labels.dtype == torch.long
    if lazy:   # the guidance was made a band (with its halo and margin) at a time, never whole
        spans = pamr.pamr_spans((H, W), 12, 3, (2, 5))
        expected = [(max(0, s - 15 - 5), min(H, e + 15 + 5)) for s, e in spans]
        assert len(spans) > 1 and made[:len(spans)] == expected and set(made) <= set(expected)
    if keep_probs:
        # the same floats but where a band's call ends: there ATen's softmax rounds its last few elements
        # (fewer than a vector: < 8 per call) apart, an ulp at most
        differ = (probs != ref_probs).any(dim=0)
        assert differ.sum() <= 8 * (-(-H // 5)) and (probs - ref_probs).abs().max() <= 2 ** -24
    else:
        assert probs is None
    if area_thd == 0.3:   # a class was really suppressed
        kept = cl.kept_classes(cl.area_counts(cl.class_probabilities(full, 30.0, q2c, C)), 0.3)
        assert 0 < kept.sum() < C - 1


def test_area_rule_recomputes_only_the_bands_a_suppressed_class_tops():
    """Pass 1 counts the argmax over every band; pass 2 redoes just the bands where a suppressed class is on top."""
    from functools import partial
    low, q2c, C, (H, W) = _area_case()
    low.zero_()
    low[0] += 0.5           # background everywhere,
    low[6, 11:] += 1.0      # class 4 over the lower half (kept),
    low[3, :2] += 1.0       # class 2 in the top rows only (suppressed)
    full = F.interpolate(low[None], size=(H, W), mode='bilinear', align_corners=False)[0]
    to_probs = partial(cl.class_probabilities, logit_scale=30.0, query_to_class=q2c, num_classes=C)
    spans = [(s, min(H, s + 16)) for s in range(0, H, 16)]
    calls = []

    def compute(start, stop):
        calls.append(start)
        return full[:, start:stop]

    probs, labels = cl.classify_bands(spans, compute, (H, W), to_probs, C, 0.2, area_thd=0.3)
    ref_probs, ref_labels = cl.classify(full, 30.0, q2c, C, 0.2, 0.3)
    assert probs is None and torch.equal(labels, ref_labels)
    # which bands have a suppressed class on top, from the whole map
    p = cl.class_probabilities(full, 30.0, q2c, C)
    kept = cl.kept_classes(cl.area_counts(p), 0.3)
    suppressed = [c for c in range(1, C) if kept[c - 1] == 0]
    tops = p.argmax(dim=0)
    redo = [s for s, e in spans if any(bool((tops[s:e] == c).any()) for c in suppressed)]
    assert suppressed == [1, 2, 3, 5, 6, 7, 8, 9] and redo == [0]
    assert calls == [s for s, _ in spans] + redo
    # nothing suppressed (area_thd=0): one pass only
    calls.clear()
    cl.classify_bands(spans, compute, (H, W), to_probs, C, 0.2, area_thd=0.0)
    assert calls == [s for s, _ in spans]


def test_banded_rule_with_a_sigmoid_scoring():
    """``scores`` replaces the softmax (model.scoring=sigmoid): bands still give the whole map's labels."""
    from functools import partial
    low, q2c, C, (H, W) = _area_case(seed=5)
    scores = lambda x: torch.sigmoid(x * 10.0 - 1.0)       # noqa: E731
    full = F.interpolate(low[None], size=(H, W), mode='bilinear', align_corners=False)[0]
    ref = cl.class_probabilities(full, 1.0, q2c, C, scores)
    ref = cl.labels_from_probs(cl.suppress_small_classes(ref, 0.2), 0.3)
    to_probs = partial(cl.class_probabilities, logit_scale=1.0, query_to_class=q2c, num_classes=C, scores=scores)
    _, labels = cl.classify_at_size(low, (H, W), to_probs, C, 0.3, 0.2, tile_bytes=4 * W * (3 * 12 + C) * 7)
    assert torch.equal(labels, ref) and len(ref.unique()) > 1


def test_resized_guide_is_the_input_resized_whole_or_a_band_of_rows():
    g = torch.Generator().manual_seed(6)
    small = torch.randn(3, 29, 31, generator=g).half()      # made float32, as the whole guidance always was
    ref = F.interpolate(small[None].float(), size=(101, 87), mode='bilinear', align_corners=False)
    guide = cl.ResizedGuide(small, (101, 87))
    assert guide.shape == (1, 3, 101, 87)
    assert torch.equal(guide.full(), ref)
    for lo, hi in [(0, 7), (40, 77), (95, 101), (0, 101)]:
        assert torch.equal(guide.rows(lo, hi), ref[:, :, lo:hi])
    assert cl.guidance_tensor(guide).shape == ref.shape and cl.guidance_tensor(ref) is ref
    assert cl.guidance_tensor(None) is None


@pytest.mark.parametrize('C,dtype', [(10, torch.uint8), (256, torch.uint8), (257, torch.int16),
                                     (2 ** 15, torch.int16), (2 ** 15 + 1, torch.long)])
def test_banded_labels_are_held_in_the_narrowest_type_that_holds_them(C, dtype):
    assert cl._label_dtype(C) == dtype


def test_banded_labels_of_many_classes_equal_the_full_map_as_int64():
    """300 classes: the bands hold int16 labels (values up to 299), returned as int64, equal to the full map's."""
    g = torch.Generator().manual_seed(7)
    q, H, W = 300, 40, 70
    logits = torch.randn(q, 9, 13, generator=g)
    logits[299, :4] += 3.0     # the last class on top in the first rows: a label above 255
    q2c = torch.arange(q)
    full = F.interpolate(logits[None], size=(H, W), mode='bilinear', align_corners=False)[0]
    _, ref = cl.classify(full, 40.0, q2c, q, 0.0)
    banded = cl.classify_tiled(logits, (H, W), 40.0, q2c, q, 0.0, tile_bytes=4 * W * (3 * q + q) * 6)
    assert int(ref.max()) == 299 and banded.dtype == torch.long and torch.equal(banded, ref)
