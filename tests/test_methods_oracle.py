"""Fidelity: our predictions against the authors' own evaluation code (``tests/fixtures/oracle``).

Each case runs a generated config through the real MMSeg pipeline (the
dataset config's loading and resize, our data preprocessor and segmentor),
with a tiny architecture (``tests/assets``), its fp16-rounded random weights
loaded into the fp32 model and the synthetic data, and compares every
image's prediction with the official code's on the same weights and images
(``expected/<case>.npz``) and the mIoU with its metrics. What each fixture
file is and where it came from: ``tests/fixtures/PROVENANCE.md``.

Adding a case is one ``OracleCase`` line in ``CASES``, then rebuilding the
fixtures (``tests/fixtures/oracle/make_fixtures.py``) so that the weights
keep the token rows its prompts use.
"""
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from clearclip_seg.protocol.constants import config_path
from helpers import ROOT

FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
ORACLE = os.path.join(FIXTURES, 'oracle')
ASSETS = os.path.join(ROOT, 'tests', 'assets')
TOKENS = 'token_embedding.weight'

MIN_AGREEMENT = 0.9999     # pixel agreement per case
MIOU_TOLERANCE = 0.01      # mIoU, in percent, as MMSeg rounds it


@dataclass(frozen=True)
class OracleCase:
    method: str        # protocol card / config folder
    benchmark: str
    arch: str          # oracle/arch/<arch>.json (a copy lives in tests/assets)

    @property
    def name(self) -> str:
        return f'{self.method}_{self.benchmark}'


CASES = [
    OracleCase('sclip', 'voc20', 'tinyoa'),
    OracleCase('naclip', 'context59', 'tinyoa'),
    OracleCase('resclip', 'voc20', 'tiny12oa'),
    OracleCase('scclip', 'voc20', 'tiny12oa'),
    OracleCase('floss-naclip', 'voc20', 'tinyoa'),
    OracleCase('floss-naclip', 'context59', 'tinyoa'),
]


def oracle_state_dict(arch: str) -> dict:
    """The fp16 state dict of ``arch`` unpacked from ``weights.npz`` (make_fixtures.py packs it).

    Tensors stored once under ``tiny12oa/`` serve tinyoa too; the token
    embedding has the stored rows and zeros elsewhere (rows no prompt reads).
    """
    import torch
    packed = np.load(os.path.join(ORACLE, 'weights.npz'))
    state = {}
    for key in packed[f'{arch}/keys']:
        if key == TOKENS:
            table = np.zeros(tuple(packed[f'{arch}/{key}/shape']), dtype=np.float16)
            table[packed[f'{arch}/{key}/rows']] = packed[f'{arch}/{key}/values']
        else:
            table = packed[f'{arch}/{key}'] if f'{arch}/{key}' in packed.files else packed[f'tiny12oa/{key}']
        state[str(key)] = torch.from_numpy(table)
    return state


def check_token_rows(model, arch: str) -> None:
    """Every token the model's prompts contain must be a stored row (the others are zeros)."""
    kept = set(np.load(os.path.join(ORACLE, 'weights.npz'))[f'{arch}/{TOKENS}/rows'].tolist())
    prompts = [t.format(q) for q in model.vocabulary.queries for t in model.templates]
    missing = sorted(set(model._tokenizer(prompts).unique().tolist()) - kept)
    assert not missing, f'weights.npz lacks token rows {missing[:10]}: rebuild it with make_fixtures.py'


def run_case(case: OracleCase, tmp_path):
    """Our predictions {image file name: (H, W) int array} and MMSeg's IoUMetric on them."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmseg.evaluation.metrics import IoUMetric

    from clearclip_seg.apis.config import load_config
    from clearclip_seg.apis.inference import init_segmentor
    from mmseg.registry import DATASETS

    cfg_path = os.path.join(ROOT, config_path(case.method, 'vit-b16', case.benchmark))
    data_root = load_config(cfg_path).test_dataloader.dataset.data_root    # e.g. data/VOCdevkit/VOC2012
    weights = tmp_path / f'{case.arch}_fp16.pt'
    torch.save(oracle_state_dict(case.arch), weights)
    options = {'model.clip.arch': case.arch, 'model.clip.arch_file': os.path.join(ASSETS, f'{case.arch}.json'),
               'model.clip.pretrained': str(weights),
               'model.clip.precision': 'fp32', 'model.text_cache': False,
               # the official run was batch 1 on the CPU: one window at a time
               'model.test_cfg.max_windows': 1,
               'test_dataloader.dataset.data_root': os.path.join(ORACLE, data_root)}
    model = init_segmentor(cfg_path, device='cpu', cfg_options=options)
    check_token_rows(model, case.arch)
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    cfg = model.cfg
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    preds = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = pseudo_collate([dataset[i]])
            out = model.test_step(batch)
            metric.process(batch, [o.to_dict() for o in out])
            preds[os.path.basename(out[0].img_path)] = out[0].pred_sem_seg.data[0].cpu().numpy()
    return preds, metric.compute_metrics(metric.results)


def test_fixture_files_match_their_checksums():
    """``tests/fixtures/SHA256SUMS`` (PROVENANCE.md) lists every fixture file, and each one is intact."""
    with open(os.path.join(FIXTURES, 'SHA256SUMS')) as f:
        sums = {path: digest for digest, path in (line.split('  ', 1) for line in f.read().splitlines())}
    on_disk = sorted(os.path.relpath(os.path.join(d, n), FIXTURES) for d, _, names in os.walk(FIXTURES)
                     for n in names if n not in ('SHA256SUMS', 'PROVENANCE.md', 'make_fixtures.py')
                     and '__pycache__' not in d)
    assert sorted(sums) == on_disk
    for path, digest in sums.items():
        with open(os.path.join(FIXTURES, path), 'rb') as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, path


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_predictions_equal_the_official_code(case, tmp_path):
    expected = np.load(os.path.join(ORACLE, 'expected', f'{case.name}.npz'))
    metrics = json.loads(str(expected['metrics']))
    preds, ours = run_case(case, tmp_path)
    names = sorted(k[len('pred/'):] for k in expected.files if k.startswith('pred/'))
    assert sorted(preds) == names
    same = total = 0
    worst = (2.0, '')
    for name in names:
        ref = expected[f'pred/{name}'][0].astype(np.int64)
        got = preds[name].astype(np.int64)
        assert got.shape == ref.shape, name
        agree = int((got == ref).sum())
        same, total = same + agree, total + ref.size
        worst = min(worst, (agree / ref.size, name))
    agreement = same / total
    print(f'{case.name}: pixel agreement {agreement:.6%} ({total - same} of {total} differ; '
          f'worst image {worst[1]} {worst[0]:.6%}); mIoU ours {ours["mIoU"]} official {metrics["mIoU"]}')
    assert agreement >= MIN_AGREEMENT, (agreement, worst)
    assert abs(ours['mIoU'] - metrics['mIoU']) <= MIOU_TOLERANCE + 1e-9
    assert abs(ours['aAcc'] - metrics['aAcc']) <= MIOU_TOLERANCE + 1e-9
