"""Environment probing for the set-up scripts (stdlib only; runs before the package is installed).

``tools/install_mmcv.sh`` builds mmcv in a throwaway virtualenv with an old
setuptools. That build must compile against the torch of the environment the
user installs into, which may itself be a virtualenv or a conda env. ``python -m
venv --system-site-packages`` exposes only the *base* interpreter's
site-packages, so this module adds the target environment's site-packages to the
build env through a ``.pth`` file (appended after the build env's own
site-packages, so the build env's setuptools still wins).

Usage (as a file, so it works before ``pip install -e .``)::

    python clearclip_seg/setup_env.py wheel-tag
    python clearclip_seg/setup_env.py make-build-env DIR
    DIR/bin/python clearclip_seg/setup_env.py check-build-env EXPECTED_TORCH_FILE
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import venv

PTH_NAME = '_clearclip_parent_env.pth'


def target_site_dirs() -> list[str]:
    """Site-packages directories of the running interpreter's environment, in import order."""
    dirs = []
    for key in ('purelib', 'platlib'):
        path = sysconfig.get_paths()[key]
        if path not in dirs and os.path.isdir(path):
            dirs.append(path)
    # Directories that the environment adds itself (user site, .pth of a conda env) come along.
    for path in sys.path:
        if path.endswith('site-packages') and path not in dirs and os.path.isdir(path):
            dirs.append(path)
    return dirs


def wheel_tag() -> str:
    """Cache key for a compiled mmcv wheel: everything that changes torch's C++ ABI."""
    import torch

    build = '|'.join([
        torch.__version__,
        str(getattr(torch.version, 'git_version', '')),
        str(torch.version.cuda),
        str(int(torch._C._GLIBCXX_USE_CXX11_ABI)),
        sys.implementation.cache_tag,
    ])
    digest = hashlib.sha256(build.encode()).hexdigest()[:12]
    py = f'py{sys.version_info[0]}{sys.version_info[1]}'
    return f"torch{torch.__version__}-{py}-{digest}".replace('+', '_')


def make_build_env(directory: str, with_pip: bool = True) -> str:
    """Create a venv at ``directory`` whose imports fall back to this environment's packages."""
    venv.EnvBuilder(with_pip=with_pip, system_site_packages=True, clear=True).create(directory)
    python = os.path.join(directory, 'bin', 'python')
    build_site = subprocess.check_output(
        [python, '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    with open(os.path.join(build_site, PTH_NAME), 'w') as f:
        f.write('\n'.join(target_site_dirs()) + '\n')
    return python


def check_build_env(expected_torch_file: str) -> None:
    """Exit non-zero unless this interpreter imports the torch at ``expected_torch_file``."""
    import torch

    got = os.path.realpath(torch.__file__)
    want = os.path.realpath(expected_torch_file)
    if got != want:
        sys.exit(f'[install_mmcv] the build env imports torch from {got}, expected {want}')
    print(f'[install_mmcv] build env uses torch {torch.__version__} from {os.path.dirname(got)}')


def main(argv: list[str]) -> None:
    if argv[:1] == ['wheel-tag']:
        print(wheel_tag())
    elif argv[:1] == ['make-build-env'] and len(argv) in (2, 3):
        make_build_env(argv[1], with_pip='--no-pip' not in argv[2:])
    elif argv[:1] == ['check-build-env'] and len(argv) == 2:
        check_build_env(argv[1])
    else:
        sys.exit('usage: setup_env.py wheel-tag | make-build-env DIR [--no-pip] | check-build-env TORCH_FILE')


if __name__ == '__main__':
    main(sys.argv[1:])
