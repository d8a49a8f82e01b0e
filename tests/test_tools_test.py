"""tools/test.py end to end on a synthetic VOC2012-layout dataset."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY_ARCH, make_voc2012

CONFIG = 'configs/clearclip/clearclip_vit-b16_voc21.py'


def tiny_options(data_root, *extra):
    return ['--cfg-options', f'test_dataloader.dataset.data_root={data_root}',
            f'model.clip.arch_file={TINY_ARCH}', 'model.clip.arch=clearclip-tiny-vit',
            'model.clip.pretrained=None', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', *extra]


def run_tool(args, env=None, check=True):
    env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'test.py'), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'tools/test.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def confusion_miou(pred_dir, gt_dir, ids, num_classes, reduce_zero_label=False):
    """Independent mIoU: a numpy confusion matrix over all images."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    for i in ids:
        gt = np.array(Image.open(os.path.join(gt_dir, i + '.png'))).astype(np.int64)
        pred = np.array(Image.open(os.path.join(pred_dir, i + '.png'))).astype(np.int64)
        if reduce_zero_label:  # mmseg saves reduced predictions + 1
            gt = np.where(gt == 0, 255, gt - 1)
            gt[gt == 254] = 255
            pred = pred - 1
        valid = gt != 255
        conf += np.bincount(gt[valid] * num_classes + pred[valid],
                            minlength=num_classes ** 2).reshape(num_classes, num_classes)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = inter / union
    return np.nanmean(iou) * 100, iou * 100, inter.sum() / conf.sum() * 100


@pytest.mark.parametrize('config,key,ncls,rzl', [
    (CONFIG, 'voc21', 21, False),
    ('configs/clearclip/clearclip_vit-b16_voc20.py', 'voc20', 20, True),
])
def test_voc_end_to_end_miou_and_record(tmp_path, config, key, ncls, rzl):
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root))
    preds = tmp_path / 'preds'
    record_path = tmp_path / 'work' / 'record.json'
    proc = run_tool([config, '--work-dir', str(tmp_path / 'work'),
                     *tiny_options(root, f'test_evaluator.output_dir={preds}')])
    assert 'mIoU' in proc.stdout and f'record: {record_path}' in proc.stdout
    rec = json.loads(record_path.read_text())
    miou, iou, aacc = confusion_miou(str(preds), str(root / 'SegmentationClass'), ids, ncls, rzl)
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
    proc = run_tool([CONFIG, '--work-dir', str(tmp_path / 'w'), *tiny_options(tmp_path / 'nowhere')], check=False)
    assert proc.returncode == 2
    assert 'python tools/prepare_data.py voc' in proc.stderr and 'nowhere' in proc.stderr
    root = tmp_path / 'VOC2012'
    make_voc2012(str(root), sizes=((40, 40),))
    proc = run_tool([CONFIG, '--work-dir', str(tmp_path / 'w'), *tiny_options(root, 'model.vocabulary=voc20')],
                    check=False)
    assert proc.returncode == 2
    assert "vocabulary 'voc20' (model.vocabulary) has 20 classes but dataset PascalVOCDataset has 21" in proc.stderr


def test_show_dir_panels_are_the_scored_predictions(tmp_path):
    from clearclip_seg.visualization import colorize, make_palette
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root), sizes=((60, 90), (50, 40), (40, 40)))
    preds, show = tmp_path / 'preds', tmp_path / 'show'
    run_tool([CONFIG, '--work-dir', str(tmp_path / 'w'), '--show-dir', str(show), '--show-n', '2',
              *tiny_options(root, f'test_evaluator.output_dir={preds}', 'model.prob_thd=0.0')])
    saved = sorted(os.listdir(show))
    assert saved == sorted(i + '.png' for i in ids[:2])
    palette = make_palette(21)
    for i in ids[:2]:
        panel = np.array(Image.open(show / f'{i}.png').convert('RGB'))
        pred = np.array(Image.open(preds / f'{i}.png'))
        h, w = pred.shape
        x0 = 2 * (w + 4)                      # image | gt | prediction, 4 px gaps
        assert np.array_equal(panel[16:16 + h, x0:x0 + w], colorize(pred, palette))
