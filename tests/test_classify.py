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
