"""The per-benchmark steps: each turns official downloads into one benchmark's tree.

Where each tree goes is read from the benchmark table (``clearclip_seg/protocol/benchmarks.py``).
Every step is safe to re-run: what is already there is skipped.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..protocol.benchmarks import BENCHMARKS, get_benchmark
from ..protocol.data_roots import rel_to_data_dir
from . import convert as _convert
from .archives import ensure_archive, extract_subtree
from .convert import (ConversionResult, convert_cityscapes, convert_coco_object, convert_coco_stuff,
                      run_conversions)
from .errors import PrepareError
from .files import atomic_write_text

@dataclass
class Options:
    """Settings shared by the steps.

    ``data_root`` is the data folder the trees go under; ``roots`` names single
    benchmarks' own roots (``--data-root KEY=PATH``), which win over it.
    """
    data_root: Path
    download_dir: Path
    nproc: int = 1
    no_download: bool = False
    no_verify: bool = False
    with_train: bool = False
    from_raw: bool = False
    ann_dir: Optional[Path] = None
    cityscapes_method: str = 'auto'
    check: bool = True
    roots: Dict[str, Path] = field(default_factory=dict)


def bench_root(opts: Options, key: str) -> Path:
    """The data root of benchmark ``key``: its own (``opts.roots``: the key, or a benchmark reading the same
    tree, e.g. voc20 for voc21), else under ``opts.data_root`` (from the benchmark table)."""
    table_root = get_benchmark(key).data_root
    for other in [key] + [k for k, b in BENCHMARKS.items() if b.data_root == table_root and k != key]:
        if other in opts.roots:
            return Path(opts.roots[other])
    rel = rel_to_data_dir(get_benchmark(key))
    return rel if rel.is_absolute() else opts.data_root / rel


def _extract(opts: Options, archive_key: str, member_prefix: str, dest: Path) -> None:
    if dest.exists():
        print(f'  {dest}: present, skipped')
        return
    arc = ensure_archive(archive_key, opts.download_dir, opts.no_download, opts.no_verify)
    extract_subtree(arc, member_prefix, dest)
    print(f'  {dest}: extracted from {arc.name}')


def _report(result: ConversionResult, what: str) -> None:
    print(f'  {what}: {result.converted} written, {result.skipped} already there ({result.total} in all)')


def prepare_voc(opts: Options) -> List[str]:
    """VOC2012 trainval tar -> data/VOCdevkit/VOC2012 (voc21, voc20)."""
    _extract(opts, 'voc2012', 'VOCdevkit/VOC2012/', bench_root(opts, 'voc21'))
    return ['voc21']


def _load_detail(json_path: Path, img_dir: Path):
    try:
        from detail import Detail
    except ImportError:
        raise PrepareError("the Pascal Context conversion needs the Detail API: pip install "
                           "'git+https://github.com/zhanghang1989/detail-api.git#subdirectory=PythonAPI'")
    return Detail(str(json_path), str(img_dir), 'trainval')


def prepare_context(opts: Options) -> List[str]:
    """VOC2010 tar + trainval_merged.json -> SegmentationClassContext (0..59) and split files."""
    b = get_benchmark('context60')
    root = bench_root(opts, 'context60')
    _extract(opts, 'voc2010', 'VOCdevkit/VOC2010/', root)
    ann_dir = root / b.ann_dir
    split_dir = (root / b.ann_file).parent
    phases = ['train', 'val'] if opts.with_train else ['val']

    def _done(phase: str) -> bool:
        split = split_dir / f'{phase}.txt'
        if not split.exists():
            return False
        ids = [s.strip() for s in split.read_text().split() if s.strip()]
        return all((ann_dir / f'{i}{b.seg_map_suffix}').exists() for i in ids)

    if all(_done(p) for p in phases) and (split_dir / 'train.txt').exists():
        print(f'  {ann_dir}: complete for {"/".join(phases)}, skipped')
        return ['context60']
    json_path = ensure_archive('context_json', opts.download_dir, opts.no_download, opts.no_verify)
    detail = _load_detail(json_path, root / b.img_dir)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for phase in ('train', 'val'):
        imgs = sorted(detail.getImgs(phase=phase), key=lambda im: im['file_name'])
        stems = [Path(im['file_name']).stem for im in imgs]
        atomic_write_text(split_dir / f'{phase}.txt', ''.join(s + '\n' for s in stems))
        print(f'  {split_dir / (phase + ".txt")}: {len(stems)} ids')
        if phase not in phases:
            continue
        tasks = [('context', im['image_id'], str(ann_dir / f'{s}{b.seg_map_suffix}'))
                 for im, s in zip(imgs, stems)]
        _convert._DETAIL = detail  # inherited by the forked workers
        try:
            _report(run_conversions(tasks, opts.nproc, desc=f'context {phase} labels'), f'{phase} labels')
        finally:
            _convert._DETAIL = None
    return ['context60']


def prepare_coco_stuff(opts: Options) -> List[str]:
    """val2017.zip + stuffthingmaps_trainval2017.zip -> coco_stuff164k (images, *_labelTrainIds.png)."""
    b = get_benchmark('coco_stuff164k')
    root = bench_root(opts, 'coco_stuff164k')
    _extract(opts, 'coco_val2017', 'val2017/', root / b.img_dir)
    _extract(opts, 'coco_stuffthingmaps', 'val2017/', root / b.ann_dir)
    _report(convert_coco_stuff(root / b.ann_dir, opts.nproc), 'labelTrainIds')
    return ['coco_stuff164k']


def prepare_coco_object(opts: Options) -> List[str]:
    """COCO-Stuff-164k masks -> *_instanceTrainIds.png (things 1..80, everything else 0)."""
    b = get_benchmark('coco_object')
    if opts.ann_dir is not None:
        ann_dir = Path(opts.ann_dir)
    else:
        if opts.from_raw:  # images + raw maps only
            root = bench_root(opts, 'coco_stuff164k')
            sb = get_benchmark('coco_stuff164k')
            _extract(opts, 'coco_val2017', 'val2017/', root / sb.img_dir)
            _extract(opts, 'coco_stuffthingmaps', 'val2017/', root / sb.ann_dir)
        else:
            prepare_coco_stuff(opts)
        ann_dir = bench_root(opts, 'coco_object') / b.ann_dir
    _report(convert_coco_object(ann_dir, opts.nproc, from_raw=opts.from_raw), 'instanceTrainIds')
    return ['coco_object'] if opts.ann_dir is None else []


def prepare_cityscapes(opts: Options) -> List[str]:
    """leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip -> cityscapes (*_gtFine_labelTrainIds.png)."""
    root = bench_root(opts, 'cityscapes')
    splits = ['train', 'val'] if opts.with_train else ['val']
    for split in splits:
        _extract(opts, 'cityscapes_images', f'leftImg8bit/{split}/', root / 'leftImg8bit' / split)
        _extract(opts, 'cityscapes_gt', f'gtFine/{split}/', root / 'gtFine' / split)
        _report(convert_cityscapes(root / 'gtFine' / split, opts.nproc, opts.cityscapes_method),
                f'{split} labelTrainIds')
    return ['cityscapes']


def prepare_ade20k(opts: Options) -> List[str]:
    """ADEChallengeData2016.zip -> ade/ADEChallengeData2016 (labels used as they are)."""
    _extract(opts, 'ade20k', 'ADEChallengeData2016/', bench_root(opts, 'ade20k'))
    return ['ade20k']


STEPS: Dict[str, Callable[[Options], List[str]]] = {
    'voc': prepare_voc,
    'context': prepare_context,
    'coco_stuff164k': prepare_coco_stuff,
    'coco_object': prepare_coco_object,
    'cityscapes': prepare_cityscapes,
    'ade20k': prepare_ade20k,
}

