"""Issue 13, "no silent wrong number, ever": bad inputs and faults on the tiny model and synthetic VOC data.

Each case either fails with exit code 2 and one line naming its culprit (the key, the
file, the value), or, for the cases that used to give a silently wrong result, asserts
the corrected behaviour. Evaluations run in-process (``tools/test.py``'s ``main``)
on one shared synthetic dataset; only the signal and lock cases start processes.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT, TINY_ARCH, TINY_NAME, make_voc2012, tiny_cfg_options

CONFIG = os.path.join(ROOT, 'configs', 'clearclip', 'clearclip_vit-b16_voc21.py')


def load_tool(name):
    if name == 'check_data':  # imported by its name: its worker processes unpickle functions by module
        sys.path.insert(0, os.path.join(ROOT, 'tools'))
        import check_data
        return check_data
    spec = importlib.util.spec_from_file_location(f'_bad_inputs_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tools():
    return {n: load_tool(n) for n in ('test', 'benchmark', 'check_data', 'collect_results', 'demo')}


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    """A clean synthetic VOC2012 tree shared by the module (copied before any mutation)."""
    root = tmp_path_factory.mktemp('voc') / 'VOC2012'
    ids = make_voc2012(str(root), sizes=((40, 40), (48, 64)))
    return root, ids


@pytest.fixture
def voc_copy(voc, tmp_path):
    root, ids = voc
    dst = tmp_path / 'VOC2012'
    shutil.copytree(root, dst)
    return dst, ids


def tiny(root, *extra):
    return ['--cfg-options', f'test_dataloader.dataset.data_root={root}', f'model.clip.arch_file={TINY_ARCH}',
            f'model.clip.arch={TINY_NAME}', 'model.clip.pretrained=None', 'model.templates=a_photo_of',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            # small inputs keep each evaluation well under a second on two cores
            'test_dataloader.dataset.pipeline.1.scale=(256,64)', 'model.test_cfg.crop_size=(64,64)',
            'model.test_cfg.stride=(32,32)', *extra]


def run_test_tool(tools, capsys, args):
    """``tools/test.py`` in-process: (exit code, the record or None, stderr)."""
    capsys.readouterr()
    try:
        record = tools['test'].main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        record, code = None, e.code
    return code, record, capsys.readouterr().err


def error_line(err):
    """The tool's error: exactly one line starting with 'error: '."""
    lines = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def assert_fails(tools, capsys, tmp_path, root, *extra, names=(), args=()):
    code, _, err = run_test_tool(tools, capsys, [CONFIG, '--work-dir', tmp_path / 'work', *args, *tiny(root, *extra)])
    assert code == 2, err[-2000:]
    line = error_line(err)
    for n in names:
        assert str(n) in line, line
    return line


# -- the baseline: a good run, readable record ------------------------------------------------------
@pytest.fixture(scope='module')
def good_record(tools, voc, tmp_path_factory):
    work = tmp_path_factory.mktemp('good')
    record = tools['test'].main([CONFIG, '--work-dir', str(work), *tiny(voc[0])])
    return record, work / 'record.json'


def test_good_run_record_is_group_readable_and_carries_its_identity(good_record, voc):
    record, path = good_record
    assert os.stat(path).st_mode & 0o777 == 0o644          # was 0600 (mkstemp)
    assert record['config']['identity']['dataset']['data_root'] == str(voc[0])
    assert record['config']['identity']['model']['clip']['arch_file'] == TINY_ARCH


# -- silent wrong results, now errors or correct ----------------------------------------------------
@pytest.mark.parametrize('option,key', [
    ('model.last_block.residual=no', 'model.last_block.residual'),      # M1: segmentor/method options
    ('model.last_block.ffn=off', 'model.last_block.ffn'),
    ('model.clip.quick_gelu=no', 'model.clip.quick_gelu'),
])
def test_string_booleans_are_errors(tools, capsys, tmp_path, voc, option, key):
    line = assert_fails(tools, capsys, tmp_path, voc[0], option, names=(key,))
    assert 'boolean' in line


def test_text_cache_key_covers_everything_that_changes_the_embeddings(tmp_path, monkeypatch):
    import open_clip

    from clearclip_seg.models.clip_loader import create_clip
    from clearclip_seg.models.text_classifier import cache_key, text_model_identity
    arch_file = tmp_path / f'{TINY_NAME}.json'
    shutil.copy(TINY_ARCH, arch_file)

    def build(quick_gelu=None, pretrained=None):
        torch.manual_seed(0)
        return create_clip(None, pretrained, arch_file=str(arch_file), quick_gelu=quick_gelu)[0]

    def key(model, pretrained=None, precision='fp32', tokenizer=None, queries=('cat', 'dog'), templates=('{}',)):
        tok = tokenizer or open_clip.get_tokenizer(TINY_NAME)
        parts = text_model_identity(model, TINY_NAME, pretrained, precision, tok)
        return cache_key(queries=list(queries), templates=list(templates), **parts)

    gelu, quick = build(False), build(True)
    base = key(gelu)
    # quick_gelu changes no tensor (same weights digest) but the activation: the old key collided
    from clearclip_seg.models.clip_loader import state_digest
    assert state_digest(gelu) == state_digest(quick)
    keys = {'base': base, 'quick_gelu': key(quick)}
    keys['templates'] = key(gelu, templates=('a photo of a {}.',))
    keys['vocabulary'] = key(gelu, queries=('cat', 'cow'))
    keys['precision'] = key(gelu, precision='bf16')
    keys['tokenizer'] = key(gelu, tokenizer=open_clip.SimpleTokenizer(context_length=32))
    ckpt = tmp_path / 'w.pt'
    torch.save(gelu.state_dict(), ckpt)
    keys['weights file'] = key(gelu, pretrained=str(ckpt))
    os.utime(ckpt, ns=(1, 1))                              # touched, same content: the same embeddings
    assert key(gelu, pretrained=str(ckpt)) == keys['weights file']
    torch.save({k: v + 1 for k, v in gelu.state_dict().items()}, ckpt)
    os.utime(ckpt, ns=(1, 1))                              # other content, same size and mtime
    keys['weights file content'] = key(gelu, pretrained=str(ckpt))
    monkeypatch.setattr(open_clip, '__version__', '0.0.0-test')
    keys['library version'] = key(gelu)
    monkeypatch.undo()
    # the architecture JSON's content, not only its name (same file name, edited content)
    cfg = json.loads(arch_file.read_text())
    cfg['text_cfg']['context_length'] = 32
    arch_file.write_text(json.dumps(cfg))
    short = build(False)
    keys['arch JSON + context length'] = key(short)
    assert short.context_length == 32                      # the edited file is what was built
    assert len(set(keys.values())) == len(keys), keys
    assert key(build(False)) == keys['arch JSON + context length']  # and the key is stable


def test_quick_gelu_flip_is_not_served_from_the_cache(tmp_path, monkeypatch):
    """Two segmentors differing only in quick_gelu: two cache entries, each equal to its uncached build."""
    from clearclip_seg.segmentor import ClearCLIPSegmentor

    def seg(quick_gelu, cache):
        torch.manual_seed(0)
        return ClearCLIPSegmentor(clip=dict(arch=None, arch_file=TINY_ARCH, precision='fp32', quick_gelu=quick_gelu),
                                  vocabulary=['sky', 'grass'], templates='a_photo_of', text_cache=cache)
    cache = str(tmp_path / 'cache')
    first = seg(True, cache).build_text_classifier()
    second = seg(False, cache).build_text_classifier()
    assert len(os.listdir(cache)) == 2
    torch.testing.assert_close(first, seg(True, False).build_text_classifier())
    torch.testing.assert_close(second, seg(False, False).build_text_classifier())
    assert not torch.allclose(first, second)
    # and the same settings again are served from the cache (the entry is readable)
    monkeypatch.setattr('clearclip_seg.models.text_classifier.encode_queries',
                        lambda *a, **k: pytest.fail('cache miss'))
    torch.testing.assert_close(seg(True, cache).build_text_classifier(), first)


@pytest.mark.parametrize('option,key', [                                  # M1: segmentor options
    ('model.test_cfg.stride=(500,500)', 'model.test_cfg.stride'),          # stride > crop: holes
    ('model.test_cfg.crop_size=(0,0)', 'model.test_cfg.crop_size'),
    ('model.test_cfg.crop_size=(-4,-4)', 'model.test_cfg.crop_size'),
    ('model.test_cfg.stride=(0,0)', 'model.test_cfg.stride'),
    ('model.test_cfg.max_windows=0', 'model.test_cfg.max_windows'),
    ('model.test_cfg.strid=(100,100)', 'strid'),                           # typo'd key
    ('model.prob_thd=5', 'model.prob_thd'),
    ('model.prob_thd=abc', 'model.prob_thd'),
    ('model.logit_scale=-50', 'model.logit_scale'),
])
def test_segmentor_options_are_checked(tools, capsys, tmp_path, voc, option, key):
    assert_fails(tools, capsys, tmp_path, voc[0], option, names=(key,))


def _label(path):
    return np.array(Image.open(path))


def _save_label(path, arr):
    Image.fromarray(arr.astype(np.uint8)).save(path)


def test_out_of_range_label_value_is_named(tools, capsys, tmp_path, voc_copy):
    root, ids = voc_copy
    path = root / 'SegmentationClass' / f'{ids[0]}.png'
    lab = _label(path)
    lab[5, 5] = 77
    _save_label(path, lab)
    assert_fails(tools, capsys, tmp_path, root, names=(path, '[77]', 'check_data'))


def test_out_of_range_value_is_named_as_in_the_file_with_reduce_zero_label(tmp_path):
    from clearclip_seg.checks import DataError, check_label_map
    lab = torch.full((1, 4, 4), 3)
    lab[0, 0, 0] = 20                                       # a 21 in a VOC20 file, after reduce_zero_label
    with pytest.raises(DataError, match=r"label 'x.png' holds value \[21\] outside the 20 classes \(0..20 and 255\)"):
        check_label_map(lab, (4, 4), 20, 255, 'x.png', reduce_zero_label=True)
    lab[0, 0, 0] = 255
    check_label_map(lab, (4, 4), 20, 255, 'x.png', reduce_zero_label=True)  # ignore is fine


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_check_data_decodes_every_image(tools, voc_copy, capsys):
    root, ids = voc_copy
    (root / 'JPEGImages' / f'{ids[0]}.jpg').write_bytes(b'')
    _truncate(root / 'JPEGImages' / f'{ids[1]}.jpg', 0.3)
    cd = tools['check_data']
    assert cd.main(['voc21', '--data-root-override', f'voc21={root}', '--expected-count', '2', '--nproc', '2']) == 1
    out = capsys.readouterr().out
    assert 'voc21: FAILED' in out and '2 images cannot be decoded' in out
    assert f'{ids[0]}.jpg (empty (0 bytes))' in out and f'{ids[1]}.jpg (unreadable' in out


def test_unwritable_record_path_fails_before_the_first_image(tools, capsys, tmp_path, voc):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    line = assert_fails(tools, capsys, tmp_path, voc[0], args=('--record', blocker / 'record.json'),
                        names=(blocker, '--record'))
    assert 'cannot write' in line
    assert not (tmp_path / 'work').exists() or not any((tmp_path / 'work').iterdir())  # nothing ran
    # a read-only (here: impossible) work dir likewise
    assert_fails(tools, capsys, tmp_path, voc[0], args=('--work-dir', blocker / 'sub'), names=(blocker, '--work-dir'))


# -- failures that name their culprit ---------------------------------------------------------------
def test_zero_byte_image_is_named_before_the_run(tools, capsys, tmp_path, voc_copy):
    root, ids = voc_copy
    img = root / 'JPEGImages' / f'{ids[1]}.jpg'
    img.write_bytes(b'')
    assert_fails(tools, capsys, tmp_path, root, names=(img, 'empty', 'tools/check_data.py voc21'))


@pytest.mark.parametrize('workers', [0, 1])
def test_truncated_image_is_named_with_benchmark_and_check_data(tools, capsys, tmp_path, voc_copy, workers):
    root, ids = voc_copy
    img = root / 'JPEGImages' / f'{ids[0]}.jpg'
    _truncate(img, 0.3)
    line = assert_fails(tools, capsys, tmp_path, root, f'test_dataloader.num_workers={workers}',
                        names=(img, 'voc21', 'tools/check_data.py voc21'))
    assert 'Traceback' not in line


def test_missing_files_and_empty_split(tools, capsys, tmp_path, voc_copy):
    root, ids = voc_copy
    (root / 'SegmentationClass' / f'{ids[0]}.png').unlink()
    assert_fails(tools, capsys, tmp_path, root, names=(root / 'SegmentationClass' / f'{ids[0]}.png', 'missing'))
    (root / 'JPEGImages' / f'{ids[1]}.jpg').unlink()
    assert_fails(tools, capsys, tmp_path, root, names=(root / 'JPEGImages' / f'{ids[1]}.jpg',))
    split = root / 'ImageSets' / 'Segmentation' / 'val.txt'
    split.write_text('')
    assert_fails(tools, capsys, tmp_path, root, names=(split, 'lists no images'))


def test_wrong_size_and_rgb_labels_are_named(tools, capsys, tmp_path, voc_copy):
    root, ids = voc_copy
    path = root / 'SegmentationClass' / f'{ids[0]}.png'
    good = _label(path)
    _save_label(path, np.zeros((good.shape[0] + 3, good.shape[1]), np.uint8))
    assert_fails(tools, capsys, tmp_path, root, names=(path, 'its image is'))
    Image.fromarray(np.zeros((*good.shape, 3), np.uint8)).save(path)
    assert_fails(tools, capsys, tmp_path, root, names=(path, 'single-channel'))


def test_corrupt_and_empty_checkpoints_are_named(tools, capsys, tmp_path, voc):
    empty, broken = tmp_path / 'empty.pt', tmp_path / 'broken.pt'
    empty.write_bytes(b'')
    broken.write_bytes(b'PK\x03\x04 not really a zip' * 50)
    assert_fails(tools, capsys, tmp_path, voc[0], f'model.clip.pretrained={empty}', names=(empty, '0 bytes'))
    line = assert_fails(tools, capsys, tmp_path, voc[0], f'model.clip.pretrained={broken}',
                        names=(broken, 'model.clip.pretrained'))
    assert 'weights_only' not in line


def test_duplicate_class_names_name_their_lines(tools, capsys, tmp_path, voc):
    vocab = tmp_path / 'vocab.txt'
    names = [ln.strip() for ln in open(os.path.join(ROOT, 'clearclip_seg', 'vocabularies', 'voc21.txt'))]
    names[7] = 'Dog'                                        # line 8 repeats line 13 ('dog')
    vocab.write_text('\n'.join(names) + '\n')
    assert_fails(tools, capsys, tmp_path, voc[0], f'model.vocabulary={vocab}', names=('lines 8 and 13', 'dog'))


@pytest.mark.parametrize('args,names', [
    (['--cfg-options', 'model.prob_thd'], ["'model.prob_thd'", 'KEY=VALUE']),
    (['--show-dir', 'x', '--show-n', '-1'], ['--show-n']),
    (['--launcher', 'pytorch'], ['torchrun']),
])
def test_command_line_mistakes(tools, capsys, tmp_path, voc, args, names, monkeypatch):
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(k, raising=False)
    if args[0] == '--cfg-options':
        code, _, err = run_test_tool(tools, capsys, [CONFIG, '--work-dir', tmp_path, *args])
        assert code == 2
        line = error_line(err)
    else:
        line = assert_fails(tools, capsys, tmp_path, voc[0], args=args)
    for n in names:
        assert n in line, line


def test_data_root_resolution_agrees_between_test_and_check_data(tmp_path, monkeypatch, tools):
    from mmengine.config import Config

    from clearclip_seg.checks import resolve_data_root
    monkeypatch.chdir(tmp_path)                             # not the repository
    cfg = Config.fromfile(CONFIG)
    resolve_data_root(cfg)
    bench = tools['check_data'].get_benchmark('voc21')
    assert cfg.test_dataloader.dataset.data_root == str(tools['check_data'].resolve_data_root(bench))
    assert cfg.test_dataloader.dataset.data_root == os.path.join(ROOT, 'data', 'VOCdevkit', 'VOC2012')
    # a path typed on the command line is relative to the current directory
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({'test_dataloader.dataset.data_root': 'mine/VOC2012'})
    resolve_data_root(cfg, {'test_dataloader.dataset.data_root': 'mine/VOC2012'})
    assert cfg.test_dataloader.dataset.data_root == str(tmp_path / 'mine' / 'VOC2012')


def test_collect_results_refuses_or_converts_other_schema_versions(tools, good_record, tmp_path, capsys):
    rec = json.loads(good_record[1].read_text())
    (tmp_path / 'new').mkdir()
    rec['record_version'] = 99
    (tmp_path / 'new' / 'record.json').write_text(json.dumps(rec))
    assert tools['collect_results'].main([str(tmp_path / 'new')]) == 2
    line = error_line(capsys.readouterr().err)
    assert 'record_version 99' in line and str(tmp_path / 'new' / 'record.json') in line
    # version 1 (no kind, no model.method) is converted, and the tool says so
    rec['record_version'] = 1
    rec.pop('kind', None)
    rec['model'].pop('method', None)
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'record.json').write_text(json.dumps(rec))
    assert tools['collect_results'].main([str(tmp_path / 'old')]) == 0
    captured = capsys.readouterr()
    assert 'record_version 1 converted to 2' in captured.err and f"{rec['metrics']['mIoU']:.2f}" in captured.out


# -- the runner -------------------------------------------------------------------------------------
def bench_args(out, root, *extra):
    return ['--out', str(out), '--data-root', f'voc21={root}', *extra, '--cfg-options',
            *tiny(root)[1:]]


def run_bench(tools, capsys, args):
    capsys.readouterr()
    code = tools['benchmark'].main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize('args,names', [
    (['--suite', 'mian'], ["unknown suite 'mian'", 'main, baselines']),
    (['--suite', 'main', '--benchmarks', 'voc22'], ['voc22', 'voc21', 'ade20k']),
    (['--suite', 'ablation', '--benchmarks', 'voc21'], ["suite 'ablation' has no runs", 'voc20']),
])
def test_runner_name_typos_are_errors(tools, capsys, tmp_path, voc, args, names):
    code, _, err = run_bench(tools, capsys, bench_args(tmp_path / 'r', voc[0], *args))
    assert code == 2
    line = error_line(err)
    for n in names:
        assert n in line, line


def test_runner_unknown_data_root_key_and_bad_override(tools, capsys, tmp_path, voc):
    code, _, err = run_bench(tools, capsys, ['--out', tmp_path / 'r', '--suite', 'main', '--data-root',
                                             f'voc2l={voc[0]}'])
    assert code == 2 and "unknown benchmark 'voc2l'" in error_line(err) and 'voc21' in error_line(err)
    code, _, err = run_bench(tools, capsys, ['--out', tmp_path / 'r', '--suite', 'main', '--cfg-options',
                                             'model.prob_thd'])
    assert code == 2 and "--cfg-options 'model.prob_thd': expected KEY=VALUE" in error_line(err)


def _matrix(tmp_path, *runs):
    path = tmp_path / 'm.json'
    path.write_text(json.dumps([dict(name=n, config=CONFIG, benchmark='voc21', cfg_options=list(o)) for n, o in runs]))
    return path


def test_duplicate_run_names_are_refused(tools, capsys, tmp_path, voc):
    m = _matrix(tmp_path, ('r', []), ('r', ['model.last_block.attn=qk']))
    code, _, err = run_bench(tools, capsys, bench_args(tmp_path / 'out', voc[0], '--matrix', m))
    assert code == 2 and "run name 'r' appears twice" in error_line(err)


def _fake_record(planned):
    """What a finished run leaves (the parts the runner reads), with the identity it planned."""
    from clearclip_seg.records import RECORD_VERSION, atomic_write_json
    atomic_write_json(dict(record_version=RECORD_VERSION, kind='evaluation', complete=True, benchmark='voc21',
                           config=dict(identity=planned.identity), metrics=dict(mIoU=1.0)), planned.record)


def test_records_made_with_other_settings_are_not_done(tools, capsys, tmp_path, voc_copy):
    from clearclip_seg.sweep import collect_runs, plan_runs
    root, _ = voc_copy
    m = _matrix(tmp_path, ('r', []))
    out = tmp_path / 'out'
    extra = tiny(root)[1:]
    planned = plan_runs(collect_runs([], None, str(m), []), str(out), {'voc21': str(root)}, extra)
    assert [p.status for p in planned] == ['todo']
    _fake_record(planned[0])
    same = plan_runs(collect_runs([], None, str(m), []), str(out), {'voc21': str(root)}, extra)
    assert [p.status for p in same] == ['done']
    # a changed override, data root or architecture file: stale, and the runner refuses naming it
    other_root = tmp_path / 'other' / 'VOC2012'
    shutil.copytree(root, other_root)
    arch = tmp_path / f'{TINY_NAME}.json'
    shutil.copy(TINY_ARCH, arch)
    for args, diff in [(['--cfg-options', *extra, 'model.last_block.attn=qk'], "model.last_block.attn: 'qq' -> 'qk'"),
                       (['--data-root', f'voc21={other_root}', '--cfg-options', *extra], 'data_root'),
                       (['--cfg-options', *extra, f'model.clip.arch_file={arch}'], 'arch_file')]:
        if args[0] == '--cfg-options':
            args = ['--data-root', f'voc21={root}', *args]
        code, _, err = run_bench(tools, capsys, ['--out', out, '--matrix', m, *args])
        assert code == 2, err
        line = error_line(err)
        assert 'm/r' in line and diff in line and '--force' in line, line
        code, stdout, _ = run_bench(tools, capsys, ['--out', out, '--matrix', m, *args, '--dry-run'])
        assert code == 0 and '[STALE] m/r' in stdout
    forced = plan_runs(collect_runs([], None, str(m), []), str(out), {'voc21': str(root)},
                       extra + ['model.last_block.attn=qk'], force=True)
    assert [p.status for p in forced] == ['todo']


def test_second_runner_refuses_and_a_crashed_one_leaves_no_lock(tools, capsys, tmp_path, voc):
    from clearclip_seg.sweep import ResultsLock
    out = tmp_path / 'out'
    m = _matrix(tmp_path, ('r', []))
    with ResultsLock(str(out)):
        code, _, err = run_bench(tools, capsys, bench_args(out, voc[0], '--matrix', m))
    assert code == 2 and 'in use by another tools/benchmark.py' in error_line(err) and f'pid {os.getpid()}' in err
    # a runner killed outright: the kernel drops its lock
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; sys.path.insert(0, sys.argv[1]);'
                               'from clearclip_seg.sweep.lock import ResultsLock; l = ResultsLock(sys.argv[2]); '
                               'l.acquire(); print("held", flush=True); time.sleep(60)', ROOT, str(out)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(Exception, match='in use'):
        ResultsLock(str(out)).acquire()
    holder.kill()
    holder.wait()
    with ResultsLock(str(out)):
        pass


def _processes_with(marker):
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().decode(errors='replace')
        except OSError:
            continue
        if marker in cmd and 'tools/test.py' in cmd:
            found.append(int(pid))
    return found


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_signals_end_the_child_runs(tools, capsys, tmp_path, voc, sig):
    """The runner in-process, signalled once its child run exists: exit 128+sig, no child process left."""
    import threading
    out = tmp_path / f'out-{sig.name}'
    m = _matrix(tmp_path, ('r', []))
    seen = []

    def signal_when_started():
        deadline = time.time() + 120
        while not _processes_with(str(out)) and time.time() < deadline:
            time.sleep(0.05)
        seen.extend(_processes_with(str(out)))
        os.kill(os.getpid(), sig)
    threading.Thread(target=signal_when_started, daemon=True).start()
    code, _, err = run_bench(tools, capsys, bench_args(out, voc[0], '--matrix', m))
    assert seen, 'the child run never started'
    assert code == 128 + sig, err[-2000:]
    assert f'interrupted by {sig.name} during m/r' in err
    assert not _processes_with(str(out)), 'child processes survived the runner'
    assert not (out / 'm' / 'r' / 'record.json').exists()


# -- outputs that cannot be written, bad --run-info, runs that crash ---------------------------------
@pytest.mark.parametrize('run_info,what', [('{"name": ', 'is not JSON'), ('[1, 2]', 'expected a JSON object')])
def test_bad_run_info_is_one_line(tools, capsys, tmp_path, voc, run_info, what):
    code, _, err = run_test_tool(tools, capsys, [CONFIG, '--work-dir', tmp_path / 'w', '--run-info', run_info,
                                                 *tiny(voc[0])])
    line = error_line(err)
    assert code == 2 and '--run-info' in line and what in line, err


def test_outputs_pointing_at_a_file_are_one_line(tools, capsys, tmp_path, voc):
    a_file = tmp_path / 'a_file'
    a_file.write_text('not a folder')
    code, _, err = run_test_tool(tools, capsys, [CONFIG, '--work-dir', a_file, *tiny(voc[0])])
    assert code == 2 and f"'{a_file}'" in error_line(err) and 'work dir' in error_line(err)
    code, _, err = run_bench(tools, capsys, bench_args(a_file, voc[0], '--configs', CONFIG))
    assert code == 2 and f"results folder '{a_file}' (--out) cannot be written" in error_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_outputs_are_one_line(tools, capsys, tmp_path, voc):
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o555)
    code, _, err = run_test_tool(tools, capsys, [CONFIG, '--work-dir', ro / 'w', *tiny(voc[0])])
    assert code == 2 and str(ro) in error_line(err)
    code, _, err = run_bench(tools, capsys, bench_args(ro / 'out', voc[0], '--configs', CONFIG))
    assert code == 2 and str(ro) in error_line(err)


def test_a_full_disk_at_the_record_is_one_line_and_no_record(tools, capsys, tmp_path, voc, monkeypatch):
    import errno

    from clearclip_seg import records

    def full(record, path):
        raise OSError(errno.ENOSPC, 'No space left on device', path)
    monkeypatch.setattr(records, 'write_record', full)
    work = tmp_path / 'w'
    code, _, err = run_test_tool(tools, capsys, [CONFIG, '--work-dir', work, *tiny(voc[0])])
    line = error_line(err)
    assert code == 2 and f"cannot write the record '{work / 'record.json'}': No space left on device" in line
    assert not (work / 'record.json').exists()
    failed = json.loads((work / 'record.json.failed').read_text())   # what was lost, next to the record
    assert failed['complete'] is False and 'No space left on device' in failed['error']


def test_a_run_without_a_number_is_never_recorded_complete(tools, capsys, voc_copy, tmp_path):
    """Labels that are all ignore (255): no valid pixel, no mIoU; the run fails, no complete record."""
    root, ids = voc_copy
    for i in ids:
        label = root / 'SegmentationClass' / f'{i}.png'
        Image.fromarray(np.full_like(np.array(Image.open(label)), 255)).save(label)
    work = tmp_path / 'w'
    code, _, err = run_test_tool(tools, capsys, [CONFIG, '--work-dir', work, *tiny(root)])
    assert code == 2, err
    error_line(err)
    assert not (work / 'record.json').exists()


# -- demo output folder -----------------------------------------------------------------------------
def test_demo_does_not_mix_runs(tools, tmp_path, capsys):
    inputs = tmp_path / 'in'
    inputs.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(inputs / 'a.png')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'old_clearclip.png').write_bytes(b'x')
    (out / 'notes.txt').write_text('mine')
    args = [str(inputs), '--vocab', 'sky, grass', '--arch-file', TINY_ARCH, '--templates', 'a_photo_of',
            '--device', 'cpu', '--out', str(out)]
    capsys.readouterr()
    assert tools['demo'].main(args) == 2
    line = error_line(capsys.readouterr().err)
    assert str(out) in line and 'old_clearclip.png' in line and '--overwrite' in line
    assert tools['demo'].main(args + ['--overwrite']) == 0
    assert 'deleted 1 earlier demo pictures' in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ['a_clearclip.png', 'notes.txt']


def test_a_signal_while_a_child_starts_is_raised_only_once_its_handle_is_kept():
    """``spawn`` holds SIGTERM back until ``keep`` stored the child, so the runner can always end it."""
    import signal

    from clearclip_seg.sweep.process import Interrupted, end_group, interrupt_handlers, spawn
    kept, finished = [], []

    def keep(proc):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the start is still in progress
        kept.append(proc)  # still reached: the handler only noted the signal
        finished.append(True)

    with interrupt_handlers():
        with pytest.raises(Interrupted):
            spawn([sys.executable, '-c', 'import time; time.sleep(60)'], keep)
    assert finished and len(kept) == 1 and kept[0].poll() is None  # the child exists and the caller holds it
    end_group(kept[0], grace_s=5)
    assert kept[0].poll() is not None


# -- issue 20: config keys and values ---------------------------------------------------------------
# Typo'd keys at every level: merged by MMEngine as keys nothing reads, they silently ran the default.
@pytest.mark.parametrize('extra,names', [
    (['modle.prob_thd=0.5'], ["'modle'", 'modle.prob_thd', "did you mean 'model'"]),
    (['model.prob_thdd=0.5'], ["'model.prob_thdd'", "did you mean 'model.prob_thd'"]),
    (['model.clip.archh=ViT-B-16'], ["'model.clip.archh'", "did you mean 'model.clip.arch'"]),
    (['model.test_cfg.strid=(32,32)'], ["'model.test_cfg.strid'", "did you mean 'model.test_cfg.stride'"]),
    (['model.last_block.residul=False'], ["'model.last_block.residul'", "'model.last_block.residual'"]),
    (['model.last_block=None', 'model.method.type=NACLIP', 'model.method.gausian_std=5.0'],
     ["'model.method.gausian_std'", "did you mean 'model.method.gaussian_std'"]),
    (['test_dataloader.batchsize=2'], ["'test_dataloader.batchsize'", "'test_dataloader.batch_size'"]),
    (['test_dataloader.dataset.data_rot=/x'], ["'test_dataloader.dataset.data_rot'", 'data_root']),
    (['test_dataloader.dataset.pipeline.1.sclae=(64,64)'], ["'test_dataloader.dataset.pipeline.1.sclae'",
                                                            "'test_dataloader.dataset.pipeline.1.scale'"]),
])
def test_typo_keys_are_refused_with_the_nearest_key(tools, capsys, tmp_path, voc, extra, names):
    line = assert_fails(tools, capsys, tmp_path, voc[0], *extra, names=('unknown config key', '--cfg-options',
                                                                         *names))
    assert 'TypeError' not in line


def test_unknown_model_key_in_a_config_file_names_the_file(tools, capsys, tmp_path, voc):
    cfg = tmp_path / 'mine.py'
    cfg.write_text(f"_base_ = ['{CONFIG}']\nmodel = dict(clip=dict(precison='fp32'))\n")
    code, _, err = run_test_tool(tools, capsys, [cfg, '--work-dir', tmp_path / 'w', *tiny(voc[0])])
    assert code == 2
    line = error_line(err)
    assert "'model.clip.precison'" in line and str(cfg) in line and "'model.clip.precision'" in line


def test_valid_overrides_of_every_kind_pass(tmp_path, voc):
    """Existing paths, new keys a class takes, Runner keys: not refused (and the merge happened)."""
    from clearclip_seg.apis import load_config
    opts = {**tiny_cfg_options(voc[0]), 'test_dataloader.pin_memory': True,
            'model.area_thd': 0.1, 'model.postprocess': dict(type='PAMR'), 'work_dir': str(tmp_path),
            'env_cfg.cudnn_benchmark': True, 'test_dataloader.dataset.pipeline.1.keep_ratio': False,
            'model.test_cfg.keep_probs': True}
    cfg = load_config(CONFIG, opts)
    assert cfg.test_dataloader.pin_memory is True and cfg.model.postprocess == dict(type='PAMR')
    assert cfg.test_dataloader.dataset.pipeline[1].keep_ratio is False


@pytest.mark.parametrize('options,names', [
    ({'model.fused_attn': 'False'}, ['model.fused_attn', 'boolean']),
    ({'model.compile': 'no'}, ['model.compile', 'boolean']),
    ({'model.text_cache': 'False'}, ['model.text_cache', 'folder path']),
    ({'model.clip.map_head': 'False'}, ['model.clip.map_head', "'full'"]),
    ({'model.last_block': None, 'model.method': dict(type='ProxyCLIP', vfm_pretrained='False')},
     ['model.method.vfm_pretrained', 'boolean']),
    ({'model.test_cfg.keep_probs': 'false'}, ['model.test_cfg.keep_probs', 'boolean']),
    ({'model.logit_scale': float('inf')}, ['model.logit_scale', 'finite']),
    ({'model.logit_scale': 1e300}, ['model.logit_scale', 'finite']),
    ({'model.logit_bias': float('inf')}, ['model.logit_bias', 'finite']),
    ({'model.prob_thd': float('nan')}, ['model.prob_thd', 'finite']),
    ({'test_dataloader.batch_size': 0}, ['test_dataloader.batch_size=0', '>= 1']),
    ({'test_dataloader.num_workers': -1}, ['test_dataloader.num_workers=-1', '>= 0']),
])
def test_bad_values_are_refused_when_the_config_loads(voc, options, names):
    """Strings in boolean options ('False' is truthy), NaN/inf/1e300 floats, zero batches, negative workers."""
    from clearclip_seg.apis import ConfigError, load_config
    with pytest.raises(ConfigError) as e:
        load_config(CONFIG, {**tiny_cfg_options(voc[0]), **options})
    line = str(e.value)
    assert '\n' not in line
    for n in names:
        assert n in line, line


@pytest.mark.parametrize('option,key', [
    ('model.logit_scale=inf', 'model.logit_scale'), ('model.logit_scale=1e300', 'model.logit_scale'),
    ('model.logit_bias=inf', 'model.logit_bias'), ('test_dataloader.batch_size=0', 'test_dataloader.batch_size'),
    ('test_dataloader.num_workers=-1', 'test_dataloader.num_workers'),
])
def test_bad_values_exit_2_from_the_cli(tools, capsys, tmp_path, voc, option, key):
    assert_fails(tools, capsys, tmp_path, voc[0], option, names=(key,))


def test_a_segmentor_refuses_non_finite_options_when_built_directly():
    from helpers import tiny_segmentor
    for kw, key in [(dict(logit_scale=float('inf')), 'model.logit_scale'),
                    (dict(logit_bias=float('nan')), 'model.logit_bias'),
                    (dict(method=dict(type='NACLIP', gaussian_std=float('inf')), last_block=None),
                     'model.method.gaussian_std')]:
        with pytest.raises(ValueError, match=key):
            tiny_segmentor(**kw)


def test_config_syntax_error_names_file_and_line(tools, capsys, tmp_path):
    bad = tmp_path / 'broken.py'
    bad.write_text("model = dict(\n    prob_thd=0.5\n    logit_scale=50)\n")
    code, _, err = run_test_tool(tools, capsys, [bad, '--work-dir', tmp_path / 'w'])
    assert code == 2
    line = error_line(err)
    assert str(bad) in line and 'line 2' in line and 'syntax error' in line
    # in a _base_ file: the including config is named, and the line
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = ['{bad}']\n")
    code, _, err = run_test_tool(tools, capsys, [child, '--work-dir', tmp_path / 'w'])
    assert code == 2 and str(bad) in error_line(err) and 'line 2' in error_line(err)


@pytest.mark.parametrize('text,names', [
    ('a photo of a {}.\n\nno placeholder here\n', ['line 3', "'no placeholder here'", '{}']),
    ('a {} next to a {}\n', ['line 1', 'exactly one']),
    ('\n  \n', ['empty']),
])
def test_malformed_template_files_name_file_and_line(tools, capsys, tmp_path, voc, text, names):
    path = tmp_path / 'templates.txt'
    path.write_text(text)
    assert_fails(tools, capsys, tmp_path, voc[0], f'model.templates={path}', names=(path, *names))


# -- non-finite logits, strict JSON records, tables -------------------------------------------------
def test_proxyclip_all_masked_attention_stops_naming_image_method_and_option():
    """beta=100 masks every attention entry: NaN logits, which used to become class 0 everywhere."""
    from helpers import TINY_PROXY_VFM, tiny_segmentor
    from mmseg.structures import SegDataSample

    from clearclip_seg.apis import ConfigError
    model = tiny_segmentor(method=dict(type='ProxyCLIP', beta=100.0, **TINY_PROXY_VFM), last_block=None)
    image = torch.rand(1, 3, 64, 64)
    sample = SegDataSample(metainfo=dict(img_path='/data/img_0.jpg', ori_shape=(64, 64), img_shape=(64, 64)))
    with pytest.raises(ConfigError) as e:
        model.predict(image, [sample])
    line = str(e.value)
    assert "'/data/img_0.jpg'" in line and 'ProxyCLIP' in line and "'beta': 100.0" in line and 'NaN' in line
    # the published beta gives finite logits and a prediction
    ok = tiny_segmentor(method=dict(type='ProxyCLIP', **TINY_PROXY_VFM), last_block=None)
    assert ok.predict(image, [SegDataSample(metainfo=dict(ori_shape=(64, 64), img_shape=(64, 64)))])


def test_finite_check_passes_finite_logits_and_names_inf():
    from clearclip_seg.apis import ConfigError
    from clearclip_seg.models.scoring import check_finite_logits
    logits = torch.zeros(3, 4, 4)
    check_finite_logits(logits, {}, None)
    logits[1, 2, 2] = float('inf')
    with pytest.raises(ConfigError, match=r"\(0 NaN, 1 inf of 48\) for image 'x.png'"):
        check_finite_logits(logits, {'img_path': 'x.png'}, None)


def test_records_are_strict_json_and_nan_is_refused_by_key(tmp_path):
    from clearclip_seg.apis import ConfigError
    from clearclip_seg.records import atomic_write_json
    path = tmp_path / 'record.json'
    with pytest.raises(ConfigError, match=r"metrics\.IoU\.1=nan is not a finite number") as e:
        atomic_write_json(dict(metrics=dict(mIoU=1.0, IoU=[1.0, float('nan')])), str(path))
    assert str(path) in str(e.value) and not path.exists()
    atomic_write_json(dict(metrics=dict(mIoU=1.0, IoU=[1.0, None])), str(path))
    assert json.loads(path.read_text())['metrics']['IoU'] == [1.0, None]


def test_a_record_of_a_newer_version_is_never_overwritten(tmp_path, good_record):
    from clearclip_seg.records import RECORD_VERSION, RecordVersionError, write_record
    path = tmp_path / 'record.json'
    newer = json.loads(good_record[1].read_text())
    newer['record_version'] = 99
    path.write_text(json.dumps(newer))
    before = path.read_bytes()
    with pytest.raises(RecordVersionError) as e:
        write_record(good_record[0], str(path))
    line = str(e.value)
    assert str(path) in line and 'record_version 99' in line and f'({RECORD_VERSION})' in line
    assert path.read_bytes() == before
    other = tmp_path / 'old.json'                       # an older or a current one is replaced as before
    other.write_text(json.dumps({**newer, 'record_version': RECORD_VERSION}))
    write_record(good_record[0], str(other))
    assert json.loads(other.read_text())['metrics']['mIoU'] == good_record[0]['metrics']['mIoU']


def test_tables_refuse_a_nan_metric_and_say_when_the_average_is_partial(tools, good_record, tmp_path, capsys):
    capsys.readouterr()
    assert tools['collect_results'].main([str(good_record[1])]) == 0
    md = capsys.readouterr().out
    assert '| Avg (1 of 8) |' in md and 'the paper averages 8: not comparable with its Avg' in md
    assert not [c for ln in md.splitlines() if ln.startswith('|') for c in ln.split('|') if c.strip() == 'nan']
    rec = json.loads(good_record[1].read_text())
    rec['metrics']['mIoU'] = float('nan')                # as an old writer left it (json.dump wrote NaN)
    bad = tmp_path / 'record.json'
    bad.write_text(json.dumps(rec))
    assert tools['collect_results'].main([str(bad)]) == 2
    line = error_line(capsys.readouterr().err)
    assert str(bad) in line and 'metrics.mIoU is nan' in line


# -- the text-classifier cache and arch_file ---------------------------------------------------------
def test_text_cache_sees_weights_swapped_with_same_size_and_mtime(tmp_path):
    from clearclip_seg.segmentor import ClearCLIPSegmentor
    from clearclip_seg.models.clip_loader import create_clip
    ckpt, cache = tmp_path / 'w.pt', str(tmp_path / 'cache')

    def save(seed):
        torch.manual_seed(seed)
        torch.save(create_clip(None, arch_file=TINY_ARCH)[0].state_dict(), ckpt)

    def embeddings(text_cache):
        return ClearCLIPSegmentor(clip=dict(arch=TINY_NAME, arch_file=TINY_ARCH, pretrained=str(ckpt),
                                            precision='fp32'),
                                  vocabulary=['sky', 'grass'], templates='a_photo_of',
                                  text_cache=text_cache).build_text_classifier()
    save(0)
    first = embeddings(cache)
    st = os.stat(ckpt)
    save(1)                                             # same size, mtime put back: only the content differs
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.path.getsize(ckpt) == st.st_size and os.stat(ckpt).st_mtime_ns == st.st_mtime_ns
    second = embeddings(cache)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, embeddings(False))
    assert len(os.listdir(cache)) == 2


def test_arch_file_that_does_not_define_the_arch_is_refused(tools, capsys, tmp_path, voc):
    line = assert_fails(tools, capsys, tmp_path, voc[0], 'model.clip.arch=ViT-B-16',
                        names=("model.clip.arch='ViT-B-16'", TINY_ARCH, f"'{TINY_NAME}'"))
    assert 'defines only' in line


# -- tools: demo, benchmark_speed, analyze_decomposition ---------------------------------------------
@pytest.mark.parametrize('extra,names', [
    (['--arch', 'ViT-B-99', '--pretrained', 'none'], ["'ViT-B-99'", 'model.clip.arch']),
    (['--arch-file', TINY_ARCH, '--cfg-options', 'model.last_block=None', 'model.method.type=Nope'],
     ["'Nope'", 'model.method.type']),
    (['--arch-file', TINY_ARCH, '--cfg-options', 'model.logit_scal=10'], ["'model.logit_scal'"]),
])
def test_demo_model_errors_are_one_line(tools, tmp_path, capsys, extra, names):
    (tmp_path / 'in').mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / 'in' / 'a.png')
    capsys.readouterr()
    code = tools['demo'].main([str(tmp_path / 'in'), '--vocab', 'sky, grass', '--templates', 'a_photo_of',
                               '--device', 'cpu', '--out', str(tmp_path / 'out'), *extra])
    assert code == 2
    line = error_line(capsys.readouterr().err)
    for n in names:
        assert n in line, line


@pytest.mark.parametrize('args,name', [(['--num-images', '0'], '--num-images=0'), (['--repeats', '0'], '--repeats=0'),
                                       (['--warmup', '-1'], '--warmup=-1')])
def test_benchmark_speed_refuses_zero_counts(capsys, args, name):
    with pytest.raises(SystemExit) as e:
        load_tool('benchmark_speed').main(args)
    assert e.value.code == 2
    assert name in error_line(capsys.readouterr().err)


def test_analyze_decomposition_refuses_another_method(capsys, tmp_path, voc):
    sclip = os.path.join(ROOT, 'configs', 'sclip', 'sclip_vit-b16_voc21.py')
    capsys.readouterr()
    code = load_tool('analyze_decomposition').main([sclip, '--num-images', '1', '--out', str(tmp_path / 'o'),
                                                    *tiny(voc[0])])
    assert code == 2
    line = error_line(capsys.readouterr().err)
    assert "model.method.type='SCLIP'" in line and sclip in line
