"""Fidelity: our predictions against the authors' own evaluation code (``../shared/oracle``).

Each case runs a generated config through the real MMSeg pipeline (the
dataset config's loading and resize, our data preprocessor and segmentor),
with the oracle's tiny architecture, its fp16-rounded random weights loaded
into the fp32 model and its synthetic data, and compares every image's
prediction with the official code's (``expected/<case>.npz``) and the mIoU
with its metrics. Skipped when the oracle folder is absent.

Adding a case is one ``OracleCase`` line in ``CASES``.
"""
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from clearclip_seg.protocol.constants import config_path
from helpers import ROOT, SHARED

ORACLE = os.path.join(SHARED, 'oracle')
ASSETS = os.path.join(ROOT, 'tests', 'assets')

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
]


def run_case(case: OracleCase):
    """Our predictions {image file name: (H, W) int array} and MMSeg's IoUMetric on them."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmseg.evaluation.metrics import IoUMetric

    from clearclip_seg.apis.config import load_config
    from clearclip_seg.apis.inference import init_segmentor
    from mmseg.registry import DATASETS

    cfg_path = os.path.join(ROOT, config_path(case.method, 'vit-b16', case.benchmark))
    data_root = load_config(cfg_path).test_dataloader.dataset.data_root    # e.g. data/VOCdevkit/VOC2012
    options = {'model.clip.arch': case.arch, 'model.clip.arch_file': os.path.join(ASSETS, f'{case.arch}.json'),
               'model.clip.pretrained': os.path.join(ORACLE, 'weights', f'{case.arch}_fp16.pt'),
               'model.clip.precision': 'fp32', 'model.text_cache': False,
               # the official run was batch 1 on the CPU: one window at a time
               'model.test_cfg.max_windows': 1,
               'test_dataloader.dataset.data_root': os.path.join(ORACLE, data_root)}
    model = init_segmentor(cfg_path, device='cpu', cfg_options=options)
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


@pytest.mark.skipif(not os.path.isdir(ORACLE), reason='../shared/oracle not present')
@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_predictions_equal_the_official_code(case):
    expected = np.load(os.path.join(ORACLE, 'expected', f'{case.name}.npz'))
    metrics = json.loads(str(expected['metrics']))
    preds, ours = run_case(case)
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
