"""tools/test.py: the command line once end to end (a subprocess); the rest through ``clearclip_seg.apis.evaluate``."""
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
    (CONFIG, 'voc21', 21, False, 'command line'),
    ('configs/clearclip/clearclip_vit-b16_voc20.py', 'voc20', 20, True, 'api'),
])
def test_voc_end_to_end_miou_and_record(tmp_path, config, key, ncls, rzl, via):
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root))
    preds = tmp_path / 'preds'
    record_path = tmp_path / 'work' / 'record.json'
    if via == 'command line':
        proc = run_tool([config, '--work-dir', str(tmp_path / 'work'),
                         *tiny_options(root, f'test_evaluator.output_dir={preds}')])
        assert 'mIoU' in proc.stdout and f'record: {record_path}' in proc.stdout
    else:
        evaluate(os.path.join(ROOT, config), tiny_cfg_options(root, **{'test_evaluator.output_dir': str(preds)}),
                 work_dir=str(tmp_path / 'work'))
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
