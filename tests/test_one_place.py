"""Every protocol value lives in one place: change it there and the generated configs follow.

The configs are rendered by clearclip_seg/protocol/render.py from clearclip_seg/protocol/
(the freshness test in test_configs.py checks the committed files equal its output); here
protocol values are changed in the tables and the renderer's output must change with them,
and nowhere else needs editing.
"""
import dataclasses
import os


def load_generator():
    """The config renderer (it reads the protocol tables when called, so patched values show)."""
    from clearclip_seg.protocol import render
    return render


def test_resize_and_threshold_are_written_once(monkeypatch):
    from clearclip_seg.protocol import benchmarks, constants
    before = load_generator().expected_files()
    monkeypatch.setattr(constants, 'RESIZE', (2048, 512))
    voc21 = dataclasses.replace(benchmarks.BENCHMARKS['voc21'], prob_thd=0.35)
    monkeypatch.setitem(benchmarks.BENCHMARKS, 'voc21', voc21)
    after = load_generator().expected_files()
    voc_ds = os.path.join('configs', '_base_', 'datasets', 'voc21.py')
    assert 'scale=(2048, 448)' in before[voc_ds] and 'scale=(2048, 512)' in after[voc_ds]
    leaf = os.path.join('configs', 'clearclip', 'clearclip_vit-b16_voc21.py')
    assert 'prob_thd=0.5,' in before[leaf] and 'prob_thd=0.35,' in after[leaf]
    # every other benchmark's dataset config changes only in its resize
    for key in benchmarks.BENCHMARKS:
        rel = os.path.join('configs', '_base_', 'datasets', f'{key}.py')
        assert before[rel].replace('(2048, 448)', '(2048, 512)').replace('448 unless', '512 unless') == after[rel]


def test_base_model_config_follows_the_protocol(monkeypatch):
    from clearclip_seg.protocol import constants
    rel = os.path.join('configs', '_base_', 'models', 'clearclip_vit-b16.py')
    before = load_generator().expected_files()[rel]
    monkeypatch.setattr(constants, 'LOGIT_SCALE', 40.0)
    monkeypatch.setattr(constants, 'SLIDE_CROP', 336)
    monkeypatch.setattr(constants, 'SLIDE_STRIDE', 112)
    monkeypatch.setattr(constants, 'CLIP_MEAN', (123.456, 111.111, 100.001))
    after = load_generator().expected_files()[rel]
    assert 'logit_scale=50.0,' in before and 'crop_size=(448, 448), stride=(224, 224)' in before
    assert 'mean=[122.771, 116.746, 104.094],' in before
    expected = (before.replace('logit_scale=50.0,', 'logit_scale=40.0,')
                .replace('crop_size=(448, 448), stride=(224, 224)', 'crop_size=(336, 336), stride=(112, 112)')
                .replace('mean=[122.771, 116.746, 104.094],', 'mean=[123.456, 111.111, 100.001],'))
    assert after == expected
