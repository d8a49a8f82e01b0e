"""Data preparation (``clearclip_seg.data_prep``): label conversions, atomic writes, re-run skipping;
``tools/prepare_data.py`` once as a subprocess.

CPU only, no network, no mmseg.
"""
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearclip_seg import data_prep as P
from helpers import ROOT
from helpers import vocabulary_lines as read_vocabulary


def _png(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode='L').save(path)


def _read(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def _hidden(folder: Path):
    return [p.name for p in folder.rglob('.*')]


# ---------------------------------------------------------------- COCO-Stuff mapping

def test_coco_stuff_tables_match_vocabularies():
    assert len(P.COCO_THINGS) == 80 and len(P.COCO_STUFFS) == 91
    ids = [cid for cid, _ in P.COCO_STUFF_CLASSES]
    assert ids == sorted(ids) and len(set(ids)) == 171
    assert [cid for cid, _ in P.COCO_STUFFS] == list(range(92, 183))
    stuff_vocab = read_vocabulary('coco_stuff164k')
    assert [n.replace(' ', '') for _, n in P.COCO_STUFF_CLASSES] == stuff_vocab
    assert [n for _, n in P.COCO_THINGS] == read_vocabulary('coco_object')[1:]


def test_raw_to_train_ids_spot_checks_and_bijective():
    lut = P.RAW_TO_TRAIN_LUT
    kept = np.flatnonzero(lut != 255)
    assert len(kept) == 171
    # bijective on the kept raw ids, and order preserving: train ids 0..170 in raw-id order
    assert list(lut[kept]) == list(range(171))
    raw = np.array([[0, 89, 91, 181], [255, 90, 11, 12]], dtype=np.uint8)
    out = P.raw_stuff_to_train_ids(raw)
    assert out.dtype == np.uint8
    # person, toothbrush, banner (first stuff), wood (last stuff)
    # 255 stays 255; raw 90 (COCO id 91) and raw 11 (COCO id 12) are unused; raw 12 = stop sign
    np.testing.assert_array_equal(out, [[0, 79, 80, 170], [255, 255, 255, 11]])
    # non-uint8 input and out-of-range values
    wide = np.array([-1, 0, 300, 181], dtype=np.int32)
    np.testing.assert_array_equal(P.raw_stuff_to_train_ids(wide), [255, 0, 255, 170])


# ---------------------------------------------------------------- COCO-Object

def test_coco_object_from_train_ids():
    train = np.array([[0, 79, 80, 170],
                      [255, 5, 100, 11]], dtype=np.uint8)
    expected = np.array([[1, 80, 0, 0],
                         [0, 6, 0, 12]], dtype=np.uint8)
    out = P.stuff_to_object_labels(train)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(P.train_ids_to_object_labels(train), expected)


def test_coco_object_from_raw_ids():
    raw = np.array([[0, 89, 91, 181],
                    [255, 12, 90, 2],
                    [11, 1, 88, 182]], dtype=np.uint8)
    expected = np.array([[1, 80, 0, 0],     # person, toothbrush, banner, wood
                         [0, 12, 0, 3],     # unlabelled, stop sign (COCO id 13), unused 91, car
                         [0, 2, 79, 0]],    # unused 12, bicycle, hair drier, 182 (not a class)
                        dtype=np.uint8)
    np.testing.assert_array_equal(P.stuff_to_object_labels(raw, raw=True), expected)


def test_coco_object_raw_and_train_paths_agree_on_every_value():
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    via_raw = P.stuff_to_object_labels(raw, raw=True)
    via_train = P.stuff_to_object_labels(P.raw_stuff_to_train_ids(raw))
    np.testing.assert_array_equal(via_raw, via_train)
    assert sorted(np.unique(via_raw)) == list(range(81))
    # every value 1..80 comes from exactly one raw id
    vals, counts = np.unique(via_raw[via_raw > 0], return_counts=True)
    assert list(vals) == list(range(1, 81)) and set(counts) == {1}


# ---------------------------------------------------------------- Cityscapes, Context

def test_cityscapes_label_to_train_id():
    ids = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33], np.uint8)
    np.testing.assert_array_equal(P.cityscapes_label_to_train_id(ids), np.arange(19))
    void = np.array([0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 255], np.uint8)
    assert set(P.cityscapes_label_to_train_id(void)) == {255}
    np.testing.assert_array_equal(P.cityscapes_label_to_train_id(np.array([-1, 26], np.int16)), [255, 13])


def test_context_mapping_order_and_values():
    order = sorted(P.CONTEXT59_DETAIL_IDS, key=P.CONTEXT59_DETAIL_IDS.get)
    assert order == read_vocabulary('context59')
    mask = np.array([[0, 2, 458, 1], [397, 284, 459, 3]], dtype=np.float64)  # getMask gives floats
    out = P.context_mask_to_labels(mask)
    table = read_vocabulary('context59')
    np.testing.assert_array_equal(out, [[0, 1, 59, 0], [table.index('table') + 1, table.index('person') + 1, 0, 0]])
    assert out.dtype == np.uint8


# ---------------------------------------------------------------- atomic writes, re-runs

def test_atomic_save_png_leaves_nothing_on_failure(tmp_path, monkeypatch):
    dst = tmp_path / 'x.png'
    P.atomic_save_png(np.full((2, 3), 7, np.uint8), dst)
    np.testing.assert_array_equal(_read(dst), np.full((2, 3), 7))

    def boom(src, dst_):
        raise OSError('disk full')
    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(OSError):
        P.atomic_save_png(np.zeros((2, 2), np.uint8), tmp_path / 'y.png')
    assert not (tmp_path / 'y.png').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['x.png']  # no temp file left
    with pytest.raises(ValueError):
        P.atomic_save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / 'z.png')


def test_coco_conversions_rerun_convert_nothing(tmp_path):
    ann = tmp_path / 'annotations' / 'val2017'
    raws = {
        '000000000001': [[0, 89], [91, 255]],
        '000000000002': [[12, 181], [2, 90]],
        '000000000003': [[255, 255], [0, 0]],
    }
    for stem, arr in raws.items():
        _png(ann / f'{stem}.png', arr)
    (ann / '.000000000009.png.123.tmp').write_bytes(b'half-written leftover')

    r1 = P.convert_coco_stuff(ann, nproc=1)
    assert (r1.converted, r1.skipped, r1.total) == (3, 0, 3)
    np.testing.assert_array_equal(_read(ann / '000000000001_labelTrainIds.png'), [[0, 79], [80, 255]])
    r2 = P.convert_coco_stuff(ann, nproc=1)
    assert (r2.converted, r2.skipped) == (0, 3)

    o1 = P.convert_coco_object(ann, nproc=1)
    assert (o1.converted, o1.total) == (3, 3)
    np.testing.assert_array_equal(_read(ann / '000000000001_instanceTrainIds.png'), [[1, 80], [0, 0]])
    np.testing.assert_array_equal(_read(ann / '000000000002_instanceTrainIds.png'), [[12, 0], [3, 0]])
    assert P.convert_coco_object(ann, nproc=1).converted == 0
    # the raw path gives the same labels
    raw_dir = tmp_path / 'raw'
    for stem, arr in raws.items():
        _png(raw_dir / f'{stem}.png', arr)
    assert P.convert_coco_object(raw_dir, nproc=1, from_raw=True).converted == 3
    for stem in raws:
        np.testing.assert_array_equal(_read(raw_dir / f'{stem}_instanceTrainIds.png'),
                                      _read(ann / f'{stem}_instanceTrainIds.png'))
    assert _hidden(ann) == ['.000000000009.png.123.tmp']  # only the planted leftover


def test_conversion_with_worker_processes(tmp_path):
    ann = tmp_path / 'ann'
    for i in range(4):
        _png(ann / f'{i:012d}_labelTrainIds.png', [[i, 79 + i]])
    r = P.convert_coco_object(ann, nproc=2)
    assert r.converted == 4
    np.testing.assert_array_equal(_read(ann / '000000000001_instanceTrainIds.png'), [[2, 0]])
    assert P.convert_coco_object(ann, nproc=2).converted == 0


def test_cityscapes_table_conversion_rerun(tmp_path):
    gt = tmp_path / 'gtFine' / 'val'
    _png(gt / 'frankfurt' / 'frankfurt_000000_000294_gtFine_labelIds.png', [[7, 26], [0, 33]])
    _png(gt / 'lindau' / 'lindau_000000_000019_gtFine_labelIds.png', [[24, 4]])
    r = P.convert_cityscapes(gt, nproc=1, method='table')
    assert (r.converted, r.skipped) == (2, 0)
    out = gt / 'frankfurt' / 'frankfurt_000000_000294_gtFine_labelTrainIds.png'
    np.testing.assert_array_equal(_read(out), [[0, 13], [255, 18]])
    assert P.convert_cityscapes(gt, nproc=1, method='table').converted == 0


def test_missing_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(P.PrepareError, match='labelTrainIds'):
        P.convert_coco_object(tmp_path)
    with pytest.raises(P.PrepareError, match='not found'):
        P.ensure_archive('voc2012', tmp_path, no_download=True)
    with pytest.raises(P.PrepareError, match='login'):
        P.ensure_archive('cityscapes_gt', tmp_path)


# ---------------------------------------------------------------- archives

def test_extract_subtree_zip_and_tar(tmp_path):
    z = tmp_path / 'stuff.zip'
    with zipfile.ZipFile(z, 'w') as zf:
        zf.writestr('train2017/1.png', b'a')
        zf.writestr('val2017/2.png', b'b')
        zf.writestr('val2017/3.png', b'c')
    dest = tmp_path / 'data' / 'annotations' / 'val2017'
    assert P.extract_subtree(z, 'val2017/', dest) is True
    assert sorted(p.name for p in dest.iterdir()) == ['2.png', '3.png']
    assert P.extract_subtree(z, 'val2017/', dest) is False  # already there
    assert not list((tmp_path / 'data' / 'annotations').glob('.tmp*'))

    t = tmp_path / 'voc.tar'
    with tarfile.open(t, 'w') as tf:
        for name, data in [('TrainVal/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt', b'x\n'),
                           ('TrainVal/VOCdevkit/VOC2012/JPEGImages/x.jpg', b'jpg')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    vdest = tmp_path / 'data' / 'VOCdevkit' / 'VOC2012'
    assert P.extract_subtree(t, 'VOCdevkit/VOC2012/', vdest) is True  # found one level deeper
    assert (vdest / 'ImageSets' / 'Segmentation' / 'val.txt').read_bytes() == b'x\n'
    with pytest.raises(P.PrepareError, match='no members'):
        P.extract_subtree(t, 'VOCdevkit/VOC2010/', tmp_path / 'other')
    assert not (tmp_path / 'other').exists()


def test_verify_archive_records_and_checks(tmp_path):
    f = tmp_path / 'thing.zip'
    f.write_bytes(b'hello')
    entry = P.verify_archive(f)
    rec = json.loads((tmp_path / P.CHECKSUM_RECORD).read_text())
    assert rec['thing.zip']['sha256'] == entry['sha256'] == \
        '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'
    P.verify_archive(f, ('md5', '5d41402abc4b2a76b9719d911017c592'))
    with pytest.raises(P.PrepareError, match='expected'):
        P.verify_archive(f, ('md5', '0' * 32))


def test_main_coco_object_on_a_folder(tmp_path):
    def prepare(*argv):
        return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'prepare_data.py'), *argv],
                              capture_output=True, text=True, cwd=str(tmp_path), timeout=120)

    ann = tmp_path / 'masks'
    _png(ann / '000000000005_labelTrainIds.png', [[3, 170]])
    argv = ['coco_object', '--ann-dir', str(ann), '--data-root', str(tmp_path / 'data'), '--nproc', '1',
            '--no-download']
    assert prepare(*argv).returncode == 0
    np.testing.assert_array_equal(_read(ann / '000000000005_instanceTrainIds.png'), [[4, 0]])
    proc = prepare(*argv)
    assert proc.returncode == 0 and '0 written, 1 already there' in proc.stdout
    # a step whose archive is missing fails with exit code 2 and a one-line error
    proc = prepare('ade20k', '--data-root', str(tmp_path / 'data'), '--no-download')
    assert proc.returncode == 2 and 'ADEChallengeData2016.zip not found' in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [ln for ln in proc.stderr.splitlines()
                                                                       if ln.startswith('error: ade20k: ')]
    # a truncated archive: exit code 2, one line naming the archive and what was expected
    downloads = tmp_path / 'data' / 'downloads'
    downloads.mkdir(parents=True)
    zip_bytes = io.BytesIO()
    with zipfile.ZipFile(zip_bytes, 'w') as zf:
        zf.writestr('ADEChallengeData2016/images/validation/a.jpg', b'x' * 1000)
    (downloads / 'ADEChallengeData2016.zip').write_bytes(zip_bytes.getvalue()[:300])
    proc = prepare('ade20k', '--data-root', str(tmp_path / 'data'), '--no-download', '--no-verify')
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(downloads / 'ADEChallengeData2016.zip') in lines[0] and 'expected a zip archive' in lines[0]


def _tar_bytes(members, mode='w'):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize('name,content,says', [
    ('v.tar', lambda: _tar_bytes({'VOCdevkit/VOC2012/a.jpg': bytes(range(256)) * 40})[:3000],
     'cannot be extracted (ReadError'),
    ('v.tar', lambda: _tar_bytes({'VOCdevkit/VOC2012/a.jpg': os.urandom(20000)}, 'w:gz')[:5000],
     'cannot be extracted'),
    ('v.zip', lambda: b'<html>404 Not Found</html>', 'not a zip or tar archive'),
    ('v.tar', lambda: b'', 'not a zip or tar archive'),
])
def test_damaged_archives_are_one_line_errors(tmp_path, name, content, says):
    arc = tmp_path / name
    arc.write_bytes(content())
    dest = tmp_path / 'out' / 'VOC2012'
    with pytest.raises(P.PrepareError) as info:
        P.extract_subtree(arc, 'VOCdevkit/VOC2012/', dest)
    msg = str(info.value)
    assert '\n' not in msg and msg.startswith(f'{arc}: ') and says in msg, msg
    assert f'expected a {"zip" if name.endswith(".zip") else "tar"} archive' in msg or 'expected a complete' in msg
    assert not dest.exists() and _hidden(tmp_path / 'out') == []  # nothing half-extracted left behind


def test_context_step_with_a_stub_detail_api(tmp_path, monkeypatch):
    """The context step end to end, with a stand-in for the Detail API (not installed here)."""
    import types
    root = tmp_path / 'data' / 'VOCdevkit' / 'VOC2010'
    imgs = {'train': ['2008_000002'], 'val': ['2008_000003', '2008_000007']}
    for stem in imgs['train'] + imgs['val']:
        (root / 'JPEGImages').mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / 'JPEGImages' / f'{stem}.jpg')
    (tmp_path / 'dl').mkdir()
    (tmp_path / 'dl' / 'trainval_merged.json').write_text('{}')
    calls = []

    class StubDetail:
        def __init__(self, annotation_file, image_folder, phase):
            calls.append(phase)

        def getImgs(self, phase=None):
            return [{'file_name': f'{s}.jpg', 'image_id': int(s.replace('_', ''))} for s in imgs[phase]]

        def getMask(self, img_id):
            return np.array([[0, 2, 458], [284, 1, 0]], dtype=np.float64)

    monkeypatch.setitem(sys.modules, 'detail', types.SimpleNamespace(Detail=StubDetail))
    opts = P.Options(data_root=tmp_path / 'data', download_dir=tmp_path / 'dl', nproc=1, no_download=True)
    assert P.prepare_context(opts) == ['context60']
    split_dir = root / 'ImageSets' / 'SegmentationContext'
    assert (split_dir / 'val.txt').read_text() == '2008_000003\n2008_000007\n'
    assert (split_dir / 'train.txt').read_text() == '2008_000002\n'
    person = read_vocabulary('context59').index('person') + 1
    np.testing.assert_array_equal(_read(root / 'SegmentationClassContext' / '2008_000007.png'),
                                  [[0, 1, 59], [person, 0, 0]])
    assert not (root / 'SegmentationClassContext' / '2008_000002.png').exists()  # train: only with --with-train
    from clearclip_seg.data_check import check_benchmark
    assert check_benchmark('context60', root, expected_count=2) == []
    # a re-run finds everything done and does not load the annotations again
    assert P.prepare_context(opts) == ['context60'] and calls == ['trainval']


def test_context_without_detail_api_says_how_to_install(tmp_path, monkeypatch):
    root = tmp_path / 'data' / 'VOCdevkit' / 'VOC2010' / 'JPEGImages'
    root.mkdir(parents=True)
    (tmp_path / 'dl').mkdir()
    (tmp_path / 'dl' / 'trainval_merged.json').write_text('{}')
    monkeypatch.setitem(sys.modules, 'detail', None)  # import detail -> ImportError
    opts = P.Options(data_root=tmp_path / 'data', download_dir=tmp_path / 'dl', no_download=True)
    with pytest.raises(P.PrepareError, match='pip install .*detail-api'):
        P.prepare_context(opts)
