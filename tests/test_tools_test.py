"""tools/test.py: the command line once end to end (a subprocess); the rest through ``clearclip_seg.apis.evaluate``."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clearclip_seg.apis import ConfigError, evaluate
from helpers import ROOT, confusion_miou, make_voc2012, tiny_cfg_options, tiny_options

CONFIG = 'configs/clearclip/clearclip_vit-b16_voc21.py'


def run_tool(args, env=None, check=True):
    env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'test.py'), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'tools/test.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


@pytest.mark.parametrize('config,key,ncls,rzl,via', [
    pytest.param(CONFIG, 'voc21', 21, False, 'command line', marks=pytest.mark.slow),  # a subprocess
    ('configs/clearclip/clearclip_vit-b16_voc20.py', 'voc20', 20, True, 'api'),
])
def test_voc_end_to_end_miou_and_record(tmp_path, config, key, ncls, rzl, via):
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root))
    preds = tmp_path / 'preds'
    record_path = tmp_path / 'work' / 'record.json'
    if via == 'command line':
        proc = run_tool([config, '--work-dir', str(tmp_path / 'work'), '--out', str(preds), *tiny_options(root)])
        assert 'mIoU' in proc.stdout and f'record: {record_path}' in proc.stdout
        assert not [ln for ln in proc.stderr.splitlines() if 'prefix is not set' in ln or 'Warning' in ln]
    else:
        evaluate(os.path.join(ROOT, config), tiny_cfg_options(root), work_dir=str(tmp_path / 'work'),
                 predictions=str(preds))
    rec = json.loads(record_path.read_text())
    miou, iou, aacc = confusion_miou([(preds / f'{i}.png', root / 'SegmentationClass' / f'{i}.png') for i in ids],
                                     ncls, rzl)
    assert rec['complete'] is True
    assert rec['benchmark'] == key
    assert rec['dataset']['num_images'] == len(ids)
    assert rec['metrics']['mIoU'] == pytest.approx(miou, abs=1e-6)
    assert rec['metrics']['aAcc'] == pytest.approx(aacc, abs=1e-6)
    assert rec['metrics']['mmseg']['mIoU'] == pytest.approx(miou, abs=0.006)
    classes = rec['dataset']['classes']
    assert len(classes) == ncls
    for c, v in zip(classes, iou):
        assert (rec['metrics']['IoU'][c] is None) == bool(np.isnan(v))
        if not np.isnan(v):
            assert rec['metrics']['IoU'][c] == pytest.approx(v, abs=1e-6)
    assert rec['model']['arch'] == 'clearclip-tiny-vit'
    assert rec['model']['last_block'] == dict(attn='qq', residual=False, ffn=False)
    assert rec['model']['vocabulary']['name'] == key
    assert rec['model']['prob_thd'] == (0.5 if key == 'voc21' else 0.0)
    assert rec['protocol']['resize'] == [2048, 448]
    assert rec['protocol']['crop'] == [448, 448] and rec['protocol']['stride'] == [224, 224]
    assert rec['timing']['images_per_s'] > 0
    assert rec['versions']['mmseg'] == '1.2.2'
    assert 'ClearCLIPSegmentor' in rec['config']['resolved']
    # the saved predictions scored later (tools/score.py, or the API): the live run's record, exactly
    if via == 'command line':
        load_tool('score').main([str(preds), '--config', config, '--work-dir', str(tmp_path / 'work'),
                                 '--record', str(tmp_path / 'scored.json'), *tiny_options(root)])
    else:
        from clearclip_seg.apis import score_predictions
        score_predictions(str(preds), os.path.join(ROOT, config), tiny_cfg_options(root),
                          work_dir=str(tmp_path / 'work'), record_path=str(tmp_path / 'scored.json'))
    later = json.loads((tmp_path / 'scored.json').read_text())
    assert later['predictions'] == str(preds) and later['metrics'] == rec['metrics']
    drop = ('created', 'timing', 'predictions')
    assert {k: v for k, v in later.items() if k not in drop} == {k: v for k, v in rec.items() if k not in drop}


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'_tools_test_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_format_only_saves_the_predictions_of_a_scored_run(tmp_path):
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root), sizes=((40, 56), (48, 40)))
    config = os.path.join(ROOT, 'configs/clearclip/clearclip_vit-b16_voc20.py')
    scored, only = tmp_path / 'scored', tmp_path / 'only'
    evaluate(config, tiny_cfg_options(root), work_dir=str(tmp_path / 'w1'), predictions=str(scored))
    out = evaluate(config, tiny_cfg_options(root), work_dir=str(tmp_path / 'w2'), predictions=str(only),
                   format_only=True)
    assert out == dict(format_only=True, predictions=str(only), benchmark='voc20', num_images=2,
                       wall_s=out['wall_s'])
    assert not (tmp_path / 'w2' / 'record.json').exists()
    for i in ids:
        assert (only / f'{i}.png').read_bytes() == (scored / f'{i}.png').read_bytes()
    # MMSeg's own switch works the same
    cfg_only = tmp_path / 'cfg_only'
    evaluate(config, tiny_cfg_options(root, **{'test_evaluator.format_only': True,
                                               'test_evaluator.output_dir': str(cfg_only)}),
             work_dir=str(tmp_path / 'w3'))
    assert sorted(os.listdir(cfg_only)) == sorted(os.listdir(only))


def test_format_only_and_score_bad_input_exit_2(tmp_path, capsys):
    root = tmp_path / 'VOC2012'
    make_voc2012(str(root), sizes=((40, 40),))
    test, score = load_tool('test'), load_tool('score')
    for tool, argv in ((test, [CONFIG, '--format-only', '--work-dir', str(tmp_path / 'w'), *tiny_options(root)]),
                       (test, [CONFIG, '--work-dir', str(tmp_path / 'w'),
                               *tiny_options(root, 'test_evaluator.format_only=True')]),
                       (score, [str(tmp_path / 'nothing'), '--config', CONFIG, *tiny_options(root)]),
                       (score, [str(tmp_path), '--config', CONFIG, '--work-dir', str(tmp_path / 'w'),
                                *tiny_options(root)])):
        with pytest.raises(SystemExit) as e:
            tool.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith('error: '), err
    assert 'needs a folder' in err[0] or 'not found' in err[0]


def test_predictions_past_255_classes_are_16_bit_and_read_back(tmp_path):
    """MMSeg's convention (uint8 ids) where ids fit; 16-bit PNGs past 255; reduce_zero_label files hold id + 1."""
    import torch
    from clearclip_seg.evaluation.iou_metric import ClearCLIPIoUMetric
    from clearclip_seg.predictions import load_prediction
    labels = np.array([[0, 299, 256], [255, 7, 1]])
    metric = ClearCLIPIoUMetric(output_dir=str(tmp_path / 'p'))
    metric.dataset_meta = dict(classes=[f'c{i}' for i in range(300)])
    sample = dict(pred_sem_seg=dict(data=torch.from_numpy(labels)[None]), img_path='/x/img_1.jpg',
                  gt_sem_seg=dict(data=torch.from_numpy(labels)[None]), seg_map_path='/x/img_1.png')
    metric.process({}, [sample])
    with Image.open(tmp_path / 'p' / 'img_1.png') as im:
        assert im.mode == 'I;16'
    assert np.array_equal(load_prediction(str(tmp_path / 'p' / 'img_1.png')), labels)
    metric = ClearCLIPIoUMetric(output_dir=str(tmp_path / 'q'))
    metric.dataset_meta = dict(classes=[f'c{i}' for i in range(150)])
    small = labels % 150
    metric.process({}, [dict(sample, pred_sem_seg=dict(data=torch.from_numpy(small)[None]),
                             gt_sem_seg=dict(data=torch.from_numpy(small)[None]), reduce_zero_label=True)])
    with Image.open(tmp_path / 'q' / 'img_1.png') as im:
        assert im.mode == 'L' and np.array_equal(np.array(im), small + 1)
    assert np.array_equal(load_prediction(str(tmp_path / 'q' / 'img_1.png'), reduce_zero_label=True), small)


def test_missing_data_root_and_vocab_mismatch(tmp_path):
    config = os.path.join(ROOT, CONFIG)
    with pytest.raises(ConfigError) as err:
        evaluate(config, tiny_cfg_options(tmp_path / 'nowhere'), work_dir=str(tmp_path / 'w'))
    assert 'python tools/prepare_data.py voc' in str(err.value) and 'nowhere' in str(err.value)
    root = tmp_path / 'VOC2012'
    make_voc2012(str(root), sizes=((40, 40),))
    with pytest.raises(ConfigError, match="vocabulary 'voc20' \\(model.vocabulary\\) has 20 classes but dataset "
                                          'PascalVOCDataset has 21'):
        evaluate(config, tiny_cfg_options(root, **{'model.vocabulary': 'voc20'}), work_dir=str(tmp_path / 'w'))


def test_show_dir_panels_are_the_scored_predictions(tmp_path):
    from clearclip_seg.visualization import colorize, make_palette
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root), sizes=((60, 90), (50, 40), (40, 40)))
    preds, show = tmp_path / 'preds', tmp_path / 'show'
    evaluate(os.path.join(ROOT, CONFIG), tiny_cfg_options(root, **{'test_evaluator.output_dir': str(preds),
                                                                   'model.prob_thd': 0.0}),
             work_dir=str(tmp_path / 'w'), show_dir=str(show), show_n=2)
    saved = sorted(f for f in os.listdir(show) if f.endswith('.png'))   # labels/: the report's label maps
    assert saved == sorted(i + '.png' for i in ids[:2])
    palette = make_palette(21)
    for i in ids[:2]:
        panel = np.array(Image.open(show / f'{i}.png').convert('RGB'))
        pred = np.array(Image.open(preds / f'{i}.png'))
        h, w = pred.shape
        x0 = 2 * (w + 4)                      # image | gt | prediction, 4 px gaps
        assert np.array_equal(panel[16:16 + h, x0:x0 + w], colorize(pred, palette))
