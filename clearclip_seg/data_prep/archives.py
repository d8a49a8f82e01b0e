"""Official downloads: the archive table, downloads with progress, checksums, extraction.

Downloads go through pooch (a temporary file moved into place once its checksum
matches, with retries); extraction goes to a hidden temporary folder renamed into
place, so an extracted folder that exists is finished.
"""
import hashlib
import json
import os
import shutil
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from tqdm import tqdm

from .errors import PrepareError
from .files import atomic_write_text


@dataclass(frozen=True)
class Archive:
    """An official download."""
    filename: str
    url: Optional[str]            # None: needs a login, fetch by hand
    page: str                     # where a person gets it
    checksum: Optional[Tuple[str, str]] = None  # (hashlib algorithm, hex digest), if known


ARCHIVES: Dict[str, Archive] = {
    'voc2012': Archive('VOCtrainval_11-May-2012.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/',
                       ('md5', '6cd6e144f989b92b3379bac3b3de84fd')),
    'voc2010': Archive('VOCtrainval_03-May-2010.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar',
                       'http://host.robots.ox.ac.uk/pascal/VOC/voc2010/',
                       ('md5', 'da459979d0c395079b5c75ee67908abb')),
    'context_json': Archive('trainval_merged.json',
                            'https://codalabuser.blob.core.windows.net/public/trainval_merged.json',
                            'https://cs.stanford.edu/~roozbeh/pascal-context/ '
                            '(merged annotations as used by MMSegmentation)'),
    'coco_val2017': Archive('val2017.zip', 'http://images.cocodataset.org/zips/val2017.zip',
                            'https://cocodataset.org/#download',
                            ('md5', '442b8da7639aecaf257c1dceb8ba8c80')),
    'coco_stuffthingmaps': Archive(
        'stuffthingmaps_trainval2017.zip',
        'http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip',
        'https://github.com/nightrome/cocostuff#downloads'),
    'ade20k': Archive('ADEChallengeData2016.zip',
                      'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip',
                      'http://sceneparsing.csail.mit.edu/',
                      ('sha1', '219e1696abb36c8ba3a3afe7fb2f4b4606a897c7')),
    'cityscapes_images': Archive('leftImg8bit_trainvaltest.zip', None,
                                 'https://www.cityscapes-dataset.com/downloads/ (login; packageID=3)'),
    'cityscapes_gt': Archive('gtFine_trainvaltest.zip', None,
                             'https://www.cityscapes-dataset.com/downloads/ (login; packageID=1)'),
}

CHECKSUM_RECORD = 'checksums.json'


DOWNLOAD_RETRIES = 3  # further tries after a failed download or a checksum mismatch (pooch waits 1, 2, 3 s)


def download(url: str, dest, checksum: Optional[Tuple[str, str]] = None, retries: int = DOWNLOAD_RETRIES) -> Path:
    """Download ``url`` to ``dest`` through pooch: a progress bar, retries, and the checksum checked.

    pooch streams into a temporary file in ``dest``'s folder and moves it into place
    only when its hash matches, so ``dest`` existing means a complete, verified download.

    Args:
        url: Source URL (http, https or ftp).
        dest: Destination file.
        checksum: ``(hashlib algorithm, hex digest)`` the file must have, or None.
        retries: further tries after a network failure or a checksum mismatch.

    Returns:
        ``dest``.

    Raises:
        PrepareError: the download failed every try, or its checksum does not match.
    """
    import pooch  # lazy: only a download needs it (and requests)
    import requests

    dest = Path(dest)
    known_hash = f'{checksum[0]}:{checksum[1]}' if checksum else None
    store = pooch.create(path=dest.parent, base_url='', registry={dest.name: known_hash}, urls={dest.name: url},
                         retry_if_failed=retries, allow_updates=False)
    downloader = pooch.HTTPDownloader(progressbar=True, headers={'User-Agent': 'clearclip-seg/prepare_data'},
                                      timeout=60) if url.startswith('http') else None
    try:
        return Path(store.fetch(dest.name, downloader=downloader))
    except ValueError as e:  # pooch: the hash of the downloaded file differs from the known one
        raise PrepareError(f'{url}: the download does not match its {checksum[0] if checksum else ""} checksum '
                           f'after {1 + retries} tries ({str(e).splitlines()[0][:160]}); fetch it by hand into '
                           f'{dest.parent} and re-run with --no-download') from None
    except (requests.exceptions.RequestException, OSError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else ''
        raise PrepareError(f'{url}: cannot download ({type(e).__name__}: {first}); fetch it by hand into '
                           f'{dest.parent} and re-run with --no-download') from None


def file_digests(path, algorithms: Iterable[str] = ('sha256',)) -> Dict[str, str]:
    """Hash a file with several algorithms in one pass (with a progress bar for big files).

    Args:
        path: The file.
        algorithms: hashlib names.

    Returns:
        ``{algorithm: hex digest}``.
    """
    path = Path(path)
    hashes = {a: hashlib.new(a) for a in dict.fromkeys(algorithms)}
    size = path.stat().st_size
    with open(path, 'rb') as f, tqdm(total=size, unit='B', unit_scale=True, unit_divisor=1024,
                                     desc=f'checksum {path.name}', disable=size < (64 << 20)) as bar:
        while True:
            chunk = f.read(4 << 20)
            if not chunk:
                break
            for h in hashes.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {a: h.hexdigest() for a, h in hashes.items()}


def verify_archive(path, expected: Optional[Tuple[str, str]] = None,
                   record_file=None) -> Dict[str, str]:
    """Check an archive's checksum; record its sha256 (and skip re-hashing an unchanged file).

    Args:
        path: The archive.
        expected: ``(algorithm, hex digest)`` when known; otherwise only recorded.
        record_file: JSON file of computed digests (default: ``checksums.json`` beside ``path``).

    Returns:
        The digests computed (or recorded earlier) for the file.

    Raises:
        PrepareError: On a checksum mismatch.
    """
    path = Path(path)
    record_file = Path(record_file) if record_file else path.parent / CHECKSUM_RECORD
    try:
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
    except (OSError, ValueError):
        record = {}
    st = path.stat()
    entry = record.get(path.name)
    algos = ['sha256'] + ([expected[0]] if expected else [])
    if not (entry and entry.get('size') == st.st_size and entry.get('mtime_ns') == st.st_mtime_ns
            and all(a in entry for a in algos)):
        entry = {'size': st.st_size, 'mtime_ns': st.st_mtime_ns, **file_digests(path, algos)}
        if not expected:
            print(f'  {path.name}: no known checksum; sha256 {entry["sha256"]} (recorded in {record_file})')
    if expected:
        algo, want = expected
        if entry[algo].lower() != want.lower():
            raise PrepareError(f'{path}: {algo} is {entry[algo]}, expected {want} (corrupt or different '
                               'file); delete it and re-run, or pass --no-verify')
    record[path.name] = entry
    atomic_write_text(record_file, json.dumps(record, indent=1, sort_keys=True) + '\n')
    return entry


def ensure_archive(key: str, download_dir, no_download: bool = False, no_verify: bool = False) -> Path:
    """Return the path of an official archive, downloading and verifying it as needed.

    Args:
        key: A key of ``ARCHIVES``.
        download_dir: Where archives are kept.
        no_download: Only use an archive already present.
        no_verify: Skip the checksum.

    Returns:
        The archive path.

    Raises:
        PrepareError: When it is missing and cannot be downloaded, or fails its checksum.
    """
    arc = ARCHIVES[key]
    path = Path(download_dir) / arc.filename
    if not path.exists():
        if arc.url is None:
            raise PrepareError(f'{path} not found: {arc.filename} needs a login; download it from '
                               f'{arc.page} into {Path(download_dir)}')
        if no_download:
            raise PrepareError(f'{path} not found (--no-download): get it from {arc.url} or {arc.page}')
        print(f'downloading {arc.url}')
        download(arc.url, path, None if no_verify else arc.checksum)
    if not no_verify:
        verify_archive(path, arc.checksum)
    return path


def _norm_member(name: str) -> str:
    while name.startswith('./'):
        name = name[2:]
    return name


def _locate_prefix(names: Sequence[str], wanted: str, archive) -> str:
    """The member prefix in the archive that ends with ``wanted`` (e.g. ``val2017/``)."""
    wanted = wanted.rstrip('/') + '/'
    if any(n.startswith(wanted) for n in names):
        return wanted
    for n in names:
        i = n.find('/' + wanted)
        if i >= 0:
            return n[:i + 1 + len(wanted)]
    raise PrepareError(f'{archive}: no members under {wanted!r}; is this the right archive?')


def _expected_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith('.zip'):
        return 'a zip archive'
    return 'a tar archive' if name.endswith(('.tar', '.tar.gz', '.tgz')) else 'a zip or tar archive'


def extract_subtree(archive, member_prefix: str, dest) -> bool:
    """Extract the members under ``member_prefix`` so that they become ``dest``.

    Extraction goes to a hidden temporary folder next to ``dest`` that is renamed to
    ``dest`` at the end, so ``dest`` existing means the extraction finished.

    Args:
        archive: A .zip or .tar(.gz) file.
        member_prefix: Folder inside the archive, e.g. ``VOCdevkit/VOC2012/``; also found
            when the archive nests it one level deeper.
        dest: The folder to create.

    Returns:
        True when extracted, False when ``dest`` already existed.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f'.tmp-extract-{dest.name}'
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    desc = f'extract {archive.name}:{member_prefix}'
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                prefix = _locate_prefix([_norm_member(i.filename) for i in infos], member_prefix, archive)
                chosen = [i for i in infos if _norm_member(i.filename).startswith(prefix)]
                for info in tqdm(chosen, desc=desc, unit='file'):
                    zf.extract(info, tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                prefix = _locate_prefix([_norm_member(m.name) for m in members], member_prefix, archive)
                chosen = [m for m in members if _norm_member(m.name).startswith(prefix)]
                kwargs = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
                for m in tqdm(chosen, desc=desc, unit='file'):
                    tf.extract(m, tmp, **kwargs)
        else:
            raise PrepareError(f'{archive}: not a zip or tar archive (a truncated download, or another file '
                               f'such as an error page); expected {_expected_kind(archive)}: delete it and '
                               're-run')
        os.replace(tmp / prefix.rstrip('/'), dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        first = (str(e).splitlines() or [''])[0][:120]
        raise PrepareError(f'{archive}: cannot be extracted ({type(e).__name__}: {first}); expected a complete '
                           f'{_expected_kind(archive)[2:]}: it is truncated or damaged, delete it and re-run') from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True

