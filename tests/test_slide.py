"""Sliding-window arithmetic on hand-built inputs."""
import torch
import torch.nn.functional as F

from clearclip_seg.models import slide
from clearclip_seg.models.slide import (accumulate, iter_windows, padded_window_shapes, patch_padding, slide_inference,
                                       whole_inference, window_boxes)


def test_window_boxes_by_hand():
    # 448-wide image side, crop 448: one window; 600: two (last shifted back)
    assert window_boxes(448, 600, 448, 224) == [(0, 448, 0, 448), (0, 448, 152, 600)]
    # grids = max(H - crop + stride - 1, 0) // stride + 1
    assert window_boxes(10, 10, 4, 3) == [(y, y + 4, x, x + 4) for y in (0, 3, 6) for x in (0, 3, 6)]
    assert window_boxes(11, 4, 4, 3) == [(0, 4, 0, 4), (3, 7, 0, 4), (6, 10, 0, 4), (7, 11, 0, 4)]
    # a side shorter than the crop gives a smaller window
    assert window_boxes(3, 9, 4, 4) == [(0, 3, 0, 4), (0, 3, 4, 8), (0, 3, 5, 9)]
    assert window_boxes(448, 896, 224, 224) == [(y, y + 224, x, x + 224) for y in (0, 224)
                                                for x in (0, 224, 448, 672)]


def test_patch_padding_left_is_half():
    assert patch_padding(448, 448, 16) == (0, 0, 0, 0)
    assert patch_padding(300, 449, 16) == (7, 8, 2, 2)   # w: 15 -> 7 + 8; h: 4 -> 2 + 2
    assert patch_padding(5, 3, (4, 2)) == (0, 1, 1, 2)


def _patch_mean_encoder(patch):
    """A fake encoder: per-patch means of each channel as 'query logits'."""
    def encode(x):
        return F.avg_pool2d(x, patch)
    return encode


def _reference_slide(img, encode, crop, stride, patch):
    """MMSeg-style loop written independently: pad into full canvases."""
    C, H, W = img.shape
    preds = torch.zeros(C, H, W)
    count = torch.zeros(1, H, W)
    gh = max(H - crop + stride - 1, 0) // stride + 1
    gw = max(W - crop + stride - 1, 0) // stride + 1
    for i in range(gh):
        for j in range(gw):
            y1, x1 = i * stride, j * stride
            y2, x2 = min(y1 + crop, H), min(x1 + crop, W)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            win = img[:, y1:y2, x1:x2]
            h, w = win.shape[-2:]
            ph, pw = (-h) % patch, (-w) % patch
            t, l = ph // 2, pw // 2
            padded = F.pad(win, (l, pw - l, t, ph - t))
            lg = encode(padded[None])
            lg = F.interpolate(lg, size=padded.shape[-2:], mode='bilinear', align_corners=False)[0]
            lg = lg[:, t:t + h, l:l + w]
            preds += F.pad(lg, (x1, W - x2, y1, H - y2))
            count[:, y1:y2, x1:x2] += 1
    return preds / count


def test_slide_matches_independent_reference_and_batching():
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 37, 50, generator=g), torch.randn(3, 20, 9, generator=g),
              torch.randn(3, 24, 24, generator=g)]
    encode = _patch_mean_encoder(4)
    for max_windows in (1, 3, 64):
        out = slide_inference(images, encode, 3, crop=16, stride=8, patch=4, max_windows=max_windows)
        for img, o in zip(images, out):
            ref = _reference_slide(img, encode, 16, 8, 4)
            assert o.shape == img.shape
            torch.testing.assert_close(o, ref, rtol=1e-6, atol=1e-6)


def test_banded_add_of_channels_last_windows_is_the_plain_add(monkeypatch):
    """The band-wise ``accumulate`` gives the very sums of one ``add_``, and so does the slide with it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 13, 5, generator=g).permute(2, 0, 1)  # (Q=5, 7, 13), channels-last like window logits
    assert x.stride(0) == 1
    for band_bytes in (1, 5 * 13 * 4 * 3, 10 ** 9):  # one row, three rows (uneven last band), everything
        monkeypatch.setattr(slide, 'ADD_BAND_BYTES', band_bytes)
        out = torch.randn(5, 9, 20, generator=torch.Generator().manual_seed(1))
        ref = out.clone()
        ref[:, 1:8, 4:17] += x
        accumulate(out[:, 1:8, 4:17], x)
        assert torch.equal(out, ref)
    # a row-broadcast x (Q, 1, w) takes the plain add, not bands that would skip rows
    monkeypatch.setattr(slide, 'ADD_BAND_BYTES', 1)
    out = torch.zeros(5, 7, 13)
    accumulate(out, x[:, :1])
    assert torch.equal(out, torch.zeros(5, 7, 13) + x[:, :1])
    monkeypatch.setattr(slide, 'ADD_BAND_BYTES', 3 * 16 * 4)  # a band of one row of a 16-wide window

    def encode(crops):  # per-patch means, handed back channels-last as the text product does
        return F.avg_pool2d(crops, 4).contiguous(memory_format=torch.channels_last)
    img = torch.randn(3, 37, 50, generator=g)
    out = slide_inference([img], encode, 3, crop=16, stride=8, patch=4, max_windows=4)[0]
    assert torch.equal(out, _reference_slide(img, encode, 16, 8, 4))


def test_overlap_average_of_constant_windows():
    """Each window scores its own index: overlaps hold the mean of the indices."""
    calls = []

    def encode(x):
        out = torch.stack([torch.full((1, x.shape[-2] // 2, x.shape[-1] // 2), float(len(calls) + i))
                           for i in range(x.shape[0])])
        calls.append(x.shape[0])
        return out
    img = torch.zeros(3, 4, 6)
    out = slide_inference([img], encode, 1, crop=4, stride=2, patch=2, max_windows=1)[0]
    # windows x1 = 0, 2 -> values 0, 1 over columns [0,4) and [2,6)
    expected = torch.tensor([0, 0, 0.5, 0.5, 1, 1]).expand(4, 6)
    torch.testing.assert_close(out[0], expected)
    assert calls == [1, 1]


def test_whole_inference_pads_and_cuts_back():
    img = torch.arange(3 * 6 * 10, dtype=torch.float32).reshape(3, 6, 10)
    out = whole_inference([img], lambda x: x, patch=4)[0]   # identity "encoder"
    # 6x10 -> padded 8x12 (top 1, left 1); identity upsampling returns the input
    torch.testing.assert_close(out, img)


def test_iter_windows_are_what_slide_inference_encodes():
    """The padded windows written once: analysis and speed figures see exactly the encoder's inputs."""
    img = torch.randn(3, 40, 70)
    seen = []

    def encode(x):
        seen.append(x.clone())
        return F.avg_pool2d(x, 16)
    slide_inference([img], encode, 3, 48, 32, 16, max_windows=1)
    windows = list(iter_windows(img, 48, 32, 16))
    assert len(windows) == len(seen) == 2
    for w, s in zip(windows, seen):
        assert torch.equal(w, s)
    # 40 x 48 windows: 8 rows of zero padding, 4 on top and 4 below
    assert [tuple(w.shape) for w in windows] == [(1, 3, 48, 48)] * 2
    assert windows[0][..., :4, :].abs().sum() == 0 and torch.equal(windows[0][0, :, 4:44], img[:, :, :48])
    assert padded_window_shapes([(40, 70), (64, 64), (30, 50)], 48, 32, 16) == \
        [(48, 48), (48, 48), (48, 48), (48, 48), (48, 48), (48, 48), (32, 48), (32, 48)]
