"""Peak memory and time of one prediction on a large image: a fresh process per case.

Each case (a config, optionally with overrides) and each raw image size runs
in its own child process, so every peak is that prediction's alone: the child
builds the segmentor with random weights (``pretrained=None``, the config's
architecture), resizes a synthetic image as the config's test pipeline does
(short side 448 for ClearCLIP: a 4000x6000 photo reaches the encoder as
448x672, a few windows) and predicts its labels at the raw size, so the
resize to the original size, PAMR, the area rule and the argmax run at full
size, as in an evaluation (``test_cfg.keep_probs`` as the config sets it,
False in the shipped configs). The child reports:

* ``peak_rss_mib``: its resident-set high-water mark (``ru_maxrss``), the
  whole process: Python, torch, the model and the prediction;
* ``model_rss_mib``: its resident set once the model and text classifier
  are built, before the prediction;
* ``time_s``: the prediction's wall time (encoder included).

The child's code uses only ``clearclip_seg.apis.init_segmentor`` and
``clearclip_seg.perf.inputs``, so ``code_root`` may point at another checkout
of the package (e.g. an older commit, to measure "before").
"""
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..protocol import constants
from ..records import atomic_write_json
from ..repo_root import ROOT
from .inputs import machine_info

PAMR = dict(type='PAMR', num_iter=constants.PAMR_NUM_ITER, dilations=tuple(constants.PAMR_DILATIONS))
# name -> (config relative to the repository, overrides): the cases of issue 20, item 7
CASES: Dict[str, Tuple[str, dict]] = {
    'clearclip': ('configs/clearclip/clearclip_vit-b16_voc21.py', {}),
    'clearclip+pamr': ('configs/clearclip/clearclip_vit-b16_voc21.py', {'model.postprocess': PAMR}),
    'sclip': ('configs/sclip/sclip_vit-b16_voc21.py', {}),                # area_thd=0.1
    'clearclip-ade20k': ('configs/clearclip/clearclip_vit-b16_ade20k.py', {}),   # 150 classes
    # LPOSS+ (46 queries): patch graph over all windows, pixel graph over the resized image (random DINO)
    'lposs-plus': ('configs/lposs-plus/lposs-plus_openclip-vit-b16_voc21.py',
                   {'model.method.vfm_pretrained': False}),
    # DINO ViT-B/16 and SAM ViT-B at 1024 (random weights), SAM prompt refinement on
    'trident': ('configs/trident/trident_vit-b16_voc21.py',
                {'model.method.vfm_pretrained': False, 'model.method.sam_pretrained': False}),
}
# raw image sizes (H, W): a VOC photo, a Cityscapes frame, a 24-megapixel phone photo
SIZES: Tuple[Tuple[int, int], ...] = ((375, 500), (1024, 2048), (4000, 6000))

# Run in the child (python -c) with the measured checkout first on sys.path.
_CHILD = r'''
import json, resource, sys, time
import torch
from mmseg.structures import SegDataSample
from clearclip_seg.apis import init_segmentor
from clearclip_seg.apis.config import load_config
from clearclip_seg.perf.inputs import protocol_resize, synthetic_images
config, opts, H, W, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
scale = next(tuple(t['scale']) for t in load_config(config, opts).test_dataloader.dataset.pipeline
             if t.get('type') == 'Resize')
h, w = protocol_resize(H, W, scale)
image = synthetic_images([(h, w)], seed=0)[0]
torch.manual_seed(0)
seg = init_segmentor(config, device='cpu', cfg_options=opts, build_text=True)
model_rss = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 2 ** 20
sample = SegDataSample(metainfo=dict(ori_shape=(H, W), img_shape=(h, w)))
start = time.perf_counter()
with torch.inference_mode():
    out = seg.predict([image], [sample])[0]
elapsed = time.perf_counter() - start
labels = out.pred_sem_seg.data
import clearclip_seg
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(code=clearclip_seg.__file__, peak_rss_mib=peak, model_rss_mib=model_rss, time_s=elapsed,
                      input_size=[h, w], queries=len(seg.vocabulary.queries), classes=seg.num_classes,
                      pamr=seg.postprocess is not None, area_thd=seg.area_thd,
                      labels_shape=list(labels.shape), labels_sum=int(labels.sum()))))
'''


def measure_case(config: str, options: dict, size: Tuple[int, int], code_root: Optional[str] = None,
                 threads: int = 1, timeout: Optional[float] = None) -> dict:
    """One prediction in a fresh child process; its figures (``peak_rss_mib``, ``model_rss_mib``, ``time_s``...).

    Args:
        config: config path.
        options: overrides; random weights, no text cache and one template are added.
        size: the raw image size (H, W).
        code_root: the checkout whose ``clearclip_seg`` the child imports (default: this one).
        threads: torch threads of the child.
        timeout: seconds before the child is stopped (None: no limit).

    Raises:
        RuntimeError: the child failed (its last error line is in the message).
    """
    opts = {'model.clip.pretrained': None, 'model.clip.precision': 'fp32', 'model.text_cache': False,
            'model.templates': 'a_photo_of', **options}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([code_root or ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS=str(threads))
    arg = json.dumps([config, opts, size[0], size[1], threads])
    # run from the measured checkout: ``python -c`` puts the working folder first on sys.path
    done = subprocess.run([sys.executable, '-c', _CHILD, arg], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=code_root or ROOT)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ['(no output)']
        raise RuntimeError(f'{config} at {size[0]}x{size[1]}: child exited {done.returncode}: {lines[-1]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_report(cases: Optional[Sequence[str]] = None, sizes: Sequence[Tuple[int, int]] = SIZES,
                  code_root: Optional[str] = None, threads: int = 1, json_path: Optional[str] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Peak RSS and time of every case at every size, one child process each, one at a time.

    Args:
        cases: names of ``CASES`` (default: all).
        sizes: raw image sizes (H, W).
        code_root: the checkout measured (default: this one).
        threads: torch threads of each child.
        json_path: also write the figures here.
        log: where lines are printed.

    Returns:
        ``machine``, ``code_root`` and ``results`` (one dict per case and size).
    """
    names = list(CASES) if cases is None else list(cases)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f'unknown case(s) {unknown}: expected some of {list(CASES)}')
    machine = machine_info('cpu')
    log(f"machine: {machine.get('cpu')} ({machine.get('cpus')} CPUs), torch {machine['torch']}, "
        f'{threads} thread(s) per child; code: {code_root or ROOT}')
    log(f"{'case':<18} {'image (HxW)':>12} {'input':>9} {'Q':>4} {'peak RSS':>10} {'model':>9} {'time':>8}")
    results: List[dict] = []
    for name in names:
        config, options = CASES[name]
        for size in sizes:
            r = measure_case(osp.join(code_root or ROOT, config), options, size, code_root, threads)
            r.update(case=name, config=config, options=options, size=list(size))
            results.append(r)
            log(f"{name:<18} {size[0]:>5}x{size[1]:<6} {r['input_size'][0]:>4}x{r['input_size'][1]:<4} "
                f"{r['queries']:>4} {r['peak_rss_mib'] / 1024:>8.2f} GB {r['model_rss_mib'] / 1024:>6.2f} GB "
                f"{r['time_s']:>7.1f} s")
    report = dict(machine=machine, code_root=code_root or ROOT, threads=threads, results=results)
    if json_path:
        atomic_write_json(report, json_path)
    return report
