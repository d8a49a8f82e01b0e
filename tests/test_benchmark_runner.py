"""tools/benchmark.py: suites run, finished runs are skipped, killed sweeps resume,
distributed evaluation equals single-process, tables carry the records' numbers."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT, TINY_ARCH, make_voc2012, records_by_name

TINY = [f'model.clip.arch_file={TINY_ARCH}', 'model.clip.arch=clearclip-tiny-vit', 'model.clip.pretrained=None',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']


def bench_cmd(out, root, *args):
    return [sys.executable, os.path.join(ROOT, 'tools', 'benchmark.py'), '--out', str(out),
            '--data-root', f'voc21={root}', '--data-root', f'voc20={root}', *args, '--cfg-options', *TINY]


def run(cmd, **kw):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('voc') / 'VOC2012'
    make_voc2012(str(root), sizes=((60, 90), (120, 80), (40, 40)))
    return root


@pytest.mark.slow
def test_suite_runs_skips_and_tables(tmp_path, voc_root):
    out = tmp_path / 'results'
    proc = run(bench_cmd(out, voc_root, '--suite', 'main', '--benchmarks', 'voc20'))
    assert '2 runs, 0 already complete, 2 to go' in proc.stdout
    recs = records_by_name(out)
    assert sorted(recs) == ['clearclip_vit-b16_voc20', 'clearclip_vit-l14_voc20']
    for rec in recs.values():
        assert rec['complete'] and rec['run']['suite'] == 'main' and rec['method'] == 'clearclip'
    # a second call finds everything done and runs nothing
    proc = run(bench_cmd(out, voc_root, '--suite', 'main', '--benchmarks', 'voc20'))
    assert '2 runs, 2 already complete, 0 to go' in proc.stdout
    assert records_by_name(out) == recs
    # tables are built from the records and hold their numbers
    proc = run([sys.executable, os.path.join(ROOT, 'tools', 'collect_results.py'), str(out), '--decimals', '2'])
    for rec in recs.values():
        assert f"{rec['metrics']['mIoU']:.2f}" in proc.stdout


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_result(tmp_path, voc_root):
    matrix = tmp_path / 'm.json'
    matrix.write_text(json.dumps([
        dict(name='qq', config='configs/clearclip/clearclip_vit-b16_voc21.py', benchmark='voc21'),
        dict(name='qk', config='configs/clearclip/clearclip_vit-b16_voc21.py', benchmark='voc21',
             cfg_options=['model.last_block.attn=qk', 'model.last_block.residual=True']),
    ]))
    ref = tmp_path / 'ref'
    run(bench_cmd(ref, voc_root, '--matrix', str(matrix)))
    out = tmp_path / 'killed'
    proc = subprocess.Popen(bench_cmd(out, voc_root, '--matrix', str(matrix)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first = out / 'm' / 'qq' / 'record.json'
    deadline = time.time() + 600
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)   # the second run dies mid-way
    proc.wait()
    partial = records_by_name(out)
    assert 'qq' in partial
    run(bench_cmd(out, voc_root, '--matrix', str(matrix)))
    resumed, reference = records_by_name(out), records_by_name(ref)
    assert sorted(resumed) == ['qk', 'qq']
    for name in resumed:
        assert resumed[name]['metrics']['area_intersect'] == reference[name]['metrics']['area_intersect']
        assert resumed[name]['metrics']['mIoU'] == reference[name]['metrics']['mIoU']
    assert resumed['qq']['created'] == partial['qq']['created']  # not re-run


@pytest.mark.slow
def test_distributed_equals_single_process(tmp_path, voc_root):
    config = 'configs/clearclip/clearclip_vit-b16_voc21.py'
    opts = ['--cfg-options', f'test_dataloader.dataset.data_root={voc_root}', *TINY]
    run([sys.executable, os.path.join(ROOT, 'tools', 'test.py'), config, '--work-dir', str(tmp_path / 'one'), *opts])
    env = dict(os.environ, OMP_NUM_THREADS='1')
    with socket.socket() as sock:  # a free port: a fixed one can still be in TIME_WAIT
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
         os.path.join(ROOT, 'tools', 'test.py'), config, '--launcher', 'pytorch', '--work-dir', str(tmp_path / 'two'),
         *opts], env=env)
    one = json.loads((tmp_path / 'one' / 'record.json').read_text())
    two = json.loads((tmp_path / 'two' / 'record.json').read_text())
    assert two['timing']['world_size'] == 2 and one['timing']['world_size'] == 1
    assert two['dataset']['num_images'] == one['dataset']['num_images'] == 3
    for key in ('area_intersect', 'area_union', 'area_pred', 'area_label'):
        assert two['metrics'][key] == one['metrics'][key]
    assert two['metrics']['mIoU'] == one['metrics']['mIoU']


def _alive(pid):
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


def _processes_naming(marker):
    found = []
    for pid in os.listdir('/proc'):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as f:
                    if marker.encode() in f.read() and _alive(int(pid)):
                        found.append(int(pid))
            except OSError:
                pass
    return found


def _wait(condition, seconds):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.1)
    return condition()


@pytest.mark.parametrize('executor', [['--gpus', '2', '--parallel', 'runs'],
                                      ['--slurm', '--slurm-executor', 'local', '--time', '20']])
@pytest.mark.slow
def test_workers_end_with_a_runner_killed_outright(tmp_path, voc_root, executor):
    """kill -9 of the runner (only the runner): its workers end too, and a resume reports what was left."""
    if '--slurm' in executor:
        pytest.importorskip('submitit')
    matrix = tmp_path / 'm.json'
    matrix.write_text(json.dumps([
        dict(name='a', config='configs/clearclip/clearclip_vit-b16_voc21.py', benchmark='voc21'),
        dict(name='b', config='configs/clearclip/clearclip_vit-b16_voc21.py', benchmark='voc21',
             cfg_options=['model.test_cfg.crop_size=(64,64)', 'model.test_cfg.stride=(32,32)']),  # a unit of its own
    ]))
    out = tmp_path / 'out'
    running = out / '.running'
    proc = subprocess.Popen(bench_cmd(out, voc_root, '--matrix', str(matrix), *executor), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _wait(lambda: proc.poll() is not None or running.is_dir() and len(os.listdir(running)) == 2, 600)
        assert proc.poll() is None, 'the runner ended before its units started'
        pids = [json.loads((running / f).read_text())['pid'] for f in os.listdir(running)]
        assert all(_alive(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)   # the runner alone, not its process group
        proc.wait()
        assert _wait(lambda: not any(_alive(p) for p in pids), 60), 'a worker survived the runner'
        # nothing of the sweep is left running (submitit's job controllers included)
        assert _wait(lambda: not _processes_naming(str(out)), 60), _processes_naming(str(out))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    left = os.listdir(running)
    resumed = run(bench_cmd(out, voc_root, '--matrix', str(matrix), *executor))
    for _ in left:   # pid files an ended worker could not remove: reported, then the runs run again
        assert 'was interrupted when an earlier runner stopped' in resumed.stderr
    assert not os.listdir(running) and 'all 2 runs complete' in resumed.stdout
    assert sorted(records_by_name(out)) == ['a', 'b']


def test_a_resume_ends_a_leftover_unit_still_running(tmp_path):
    """A pid file whose process still runs here (a worker that outlived its runner) is ended and reported."""
    from clearclip_seg.sweep.process import leftovers, pid_file, write_pid_file
    cmd = [sys.executable, '-c', 'import time; time.sleep(300)']
    child = subprocess.Popen(cmd, start_new_session=True)
    try:
        assert _wait(lambda: b'time.sleep(300)' in open(f'/proc/{child.pid}/cmdline', 'rb').read(), 30)  # exec'd
        path = pid_file(str(tmp_path), '001-unit')
        write_pid_file(path, child.pid, cmd, '001-unit')
        lines = leftovers(str(tmp_path), grace_s=5)
        assert len(lines) == 1 and f'unit 001-unit (pid {child.pid}) was still running' in lines[0]
        assert lines[0].endswith('ended it') and child.wait(timeout=10) == -signal.SIGTERM
        assert not os.path.exists(path) and leftovers(str(tmp_path)) == []
    finally:
        if child.poll() is None:
            child.kill()
