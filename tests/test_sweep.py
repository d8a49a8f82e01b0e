"""Shared passes (clearclip_seg.evaluation.passes, clearclip_seg.sweep): records equal to separate runs,
one failed run not failing its pass, grouping, resume, local workers, Slurm through submitit's local
executor, the cost model and the GPU check on a CPU."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, TINY_ARCH, TINY_NAME, make_voc2012, records_by_name

TINY = [f'model.clip.arch_file={TINY_ARCH}', f'model.clip.arch={TINY_NAME}', 'model.clip.pretrained=None',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
VOC21 = 'configs/clearclip/clearclip_vit-b16_voc21.py'
VOC20 = 'configs/clearclip/clearclip_vit-b16_voc20.py'
# three points of the ablation grid: ClearCLIP, vanilla CLIP, and kk with the residual only
VARIANTS = {'qq_res0_ffn0': ['model.last_block.attn=qq', 'model.last_block.residual=False', 'model.last_block.ffn=False'],
            'qk_res1_ffn1': ['model.last_block.attn=qk', 'model.last_block.residual=True', 'model.last_block.ffn=True'],
            'kk_res1_ffn0': ['model.last_block.attn=kk', 'model.last_block.residual=True', 'model.last_block.ffn=False']}


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('voc') / 'VOC2012'
    make_voc2012(str(root), sizes=((60, 90), (120, 80), (40, 40)))
    return root


# -- the trunk replay, plain torch ----------------------------------------------------------------
class _Tower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.calls = 0

    def last_block_input(self, x):
        self.calls += 1
        return self.lin(x), (1, x.shape[1])


def test_trunk_is_computed_once_and_replayed_only_on_equal_windows():
    from clearclip_seg.evaluation.trunk import SharedTrunk, sharing_trunk
    a, b = _Tower(), _Tower()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 4)
    trunk = SharedTrunk()
    with sharing_trunk([a, b, a], trunk):
        trunk.start_run(0)
        t0, grid0 = a.last_block_input(x)
        t0.mul_(0)                       # a consumer writing into its tokens does not touch the record
        trunk.start_run(1)
        t1, grid1 = b.last_block_input(x.clone())
        t2, _ = b.last_block_input(x + 1)  # past the record: computed
        trunk.start_run(2)
        t3, _ = b.last_block_input(x + 1)  # differs from the recorded input: computed, a miss
        trunk.end_batch()
    assert (a.calls, b.calls) == (1, 2)
    assert trunk.stats() == dict(computed=1, reused=1, misses=2)
    assert torch.equal(t1, b.lin(x)) and grid1 == grid0 == (1, 3)
    assert torch.equal(t2, b.lin(x + 1)) and torch.equal(t3, t2)
    assert 'last_block_input' not in vars(a)  # restored: the class method again
    a.last_block_input(x)
    assert a.calls == 2


# -- one shared pass against separate runs --------------------------------------------------------
def _specs(root, out):
    from clearclip_seg.evaluation.identity import parse_cfg_options
    from clearclip_seg.evaluation.run import Run
    specs = []
    for config, bench in ((VOC21, 'voc21'), (VOC20, 'voc20')):
        for name, opts in VARIANTS.items():
            items = [*TINY, f'test_dataloader.dataset.data_root={root}', *opts, 'default_hooks.logger.interval=10']
            record = os.path.join(str(out), f'{name}_{bench}', 'record.json')
            specs.append(Run(f'{name}_{bench}', os.path.join(ROOT, config), parse_cfg_options(items),
                             record=record, work_dir=os.path.dirname(record),
                             run_info=dict(suite='t', name=f'{name}_{bench}', benchmark=bench)))
    return specs


def _strip(rec):
    rec = json.loads(json.dumps(rec))
    for key in ('created', 'timing', '_path'):
        rec.pop(key, None)
    return rec


@pytest.mark.slow
def test_shared_pass_records_equal_separate_runs(tmp_path, voc_root):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.evaluation.passes import run_pass
    out = tmp_path / 'runs'
    specs = _specs(voc_root, out)
    separate = []
    for s in specs:  # what tools/test.py does for each run: a pass of one
        separate.append(evaluate(s.config, s.options, work_dir=s.work_dir, record_path=s.record,
                                 run_info=s.run_info))
    for s in specs:
        os.remove(s.record)
    lines = []
    shared = run_pass(specs, log=lines.append)
    assert all(s.error is None for s in specs)
    assert len(shared) == len(specs) == 6
    for s, a, b in zip(specs, shared, separate):
        assert json.loads(open(s.record).read())['metrics'] == a['metrics']  # what was written
        for key in ('area_intersect', 'area_union', 'area_pred', 'area_label', 'mIoU', 'IoU'):
            assert a['metrics'][key] == b['metrics'][key], (s.name, key)
        assert _strip(a) == _strip(b), s.name   # config (resolved, cfg_options, identity), model, dataset...
        assert a['timing']['shared_pass']['runs'] == 6
    # VOC21 and VOC20 score different labels: the pass did not hand one benchmark's areas to the other
    assert len(shared[0]['metrics']['area_label']) == 21 and len(shared[3]['metrics']['area_label']) == 20
    assert shared[0]['metrics']['mIoU'] != shared[1]['metrics']['mIoU']   # the variants differ
    # the frozen blocks ran once per window batch, for the first run only
    calls = shared[0]['timing']['shared_pass']['trunk_calls']
    assert calls['misses'] == 0 and calls['computed'] > 0 and calls['reused'] == 5 * calls['computed']
    assert any(line.startswith('Iter(test) [3/3]') for line in lines)


def test_one_failed_run_does_not_fail_its_pass(tmp_path, voc_root, monkeypatch):
    """A run whose model cannot be built and a run that fails while scoring each leave a failure marker
    (never a record); the other runs of the pass get the records of a pass without them."""
    from clearclip_seg.errors import ConfigError
    from clearclip_seg.evaluation import passes
    from clearclip_seg.evaluation.run import Run
    from clearclip_seg.evaluation.steps import read_failure
    qq, qk, kk = _specs(voc_root, tmp_path)[:3]
    record = str(tmp_path / 'badvocab_voc21' / 'record.json')
    bad = Run('badvocab_voc21', qq.config, {**qq.options, 'model.vocabulary': 'voc20'}, record=record,
              work_dir=os.path.dirname(record), run_info=dict(suite='t', name='badvocab_voc21'))
    reference = passes.run_pass(_specs(voc_root, tmp_path)[0:3:2], log=None)   # qq and kk alone
    for run in (qq, kk):
        os.remove(run.record)
    score_batch = passes._score_batch

    def failing(run, *args):
        if run.name == qk.name and args[-1] == 1:  # its second image
            raise RuntimeError('boom on the second image')
        return score_batch(run, *args)
    monkeypatch.setattr(passes, '_score_batch', failing)
    lines = []
    records = passes.run_pass([qq, bad, qk, kk], log=lines.append)
    assert records[1] is None and records[2] is None
    assert isinstance(bad.error, ConfigError) and "vocabulary 'voc20' (model.vocabulary) has 20 classes" in str(bad.error)
    assert isinstance(qk.error, RuntimeError)
    for run, why in ((bad, "vocabulary 'voc20'"), (qk, 'boom on the second image')):
        failure = read_failure(run.record)
        assert failure['run'] == run.name and why in failure['error'] and failure['complete'] is False
        assert not os.path.exists(run.record)
    for rec, ref in zip((records[0], records[3]), reference):
        assert _strip(rec) == _strip(ref)   # same metrics, config, identity, model...
        assert rec['timing']['shared_pass']['runs'] == 3   # the runs that were scored (qk until it failed)
    assert lines[-1].endswith(f'; failed: {bad.name}, {qk.name}')


def test_a_model_build_error_is_the_same_one_line_error_alone_and_in_a_pass(tmp_path, voc_root):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.errors import ConfigError
    from clearclip_seg.evaluation.passes import run_pass
    ok, bad = _specs(voc_root, tmp_path)[:2]
    bad.options['model.templates'] = 'no_such_templates'
    with pytest.raises(ConfigError) as alone:
        evaluate(bad.config, bad.options, work_dir=str(tmp_path / 'alone'))
    assert 'no_such_templates' in str(alone.value) and '\n' not in str(alone.value)
    records = run_pass([ok, bad], log=None)
    assert records[0] is not None and records[1] is None
    assert type(bad.error) is ConfigError and str(bad.error) == str(alone.value)


def test_shared_pass_refuses_runs_that_differ_before_the_last_block(tmp_path, voc_root):
    from clearclip_seg.evaluation.passes import run_pass
    from clearclip_seg.evaluation.share import ShareError
    specs = _specs(voc_root, tmp_path)[:2]
    specs[1].options['model.test_cfg.crop_size'] = (32, 32)
    with pytest.raises(ShareError, match=r'runs qq_res0_ffn0_voc21 and qk_res1_ffn1_voc21 cannot share.*crop_size'):
        run_pass(specs)


def test_image_lists_must_agree():
    from clearclip_seg.evaluation.passes import _check_same_images
    from clearclip_seg.evaluation.run import Run
    from clearclip_seg.evaluation.share import ShareError

    class DS:
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def get_data_info(self, i):
            return dict(img_path=self.paths[i])

    def check(*benches_and_paths):
        runs, datasets = [], {}
        for bench, paths in benches_and_paths:
            r = Run(bench, 'c.py', cfg=dict(benchmark=bench))
            runs.append(r)
            datasets[id(r)] = DS(paths)
        _check_same_images(runs, datasets)
    check(('voc21', ['x', 'y']), ('voc20', ['x', 'y']))
    with pytest.raises(ShareError, match=r"benchmarks voc21 and voc20 .*image #1: 'y' vs 'z'"):
        check(('voc21', ['x', 'y']), ('voc20', ['x', 'z']))
    with pytest.raises(ShareError, match=r'context60 and context59 .*2 vs 1 images'):
        check(('context60', ['x', 'y']), ('context59', ['x']))


# -- grouping and cost ----------------------------------------------------------------------------
def test_cost_model_matches_the_flop_count():
    from clearclip_seg.flops import vit_encoder_flops
    from clearclip_seg.sweep.cost import pass_factor, split_flops, vision_geometry
    geo = vision_geometry('ViT-B-16')
    assert geo == dict(width=768, layers=12, mlp_width=3072, out_dim=512, patch=(16, 16), in_chans=3)
    for attn, ffn in (('qq', False), ('qk', True), ('identity', True)):
        trunk, head = split_flops(geo, (448, 448), attn, ffn)
        assert trunk + head == vit_encoder_flops((28, 28), last_attn=attn, last_ffn=ffn, **geo)
        # the trunk is the patch embedding plus 11 full blocks of 785 tokens, whatever the last block
        n, w = 785, 768
        block = 2 * n * w * 3 * w + 2 * (2 * n * n * w) + 2 * n * w * w + 2 * 2 * n * w * 3072
        assert trunk == 2 * 784 * 3 * 16 * 16 * w + 11 * block
    from clearclip_seg.protocol.presets import ablation_grid
    t = split_flops(geo, (448, 448))[0]
    heads = [split_flops(geo, (448, 448), p['attn'], p['ffn'])[1] for p in ablation_grid()]
    shared, separate = pass_factor(t, heads)
    assert separate == 20 and shared == pytest.approx((t + sum(heads)) / (t + sum(heads) / 20))
    assert 9.0 < separate / shared < 9.3   # the ablation grid of ViT-B/16: 9.16x fewer matmul FLOPs


def test_paper_groups_share_image_sets():
    from clearclip_seg.sweep.cost import paper_cost, paper_groups
    from clearclip_seg.suites import suite_runs
    groups = paper_groups(['main'])
    # eight benchmarks, five image sets, two backbones
    assert len(groups) == 10 and sum(g.runs for g in groups) == len(suite_runs('main')) == 16
    sets = {tuple(sorted(g.benchmarks)) for g in groups}
    assert ('voc20', 'voc21') in sets and ('context59', 'context60') in sets
    assert ('coco_object', 'coco_stuff164k') in sets
    ablation = paper_groups(['ablation'])
    assert len(ablation) == 5 and all(g.runs == 20 for g in ablation)
    est = paper_cost({'ViT-B-16': dict(s_per_gflop=1e-3, overhead_s=0.0)}, ['ablation'])
    assert est['runs'] == 100 and 8 < est['ratio'] < 10


def test_group_units_splits_on_trunk_settings(voc_root):
    from clearclip_seg.evaluation.identity import parse_cfg_options
    from clearclip_seg.evaluation.run import Run
    from clearclip_seg.sweep.plan import plan_runs
    from clearclip_seg.sweep.units import group_units
    runs = [Run(f'{n}_{b}', c, parse_cfg_options(o), b, suite='m') for c, b in ((VOC21, 'voc21'), (VOC20, 'voc20'))
            for n, o in VARIANTS.items()]
    runs.append(Run('crop32', VOC21, {'model.test_cfg.crop_size': (32, 32)}, 'voc21', suite='m'))
    runs.append(Run('compiled', VOC21, {'model.compile': True}, 'voc21', suite='m'))
    planned = plan_runs(runs, '/nonexistent-out', {'voc21': str(voc_root), 'voc20': str(voc_root)}, TINY)
    units = group_units(planned)
    assert [len(u.runs) for u in units] == [6, 1, 1]
    assert units[0].shared and not units[1].shared and units[2].why_alone == 'model.compile=True'
    assert [len(u.runs) for u in group_units(planned, share=False)] == [1] * 8


def test_shared_pass_checks_the_data_as_a_separate_run_does(tmp_path, voc_root):
    """An empty split file is refused before building, and a bad label names check_data, as in ``evaluate``;
    each run fails on its own, with a failure marker where its record would be, never a record."""
    import shutil

    import numpy as np
    from PIL import Image

    from clearclip_seg.checks import DataError
    from clearclip_seg.evaluation.passes import run_pass
    from clearclip_seg.evaluation.steps import read_failure
    root = tmp_path / 'VOC2012'
    shutil.copytree(voc_root, root)
    specs = [s for s in _specs(root, tmp_path / 'runs') if s.run_info['name'].startswith('qq_')]
    split = root / 'ImageSets' / 'Segmentation' / 'val.txt'
    ids = split.read_text().split()
    split.write_text('')
    assert run_pass(specs, log=None) == [None, None]
    for s in specs:
        assert isinstance(s.error, DataError) and f"split file '{split}' lists no images" in str(s.error)
        assert read_failure(s.record)['error'] == str(s.error) and not os.path.exists(s.record)
    split.write_text('\n'.join(ids) + '\n')
    label = root / 'SegmentationClass' / f'{ids[0]}.png'
    bad = np.array(Image.open(label))
    bad[0, 0] = 77
    Image.fromarray(bad).save(label)
    assert run_pass(specs, log=None) == [None, None]
    for s in specs:   # VOC21 and VOC20 read the same label files: both name the bad value
        assert isinstance(s.error, DataError) and 'tools/check_data.py voc2' in str(s.error)
        assert 'tools/check_data.py voc2' in read_failure(s.record)['error'] and not os.path.exists(s.record)


# -- the runner -----------------------------------------------------------------------------------
def _bench(out, root, *args, env=None, code=0):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'), '--out', str(out),
           '--data-root', f'voc21={root}', '--data-root', f'voc20={root}', *args, '--cfg-options', *TINY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _matrix(tmp_path, second_unit=False):
    variants = list(VARIANTS.items())[:2] if second_unit else VARIANTS.items()  # fewer runs: faster
    items = [dict(name=f'{n}_{b}', config=c, benchmark=b, cfg_options=o)
             for c, b in ((VOC21, 'voc21'), (VOC20, 'voc20')) for n, o in variants]
    if second_unit:  # other windows: a unit of its own
        items.append(dict(name='stride32_voc21', config=VOC21, benchmark='voc21',
                          cfg_options=['model.test_cfg.crop_size=(64,64)', 'model.test_cfg.stride=(32,32)']))
    path = tmp_path / 'm.json'
    path.write_text(json.dumps(items))
    return path


@pytest.mark.slow
def test_dry_run_shows_the_grouping(tmp_path, voc_root):
    matrix = _matrix(tmp_path)
    proc = _bench(tmp_path / 'out', voc_root, '--matrix', str(matrix), '--dry-run')
    assert '1 work unit(s) (1 shared pass(es)) for 6 run(s)' in proc.stdout
    assert 'unit 1: shared pass of 6 runs' in proc.stdout
    assert 'x less)' in proc.stdout
    assert 'parallel: runs (1 worker(s) taking whole units)' in proc.stdout
    proc = _bench(tmp_path / 'out', voc_root, '--matrix', str(matrix), '--dry-run', '--no-share', '--gpus', '2')
    assert '6 work unit(s) (0 shared pass(es)) for 6 run(s)' in proc.stdout
    assert 'parallel: runs (2 worker(s) taking whole units)' in proc.stdout
    # a single run over two GPUs is data-parallel (torchrun) by default
    proc = _bench(tmp_path / 'out', voc_root, '--configs', VOC21, '--dry-run', '--gpus', '2')
    assert 'parallel: data (one run at a time over 2 processes (no shared passes))' in proc.stdout


@pytest.fixture(scope='module')
def reference(tmp_path_factory, voc_root):
    """Records of the matrix's runs, one at a time: the reference of the shared and parallel modes."""
    from clearclip_seg.apis import evaluate
    from clearclip_seg.evaluation.identity import parse_cfg_options
    tmp = tmp_path_factory.mktemp('ref')
    matrix = _matrix(tmp, second_unit=True)
    ref = {}
    with pytest.MonkeyPatch.context() as mp:  # module scope: conftest's cache isolation is not active yet
        mp.setenv('CLEARCLIP_CACHE', str(tmp / 'cache'))
        for item in json.loads(matrix.read_text()):  # what tools/test.py does for each (in this process: faster)
            options = parse_cfg_options([*item['cfg_options'], *TINY, f'test_dataloader.dataset.data_root={voc_root}'])
            ref[item['name']] = evaluate(os.path.join(ROOT, item['config']), options,
                                         work_dir=str(tmp / item['name']))
    return matrix, ref


def _assert_same(recs, ref):
    assert sorted(recs) == sorted(ref)
    for name, rec in recs.items():
        for key in ('area_intersect', 'area_union', 'area_pred', 'area_label', 'mIoU'):
            assert rec['metrics'][key] == ref[name]['metrics'][key], (name, key)
        assert rec['config']['identity'] == ref[name]['config']['identity']


@pytest.mark.slow
def test_shared_sweep_resumes_a_partial_pass(tmp_path, voc_root, reference):
    matrix, ref = reference
    out = tmp_path / 'out'
    proc = _bench(out, voc_root, '--matrix', str(matrix))
    assert 'shared pass of 4' in proc.stdout
    first = records_by_name(out)
    _assert_same(first, ref)
    for name in ('qk_res1_ffn1_voc21', 'qq_res0_ffn0_voc20'):
        os.remove(out / 'm' / name / 'record.json')
    proc = _bench(out, voc_root, '--matrix', str(matrix))
    assert '5 runs, 3 already complete, 2 to go' in proc.stdout
    resumed = records_by_name(out)
    _assert_same(resumed, ref)
    for name, rec in resumed.items():
        if name in ('qk_res1_ffn1_voc21', 'qq_res0_ffn0_voc20'):   # the missing two, in one pass of two
            assert rec['timing']['shared_pass']['runs'] == 2
        else:                                                     # the others were not run again
            assert rec == first[name], name


@pytest.mark.slow
def test_a_failed_run_is_listed_and_only_it_is_retried(tmp_path, voc_root):
    """One run of a shared pass of three cannot be built: the two others are recorded, the summary
    names it with its error, and once the matrix is fixed a resume runs it alone."""
    items = [dict(name=n, config=VOC21, benchmark='voc21', cfg_options=o) for n, o in list(VARIANTS.items())[:2]]
    bad = dict(name='badvocab', config=VOC21, benchmark='voc21', cfg_options=['model.vocabulary=voc20'])
    matrix = tmp_path / 'm.json'
    matrix.write_text(json.dumps(items + [bad]))
    out = tmp_path / 'out'
    proc = _bench(out, voc_root, '--matrix', str(matrix), code=1)
    assert 'shared pass of 3' in proc.stdout and '1 run(s) failed' in proc.stdout
    assert "m/badvocab: vocabulary 'voc20' (model.vocabulary) has 20 classes" in proc.stdout
    first = records_by_name(out)
    assert sorted(first) == sorted(list(VARIANTS)[:2])
    failure = json.loads((out / 'm' / 'badvocab' / 'record.json.failed').read_text())
    assert failure['run'] == 'badvocab' and failure['complete'] is False
    bad['cfg_options'] = []
    matrix.write_text(json.dumps(items + [bad]))
    proc = _bench(out, voc_root, '--matrix', str(matrix))
    assert '3 runs, 2 already complete, 1 to go' in proc.stdout and 'all 3 runs complete' in proc.stdout
    resumed = records_by_name(out)
    assert sorted(resumed) == sorted([*first, 'badvocab'])
    for name in first:
        assert resumed[name] == first[name]   # not run again
    assert not (out / 'm' / 'badvocab' / 'record.json.failed').exists()


@pytest.mark.slow
def test_two_cpu_workers_take_whole_units(tmp_path, voc_root, reference):
    matrix, ref = reference
    out = tmp_path / 'out'
    proc = _bench(out, voc_root, '--matrix', str(matrix), '--gpus', '2', '--parallel', 'runs')
    _assert_same(records_by_name(out), ref)
    assert 'all 5 runs complete' in proc.stdout
    logs = sorted(os.listdir(out / '.passes'))
    assert len(logs) == 1   # the shared pass; the other unit is a single run (tools/test.py)


@pytest.mark.slow
def test_slurm_array_with_submitit_local_executor(tmp_path, voc_root, reference):
    pytest.importorskip('submitit')
    matrix, ref = reference
    out = tmp_path / 'out'
    proc = _bench(out, voc_root, '--matrix', str(matrix), '--slurm', '--slurm-executor', 'local', '--time', '20')
    assert 'slurm jobs:' in proc.stdout and 'all 5 runs complete' in proc.stdout
    _assert_same(records_by_name(out), ref)
    assert len(os.listdir(out / '.slurm')) > 0   # submitit's job files


# -- the GPU check, on a CPU with the tiny model --------------------------------------------------
@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_the_tiny_model(tmp_path):
    from clearclip_seg.perf.gpu_check import gpu_check
    lines = []
    out = gpu_check(device='cpu', tiny=True, num_images=2, precisions=('fp32', 'bf16'), warmup=0,
                    json_path=str(tmp_path / 'check.json'), log=lines.append)
    r = out['results']['gpu-check-tiny-vit']
    assert r['fp32']['label_agreement_vs_fp32'] == 1.0 and 0.0 <= r['bf16']['label_agreement_vs_fp32'] <= 1.0
    for p in ('fp32', 'bf16'):
        # 2 VOC-sized images after the resize (448x597, 597x448): 2 windows of 448 each
        assert r[p]['windows'] == 4
        assert r[p]['windows_per_s'] == pytest.approx(2 * r[p]['images_per_s'])
        assert r[p]['overhead_s'] >= 0 and r[p]['peak_memory_mib'] > 0
    est = out['estimate']['fp32']
    assert est['runs'] > 100 and est['shared_s'] < est['separate_s'] and est['ratio'] > 2
    assert json.loads((tmp_path / 'check.json').read_text())['estimate']['fp32']['runs'] == est['runs']
    assert any(line.startswith('whole paper at fp32') for line in lines)


def test_sweep_exit_statuses_and_last_lines(capsys):
    """Every executor ends through these: 1 with the failed runs named, 0 when all are done, 128+signal if interrupted."""
    import signal

    from clearclip_seg.sweep.loop import interrupted_exit, sweep_exit
    from clearclip_seg.sweep.process import Interrupted
    assert sweep_exit(['main/a: boom', 'main/b: no complete record'], 5, 'results') == 1
    assert capsys.readouterr().out == ('2 run(s) failed (the others are recorded; the same command retries only '
                                       'these):\n  main/a: boom\n  main/b: no complete record\n')
    assert sweep_exit([], 5, 'results') == 0
    assert 'all 5 runs complete; tables: python tools/collect_results.py results' in capsys.readouterr().out
    assert interrupted_exit(Interrupted(signal.SIGTERM), ' during m/r') == 128 + signal.SIGTERM
    assert capsys.readouterr().err.startswith('interrupted by SIGTERM during m/r; complete records are kept')
