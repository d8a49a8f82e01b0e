"""The set-up's environment probing: the mmcv build env sees the torch of the env it installs into.

A user venv holds its own torch; ``python -m venv --system-site-packages`` made from
it would expose the *base* interpreter's packages instead. Here the user venv holds a
stub torch that differs from the interpreter's, so the check fails if the build env
ever falls back to the base packages again.
"""
import os
import subprocess
import sys
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_ENV = os.path.join(ROOT, 'clearclip_seg', 'setup_env.py')

STUB = {
    '__init__.py': "__version__ = '0.0.1+stub'\nfrom . import version, _C  # noqa\n",
    'version.py': "git_version = 'stub-commit'\ncuda = None\n",
    '_C.py': '_GLIBCXX_USE_CXX11_ABI = True\n',
}


def run(python, *args):
    out = subprocess.run([python, SETUP_ENV, *args], capture_output=True, text=True, timeout=120)
    return out


@pytest.fixture(scope='module')
def user_venv(tmp_path_factory):
    """A venv without system site-packages, holding its own (stub) torch."""
    root = tmp_path_factory.mktemp('user_venv')
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(str(root))
    python = str(root / 'bin' / 'python')
    site = subprocess.check_output([python, '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    os.makedirs(os.path.join(site, 'torch'))
    for name, text in STUB.items():
        with open(os.path.join(site, 'torch', name), 'w') as f:
            f.write(text)
    torch_file = os.path.join(site, 'torch', '__init__.py')
    return python, torch_file


def test_build_env_imports_the_user_venvs_torch(user_venv, tmp_path):
    python, torch_file = user_venv
    made = run(python, 'make-build-env', str(tmp_path / 'build'), '--no-pip')
    assert made.returncode == 0, made.stderr
    build_python = str(tmp_path / 'build' / 'bin' / 'python')
    checked = run(build_python, 'check-build-env', torch_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert '0.0.1+stub' in checked.stdout


def test_check_build_env_rejects_another_torch(user_venv):
    # the interpreter running the tests has the real torch, not the venv's stub
    _, torch_file = user_venv
    checked = run(sys.executable, 'check-build-env', torch_file)
    assert checked.returncode != 0
    assert 'expected' in checked.stderr


def test_wheel_tag_differs_between_torch_builds(user_venv):
    python, _ = user_venv
    stub_tag = run(python, 'wheel-tag')
    real_tag = run(sys.executable, 'wheel-tag')
    assert stub_tag.returncode == 0 and real_tag.returncode == 0, stub_tag.stderr + real_tag.stderr
    assert stub_tag.stdout.strip().startswith('torch0.0.1_stub-py')
    assert stub_tag.stdout.strip() != real_tag.stdout.strip()
