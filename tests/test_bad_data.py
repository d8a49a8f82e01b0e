"""Issue 20, the data side: labels, split files, image orientation, nothing to score, odd folders and shapes.

Each bad case stops ``tools/test.py`` (in-process) with exit code 2 and one line naming the
file, line or value, and ``tools/check_data.py`` names the same culprit; the cases that MMSeg
would read correctly, or can be made to, give the number a plain numpy computation gives.
Tiny random CLIP, synthetic data in the real layouts.
"""
import importlib.util
import os
import shutil
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, TINY_ARCH, TINY_NAME, confusion_miou, make_voc2012

CONFIGS = {key: os.path.join(ROOT, 'configs', 'clearclip', f'clearclip_vit-b16_{key}.py')
           for key in ('voc21', 'voc20', 'coco_object')}


@pytest.fixture(scope='module')
def tools():
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import check_data  # by its name: its worker processes unpickle functions by module
    spec = importlib.util.spec_from_file_location('_bad_data_test', os.path.join(ROOT, 'tools', 'test.py'))
    test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test)
    return {'test': test, 'check_data': check_data}


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
    """Clean synthetic VOC2012 and COCO-Object trees shared by the module (copied before any change)."""
    from clearclip_seg.synthetic import write_benchmark
    base = tmp_path_factory.mktemp('clean')
    return {'voc21': (base / 'VOC2012', make_voc2012(str(base / 'VOC2012'), sizes=((40, 40), (48, 64)))),
            'coco_object': (base / 'coco', write_benchmark('coco_object', str(base / 'coco'), sizes=((40, 40),)))}


@pytest.fixture
def voc(clean, tmp_path):
    root, ids = clean['voc21']
    shutil.copytree(root, tmp_path / 'VOC2012')
    return tmp_path / 'VOC2012', ids


def run(tools, capsys, root, work, *extra, key='voc21'):
    """``tools/test.py`` on the tiny CLIP with small inputs: (exit code, record or None, stderr)."""
    args = [CONFIGS[key], '--work-dir', str(work), '--cfg-options', f'test_dataloader.dataset.data_root={root}',
            f'model.clip.arch_file={TINY_ARCH}', f'model.clip.arch={TINY_NAME}', 'model.clip.pretrained=None',
            'model.templates=a_photo_of', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', 'test_dataloader.dataset.pipeline.1.scale=(256,64)',
            'model.test_cfg.crop_size=(64,64)', 'model.test_cfg.stride=(32,32)', *extra]
    capsys.readouterr()
    try:
        record, code = tools['test'].main(args), 0
    except SystemExit as e:
        record, code = None, e.code
    return code, record, capsys.readouterr().err


def check_data(tools, capsys, root, count, key='voc21'):
    """``tools/check_data.py`` on one benchmark: (exit code, stdout)."""
    capsys.readouterr()
    code = tools['check_data'].main([key, '--data-root-override', f'{key}={root}', '--expected-count', str(count),
                                     '--nproc', '1'])
    return code, capsys.readouterr().out


@pytest.fixture(scope='module')
def good(tools, clean, tmp_path_factory):
    """The clean run's metrics: what every correctly read variant of the same data must give."""
    class Quiet:  # capsys is function-scoped
        def readouterr(self):
            return SimpleNamespace(out='', err='')
    code, record, _ = run(tools, Quiet(), clean['voc21'][0], tmp_path_factory.mktemp('good'))
    assert code == 0
    return record['metrics']


# -- the culprits ------------------------------------------------------------------------------
def _label_path(root, name):
    return root / 'SegmentationClass' / f'{name}.png'


def _split_path(root):
    return root / 'ImageSets' / 'Segmentation' / 'val.txt'


def _image_path(root, name):
    return root / 'JPEGImages' / f'{name}.jpg'


def _wide_label(root, ids, value=261):
    path = _label_path(root, ids[0])
    lab = np.array(Image.open(path)).astype(np.uint16)
    lab[3, 3] = value
    Image.fromarray(lab).save(path)  # a 16-bit PNG (PIL mode I;16)
    return path


def _orient(root, ids, orientation):
    path = _image_path(root, ids[1])
    with Image.open(path) as im:
        exif = im.getexif()
        exif[0x0112] = orientation
        im.save(path, exif=exif.tobytes(), quality=95)
    return path


def _all_ignore(root, ids):
    for name in ids:
        path = _label_path(root, name)
        Image.fromarray(np.full_like(np.array(Image.open(path)), 255)).save(path)


def _mutate_16bit(root, ids):
    path = _wide_label(root, ids)
    return (path, '[261]', "8-bit cast would score as [5]", '0..20 and 255'), (f'{ids[0]}.png (values [261])',)


def _mutate_duplicate(root, ids):
    _split_path(root).write_text(f'{ids[0]}\n{ids[1]}\n{ids[0]}\n')
    return ((_split_path(root), f"lists id '{ids[0]}' twice (lines 1 and 3)", 'scored twice'),
            (f"lists id '{ids[0]}' twice",))


def _mutate_blank_line(root, ids):
    _split_path(root).write_text(f'{ids[0]}\n  \n{ids[1]}\n')
    return (_split_path(root), '1 blank line (line 2)'), ('1 blank line (line 2)',)


def _mutate_turned(root, ids):
    img = _orient(root, ids, 6)  # 64x48 stored, decoded 48x64
    return ((_label_path(root, ids[1]), img, 'its image is 48x64', 'EXIF orientation 6'),
            (f'{ids[1]}.jpg (orientation 6)',))


def _mutate_all_ignore(root, ids):
    _all_ignore(root, ids)
    return ((f"at '{root}'", 'no label of voc21', 'hold only 255', 'tools/check_data.py voc21'),
            ('none of the 2 label files read holds a pixel to score (only 255)',))


def _forbid_building_the_model(monkeypatch):
    from mmengine.runner import Runner

    def refuse(*args, **kwargs):
        raise AssertionError('the model was built before the data were checked')
    monkeypatch.setattr(Runner, 'from_cfg', refuse)


@pytest.mark.parametrize('mutate,early', [
    (_mutate_16bit, False),
    (_mutate_duplicate, True),
    (_mutate_blank_line, True),
    (_mutate_turned, False),
    (_mutate_all_ignore, True),
], ids=['16bit-label', 'duplicate-id', 'blank-line', 'exif-turned', 'all-ignore'])
def test_bad_data_is_named_by_test_and_check_data(tools, capsys, tmp_path, voc, monkeypatch, mutate, early):
    root, ids = voc
    names, check_names = mutate(root, ids)
    if early:  # refused before the model is built
        _forbid_building_the_model(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        code, _, err = run(tools, capsys, root, tmp_path / 'work')
    lines = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert code == 2 and len(lines) == 1, err[-3000:]
    for n in names:
        assert str(n) in lines[0], lines[0]
    monkeypatch.undo()
    code, out = check_data(tools, capsys, root, 2)
    assert code == 1 and 'voc21: FAILED' in out, out
    for n in check_names:
        assert n in out, out


def test_all_ignore_with_reduce_zero_label(tools, capsys, tmp_path, voc, monkeypatch):
    """VOC20 ignores 0 too: labels holding only 0 and 255 have nothing to score."""
    root, ids = voc
    for name in ids:
        path = _label_path(root, name)
        lab = np.array(Image.open(path))
        Image.fromarray(np.where(lab == 255, 255, 0).astype(np.uint8)).save(path)
    _forbid_building_the_model(monkeypatch)
    code, _, err = run(tools, capsys, root, tmp_path / 'work', key='voc20')
    assert code == 2 and 'no label of voc20' in err and 'hold only 255 and 0 (reduce_zero_label)' in err, err
    monkeypatch.undo()
    code, out = check_data(tools, capsys, root, 2, key='voc20')
    assert code == 1 and 'holds a pixel to score (only 255 and 0 (reduce_zero_label))' in out, out


def test_symlink_loop_in_the_image_folder(tools, capsys, tmp_path, clean, monkeypatch):
    src, _ = clean['coco_object']
    root = tmp_path / 'coco'
    shutil.copytree(src, root)
    link = root / 'images' / 'val2017' / 'sub' / 'back'
    link.parent.mkdir()
    link.symlink_to('..')
    _forbid_building_the_model(monkeypatch)
    code, _, err = run(tools, capsys, root, tmp_path / 'work', key='coco_object')
    line = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert code == 2 and len(line) == 1 and f"'{link}' is a symbolic link to" in line[0] and 'loop' in line[0], err
    monkeypatch.undo()
    code, out = check_data(tools, capsys, root, 1, key='coco_object')
    assert code == 1 and f"'{link}' is a symbolic link" in out, out


# -- read right: the same number as the clean data ---------------------------------------------
def _wide_in_range(root, ids):
    path = _label_path(root, ids[0])
    Image.fromarray(np.array(Image.open(path)).astype(np.uint16)).save(path)  # 16 bits, every value <= 255


def _spaces_and_crlf(root, ids):
    _split_path(root).write_bytes(''.join(f'  {i} \t\r\n' for i in ids).encode())



@pytest.mark.parametrize('mutate', [_wide_in_range, _spaces_and_crlf], ids=['16bit-in-range', 'split-spaces-crlf'])
def test_harmless_variants_score_as_the_clean_data(tools, capsys, tmp_path, voc, good, mutate):
    root, ids = voc
    mutate(root, ids)
    code, record, err = run(tools, capsys, root, tmp_path / 'work')
    assert code == 0, err[-3000:]
    assert record['metrics'] == good
    assert check_data(tools, capsys, root, 2)[0] == 0


def test_oriented_image_of_the_same_size_warns_once_with_the_count(tools, capsys, tmp_path, voc):
    root, ids = voc
    img = _orient(root, ids, 3)  # turned by 180 degrees: same size, scored as decoded (as the official loader)
    with pytest.warns(UserWarning, match=r"1 of the 2 images of voc21 carry an EXIF orientation tag") as caught:
        code, record, err = run(tools, capsys, root, tmp_path / 'work')
    assert code == 0, err[-3000:]
    ours = [str(w.message) for w in caught if 'EXIF orientation' in str(w.message)]
    assert len(ours) == 1 and str(img) in ours[0]
    code, out = check_data(tools, capsys, root, 2)
    assert code == 1 and f'1 images carry an EXIF orientation tag' in out and f'{ids[1]}.jpg (orientation 3)' in out


def test_paths_with_spaces(tools, capsys, tmp_path, clean, good):
    root = tmp_path / 'my data' / 'VOC 2012'
    shutil.copytree(clean['voc21'][0], root)
    work = tmp_path / 'my runs' / 'run 1'
    code, record, err = run(tools, capsys, root, work)
    assert code == 0, err[-3000:]
    assert record['metrics'] == good and (work / 'record.json').is_file()
    assert check_data(tools, capsys, root, 2)[0] == 0


def test_thin_images_are_scored_like_any_other(tools, capsys, tmp_path):
    """1-pixel-thin and 1x1 images: MMSeg squeezes their labels to 1-D; they are scored as 2-D maps."""
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root), sizes=((1, 60), (60, 1), (1, 1), (40, 40)), seed=3)
    preds = tmp_path / 'preds'
    code, record, err = run(tools, capsys, root, tmp_path / 'work', f'test_evaluator.output_dir={preds}')
    assert code == 0, err[-3000:]
    pairs = [(preds / f'{i}.png', _label_path(root, i)) for i in ids]
    assert [np.array(Image.open(p)).shape for p, _ in pairs] == [(1, 60), (60, 1), (1, 1), (40, 40)]
    miou, _, aacc = confusion_miou(pairs, 21)
    assert record['metrics']['mIoU'] == pytest.approx(miou, abs=1e-9)
    assert record['metrics']['aAcc'] == pytest.approx(aacc, abs=1e-9)
    labels = np.concatenate([np.array(Image.open(g)).ravel() for _, g in pairs])
    assert sum(record['metrics']['area_label']) == np.count_nonzero(labels != 255)


def test_an_image_too_thin_for_the_resize_is_named(tools, capsys, tmp_path):
    """1x600 under the test scale (256, 64) would be resized to 256x0: refused, saying so."""
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(str(root), sizes=((1, 600), (40, 40)))
    code, _, err = run(tools, capsys, root, tmp_path / 'work')
    lines = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert f"image '{_image_path(root, ids[0])}' of voc21 is 600x1 (W x H): too thin for the resize to (256, 64) " \
           '(keep ratio), which would make it 256x0' in lines[0]
