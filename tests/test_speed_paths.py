"""Speed paths: batched windows == one window at a time; bf16 on CPU; FLOP counter; the speed tool runs."""
import json
import os
import subprocess
import sys

import pytest
import torch

from clearclip_seg import perf as bs
from clearclip_seg.models.slide import padded_window_shapes
from helpers import ROOT, TINY_ARCH

TINY12 = os.path.join(ROOT, 'tests', 'assets', 'tiny12oa.json')

TOOL = os.path.join(ROOT, 'tools', 'benchmark_speed.py')

# Sizes chosen to give several window shapes with crop 64 / stride 32 and patch 16:
# 70x100 -> 2x3 windows of 64x64; 40x130 -> 4 windows of 40x64 (padded to 48x64);
# 30x50 (smaller than the crop) -> one 30x50 window (padded to 32x64); 64x64 -> one window.
SIZES = [(70, 100), (40, 130), (30, 50), (64, 64)]


def _seg(precision='fp32', max_windows=16):
    return bs.build_segmentor(None, TINY_ARCH, precision, 'voc21', (64, 64), (32, 32), max_windows,
                              prob_thd=0.0, device='cpu', seed=0)


@pytest.fixture(scope='module')
def images():
    return bs.synthetic_images(SIZES, seed=3)


@pytest.fixture(scope='module')
def seg_fp32():
    return _seg('fp32')


@pytest.fixture(scope='module')
def plain_logits(seg_fp32, images):
    with torch.inference_mode():
        seg_fp32.test_cfg['max_windows'] = 1
        try:
            return seg_fp32.query_logits(images)
        finally:
            seg_fp32.test_cfg['max_windows'] = 16


def test_windows_have_several_shapes():
    from clearclip_seg.models.slide import window_boxes
    shapes = {(b[1] - b[0], b[3] - b[2]) for h, w in SIZES for b in window_boxes(h, w, 64, 32)}
    assert shapes == {(64, 64), (40, 64), (30, 50)}
    padded = padded_window_shapes(SIZES, 64, 32, (16, 16))
    assert len(padded) == 6 + 4 + 1 + 1
    assert set(padded) == {(64, 64), (48, 64), (32, 64)}


@pytest.mark.parametrize('max_windows', [2, 3, 5, 16])
def test_batched_equals_one_window_at_a_time(seg_fp32, images, plain_logits, max_windows):
    with torch.inference_mode():
        seg_fp32.test_cfg['max_windows'] = max_windows
        try:
            batched = seg_fp32.query_logits(images)
        finally:
            seg_fp32.test_cfg['max_windows'] = 16
    for img, a, b in zip(images, batched, plain_logits):
        assert a.shape == b.shape == (21, *img.shape[-2:])
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    agree = bs.agreement(seg_fp32, batched, plain_logits)
    assert agree['argmax_agreement'] == 1.0
    assert agree['label_agreement'] == 1.0
    assert agree['max_abs_diff'] < 1e-5


def test_measure_path_reports_and_restores(seg_fp32, images, plain_logits):
    r, one = bs.measure_paths(seg_fp32, images, [4, 1], warmup=0, repeats=2)
    assert seg_fp32.test_cfg['max_windows'] == 16
    assert (r['max_windows'], one['max_windows']) == (4, 1)
    assert len(r['times_s']) == 2 and r['time_s'] == min(r['times_s']) and r['cpu_s'] > 0
    assert bs.agreement(seg_fp32, one['logits'], plain_logits)['max_abs_diff'] == 0
    assert r['windows'] == 12 and r['images'] == 4
    assert r['images_per_s'] > 0 and r['windows_per_s'] == pytest.approx(r['images_per_s'] * 3)
    assert r['memory']['peak_mib'] > 0
    assert r['encoder_gflop'] == pytest.approx(
        bs.windows_flops(seg_fp32.encoder, padded_window_shapes(SIZES, 64, 32, (16, 16))) / 1e9)
    assert bs.agreement(seg_fp32, r['logits'], plain_logits)['argmax_agreement'] == 1.0


def test_bf16_runs_on_cpu_and_mostly_agrees_with_fp32(images, plain_logits, seg_fp32):
    seg = _seg('bf16')
    assert seg.encoder.dtype == torch.bfloat16
    with torch.inference_mode():
        low = seg.query_logits(images)
    assert all(torch.isfinite(x).all() for x in low)
    agree = bs.agreement(seg_fp32, plain_logits, low)
    # Observed (seeds 0/1/2 of this tiny random model): 99.4 / 99.2 / 98.9 % of pixels
    # agree, max |logit diff| 0.005-0.0074. Random weights give near-tied queries,
    # so the bounds leave ~10x room.
    assert agree['argmax_agreement'] >= 0.9, agree
    assert agree['max_abs_diff'] < 0.05, agree


def test_flop_counter_tiny_by_hand():
    # Tiny ViT: width 64, 3 layers, MLP 256, output 32, patch 16; a 32x64 crop -> 2x4 = 8 patches, N = 9 tokens.
    geo = dict(width=64, layers=3, mlp_width=256, out_dim=32, patch=(16, 16))
    patch_embed = 2 * 8 * (3 * 16 * 16) * 64                       # 786432
    qkv, attn, proj, mlp = 2 * 9 * 64 * 192, 2 * 2 * 9 * 9 * 64, 2 * 9 * 64 * 64, 2 * 2 * 9 * 64 * 256
    assert (qkv, attn, proj, mlp) == (221184, 20736, 73728, 589824)
    full_block = qkv + attn + proj + mlp                           # 905472
    head = 2 * 9 * 64 * 32                                         # 36864
    # ClearCLIP's last block: q and v only, one qq^T pair, out_proj, no FFN
    clearclip_last = 2 * (2 * 9 * 64 * 64) + attn + proj           # 241920
    assert bs.vit_encoder_flops((2, 4), **geo, last_attn='qq', last_ffn=False) == \
        patch_embed + 2 * full_block + clearclip_last + head == 2876160
    # vanilla CLIP (qk, FFN on): three identical blocks
    assert bs.vit_encoder_flops((2, 4), **geo, last_attn='qk', last_ffn=True) == \
        patch_embed + 3 * full_block + head == 3539712
    # MaskCLIP: v only, no attention matmuls
    assert bs.vit_encoder_flops((2, 4), **geo, last_attn='identity') == \
        patch_embed + 2 * full_block + 2 * 9 * 64 * 64 + proj + head
    # SCLIP-style: q, k, v and two attention pairs
    assert bs.vit_encoder_flops((2, 4), **geo, last_attn='qq+kk') == \
        patch_embed + 2 * full_block + qkv + 2 * attn + proj + head


def _cpu_flash_flops(q, k, v, *args, out_shape=None, **kwargs):
    """FLOPs of CPU ``scaled_dot_product_attention`` (shapes in): scores + weights @ v."""
    bh = 1
    for s in q[:-2]:
        bh *= s
    return 2 * bh * q[-2] * k[-2] * q[-1] + 2 * bh * q[-2] * k[-2] * v[-1]


@pytest.fixture
def slow_mha_path():
    """nn.MultiheadAttention's fast path is one opaque op to FlopCounterMode: turn it off."""
    old = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(old)


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('attn,ffn', [('qq', False), ('qk', True), ('identity', False), ('qq+kk', True)])
def test_flop_counter_matches_torch_counter(tiny_clip, slow_mha_path, attn, ffn, fused):
    """The analytic count equals torch's FlopCounterMode on the real tiny encoder."""
    from torch.utils.flop_counter import FlopCounterMode

    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual, fused_attn=fused)
    switches = dict(attn=attn, residual=True, ffn=ffn)
    geo = bs.encoder_geometry(enc, switches)
    assert (geo['width'], geo['layers'], geo['mlp_width'], geo['out_dim']) == (64, 3, 256, 32)
    # the CPU flash-attention kernel has no formula in torch's registry: give it one
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
    x = torch.randn(2, 3, 32, 64)
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        enc(x, **switches)
    assert counter.get_total_flops() == 2 * bs.vit_encoder_flops((2, 4), **geo)


def test_protocol_resize_and_sizes():
    assert bs.protocol_resize(375, 500) == (448, 597)
    assert bs.protocol_resize(500, 375) == (597, 448)
    assert bs.protocol_resize(1024, 2048) == (448, 896)
    assert bs.protocol_resize(100, 2000) == (102, 2048)  # the long side caps it
    assert bs.parse_size('448x597') == (448, 597)
    with pytest.raises(ValueError, match='expected HxW'):
        bs.parse_size('448')


def test_protocol_values_come_from_the_protocol_tables(monkeypatch):
    from clearclip_seg.protocol import constants
    assert bs.benchmark_slide('voc21') == (448, 224, 0.5)
    assert bs.benchmark_slide('cityscapes') == (224, 224, 0.0)
    assert bs.benchmark_slide('my_classes.txt') == (constants.SLIDE_CROP, constants.SLIDE_STRIDE, 0.0)
    monkeypatch.setattr(constants, 'RESIZE', (1024, 224))  # one value changed: the tool follows
    assert bs.protocol_resize(375, 500) == (224, 299)
    assert bs.voc_sizes()[0] == (224, 299)


def test_text_classifier_timing_cold_then_cached(seg_fp32, tmp_path):
    t = bs.time_text_classifier(seg_fp32, ['background', 'cat, kitty'], 'a_photo_of', cache_dir=str(tmp_path))
    assert t['prompts'] == 3 and t['embeddings'] == [3, 32] and t['cache_files'] == 1
    assert t['cold_s'] > 0 and t['cached_s'] > 0
    assert seg_fp32.text_cache is False  # restored


def test_encoder_only_batches(seg_fp32):
    r = bs.measure_encoder_only(seg_fp32, (40, 64), [1, 3], warmup=0, repeats=1)
    assert [e['batch'] for e in r] == [1, 3] and r[0]['crop'] == '48x64'
    assert r[1]['encoder_gflop'] == pytest.approx(3 * r[0]['encoder_gflop'])


@pytest.mark.slow
def test_tool_smoke_baseline(tmp_path):
    out = tmp_path / 'figures.json'
    proc = subprocess.run([sys.executable, TOOL, '--arch-file', TINY_ARCH, '--num-images', '1', '--baseline',
                           '--max-windows', '16',
                           '--text-templates', 'a_photo_of', '--matmul-size', '256', '--profile', '--json', str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'speed ratio batched/plain:' in proc.stdout, proc.stdout
    assert 'argmax agreement 100.0000 %' in proc.stdout, proc.stdout
    figures = json.loads(out.read_text())
    assert figures['baseline_agreement']['argmax_agreement'] == 1.0
    assert figures['batched']['windows'] == 2 and figures['matmul_peak']['gflops'] > 0
    assert figures['text_classifier']['prompts'] == 171
    assert [e['batch'] for e in figures['encoder_only']] == [1, 2]
    assert figures['plain']['max_windows'] == 1 and figures['batched']['max_windows'] == 16
    # --profile: one logit resize per window, one attention call per block (2 windows in one batch)
    kinds = figures['profile']['kinds']
    with open(TINY_ARCH) as f:
        layers = json.load(f)['vision_cfg']['layers']
    assert kinds['window logits resize']['calls'] == 2
    assert kinds['attention kernel']['calls'] == layers
    assert sum(k['share'] for k in kinds.values()) == pytest.approx(1.0)
    assert 'where the time goes' in proc.stdout
    # torch.utils.benchmark medians with their IQR, the CPU model beside every speed figure, memory per case
    cpu = figures['machine']['cpu']
    speed_lines = [line for line in proc.stdout.splitlines() if 'images/s' in line]
    assert len(speed_lines) == 2 and all(f'[{cpu}, ' in line and 'IQR' in line for line in speed_lines)
    for path in ('batched', 'plain'):
        assert len(figures[path]['iqrs_s']) == len(figures[path]['times_s']) == 1
        assert figures[path]['time_s'] == figures[path]['times_s'][0] > 0
        assert figures[path]['memory']['peak_mib'] > 0 and 'timing_warning' in figures[path]


def test_tool_times_the_default_path(monkeypatch):
    """--max-windows defaults to the segmentor's 'auto' (1 for fp32 on a CPU); other values are passed on."""
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    try:
        import benchmark_speed
    finally:
        sys.path.pop(0)
    seen = {}
    monkeypatch.setattr(benchmark_speed, 'speed_report', lambda **kw: seen.update(kw))
    benchmark_speed.main(['--arch-file', TINY_ARCH])
    assert seen['max_windows'] == 'auto' and seen['arch_file'] == TINY_ARCH and seen['arch'] is None
    benchmark_speed.main(['--max-windows', '4', '--min-run-time', '0.5'])
    assert seen['max_windows'] == 4 and seen['min_run_time'] == 0.5
    for bad in ('0', 'many'):
        with pytest.raises(SystemExit) as e:
            benchmark_speed.parse_args(['--max-windows', bad])
        assert e.value.code == 2
    seg = _seg(max_windows='auto')
    assert seg.max_windows('cpu') == 1


def test_scaling_and_methods_honour_the_architecture(monkeypatch, tmp_path):
    """--scaling and --methods pass --arch/--arch-file on (the file alone: its own architecture)."""
    import clearclip_seg.perf.method_speed as ms
    import clearclip_seg.perf.scaling as sc
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    try:
        import benchmark_speed
    finally:
        sys.path.pop(0)
    seen = {}
    monkeypatch.setattr(sc, 'throughput_grid', lambda **kw: seen.setdefault('scaling', kw))
    monkeypatch.setattr(ms, 'method_speed', lambda methods, **kw: seen.setdefault('methods', (methods, kw)))
    benchmark_speed.main(['--scaling', str(tmp_path / 'p.png'), '--arch-file', TINY_ARCH, '--num-images', '1'])
    assert seen['scaling']['arch'] is None and seen['scaling']['arch_file'] == TINY_ARCH
    benchmark_speed.main(['--methods', '--arch', 'tiny12oa', '--arch-file', TINY12])
    methods, kw = seen['methods']
    assert methods is None and kw['arch'] == 'tiny12oa' and kw['arch_file'] == TINY12


@pytest.mark.slow
def test_methods_default_to_every_card_and_report_the_fields():
    """Every card of METHOD_CARDS (no hard-coded list); a tiny run has medians, IQR, CPU model, memory."""
    from clearclip_seg.perf.method_speed import _options, _random_vfm, method_speed
    from clearclip_seg.protocol.methods import METHOD_CARDS
    lines = []
    with pytest.raises(ValueError, match='unknown method card'):
        method_speed(['no-such-method'], log=lines.append)
    config, opts = _options('proxyclip', 'voc21', 'common', None, TINY12, 'fp32')
    assert opts['model.method.vfm_pretrained'] is False and opts['model.clip.arch'] is None
    assert opts['model.clip.arch_file'] == TINY12
    for card in METHOD_CARDS:   # every card builds its options (random weights for any *pretrained keyword)
        _, o = _options(card, 'voc21', 'common', None, TINY12, 'fp32')
        assert all(v is False for k, v in o.items() if k.endswith('pretrained') and k.startswith('model.method'))
    out = method_speed(['sclip'], arch_file=TINY_ARCH, num_images=1, raw_sizes=[(40, 60)], warmup=0, repeats=2,
                       log=lines.append)
    assert [r['method'] for r in out['results']] == ['clearclip', 'sclip', 'clearclip']
    cpu = out['machine']['cpu']
    for r in out['results']:
        assert len(r['times_s']) == len(r['iqrs_s']) == 2 and r['time_s'] == min(r['times_s']) > 0
        assert r['memory']['peak_mib'] > 0 and r['max_windows'] == 1 and 'timing_warning' in r
    assert out['arch_file'] == TINY_ARCH and 'clearclip_drift_warning' in out
    assert sum(f'[{cpu}, ' in line for line in lines if 'images/s' in line) == 3


def test_scaling_grid_and_plot_on_the_tiny_model(tmp_path):
    from clearclip_seg.perf.scaling import throughput_grid
    from helpers import TINY_ARCH
    lines = []
    out = throughput_grid(arch='clearclip-tiny-vit', arch_file=TINY_ARCH, precisions=('fp32', 'bf16'),
                          max_windows=(1, 2), num_images=1, device='cpu', warmup=0, repeats=1,
                          plot_path=str(tmp_path / 'scaling.png'), log=lines.append)
    assert [(r['precision'], r['max_windows']) for r in out['rows']] == [
        ('fp32', 1), ('fp32', 2), ('bf16', 1), ('bf16', 2)]
    assert all(r['label_agreement_vs_fp32'] == 100.0 for r in out['rows'] if r['precision'] == 'fp32')
    assert all(r['windows_per_s'] > 0 for r in out['rows'])
    assert (tmp_path / 'scaling.png').stat().st_size > 1000
    assert lines[0].startswith('machine: ')
    cpu = out['machine']['cpu']
    rows = [line for line in lines if 'windows/s' in line]
    assert len(rows) == 4 and all(f'[{cpu}, ' in line and 'IQR' in line and 'MiB' in line for line in rows)
    assert all(r['peak_mib'] > 0 and r['iqr_s'] >= 0 and r['time_s'] > 0 for r in out['rows'])


def test_bf16_units_read_from_cpuinfo_and_the_advice_follows(tmp_path):
    """AMX -> bf16 recommended; no bf16 flags -> the tool says bf16 is slower and to keep fp32."""
    from clearclip_seg.perf.inputs import bf16_advice, cpu_bf16_units

    def cpuinfo(flags):
        path = tmp_path / f'cpuinfo_{len(flags)}'
        path.write_text('processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 ' + ' '.join(flags) + '\n\n')
        return str(path)
    amx = cpu_bf16_units(cpuinfo(['avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16']))
    assert amx == ['amx_bf16', 'avx512_bf16']
    assert 'precision=bf16 is the fast' in bf16_advice(amx)
    dot = cpu_bf16_units(cpuinfo(['avx512f', 'avx512_bf16']))
    assert dot == ['avx512_bf16'] and 'no AMX' in bf16_advice(dot)
    none = cpu_bf16_units(cpuinfo(['avx2']))
    assert none == [] and 'slower than fp32' in bf16_advice(none) and 'precision=fp32' in bf16_advice(none)
    assert cpu_bf16_units(str(tmp_path / 'missing')) is None
    assert 'unknown' in bf16_advice(None)


@pytest.mark.slow
def test_stage_breakdown_of_a_proxyclip_prediction():
    """Trunk blocks, VFM forward, the method's rest and classify add up; the wrappers go away afterwards."""
    from mmseg.structures import SegDataSample

    from clearclip_seg.apis import init_segmentor
    from clearclip_seg.perf.stages import stage_breakdown
    from helpers import TINY_NAME, TINY_PROXY_VFM
    opts = {'model.clip.arch': TINY_NAME, 'model.clip.arch_file': TINY_ARCH, 'model.clip.pretrained': None,
            'model.text_cache': False, 'model.templates': 'a_photo_of',
            **{f'model.method.{k}': v for k, v in TINY_PROXY_VFM.items()}}
    torch.manual_seed(0)
    seg = init_segmentor(os.path.join(ROOT, 'configs', 'proxyclip', 'proxyclip_vit-b16_voc21.py'), device='cpu',
                         cfg_options=opts, build_text=True)
    image = bs.synthetic_images([(336, 400)], seed=1)
    kept = seg.query_embeddings

    def predict():
        sample = SegDataSample(metainfo=dict(ori_shape=(336, 400), img_shape=(336, 400)))
        return seg.predict(image, [sample])[0].pred_sem_seg.data

    with torch.inference_mode():
        before = predict()
    st = stage_breakdown(seg, predict, 'cpu')
    assert set(st) == {'text (cold build, once)', 'windows', 'trunk blocks', 'VFM forward', 'classify',
                       'method (rest of the windows)', 'total'}
    assert all(st[k] > 0 for k in ('trunk blocks', 'VFM forward', 'classify', 'text (cold build, once)'))
    assert st['trunk blocks'] + st['VFM forward'] + st['method (rest of the windows)'] == pytest.approx(st['windows'])
    assert st['windows'] + st['classify'] <= st['total']
    for obj, name in [(seg, 'query_logits'), (seg, 'postprocess_result'), (seg.encoder, 'run_blocks'),
                      (seg.method._vfm, 'forward_features')]:
        assert name not in vars(obj)   # unwrapped
    assert seg.query_embeddings is kept
    with torch.inference_mode():
        assert torch.equal(predict(), before)
