#!/usr/bin/env bash
# Install mmcv 2.1.0 with its compiled ops (MMSeg 1.2.2 imports mmcv.ops, so
# mmcv-lite does not work), building it from source once per machine.
#
# * Skips everything when a working mmcv 2.1.0 with ops is already importable.
# * Otherwise installs a cached wheel from $CLEARCLIP_CACHE/wheels/<torch tag>/.
# * Otherwise downloads the sdist, raises its hard-coded C++ standard to the one
#   the installed torch's headers need, builds the wheel (11-27 min on two
#   cores), caches it and installs it.
#
# GPU users: set FORCE_CUDA=1 (and TORCH_CUDA_ARCH_LIST) to build the CUDA ops,
# or install OpenMMLab's prebuilt wheel where one exists for your torch/CUDA pair.
set -euo pipefail

PY=${PYTHON:-python}
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
CACHE=${CLEARCLIP_CACHE:-$HOME/.cache/clearclip-seg}

if $PY - "$MMCV_VERSION" <<'PYEOF' 2>/dev/null
import sys
import mmcv, mmcv.ops  # noqa: F401  (the compiled ops must load)
sys.exit(0 if mmcv.__version__ == sys.argv[1] else 1)
PYEOF
then
    echo "[install_mmcv] mmcv $MMCV_VERSION with ops already works; nothing to do"
    exit 0
fi

# The wheel links against torch's C++ library: key the cache by everything that
# changes that ABI (version, build commit, CUDA, C++ ABI flag, Python), so two
# environments with different torch builds never share a wheel.
TAG=$($PY "$(dirname "$0")/../clearclip_seg/setup_env.py" wheel-tag)
TAG="$TAG-cudaops${FORCE_CUDA:-0}"
WHEEL_DIR="$CACHE/wheels/$TAG"
mkdir -p "$WHEEL_DIR"

wheel=$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    echo "[install_mmcv] no cached wheel in $WHEEL_DIR: building mmcv $MMCV_VERSION from source (11-27 min on 2 cores)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # mmcv's setup.py imports pkg_resources, which current setuptools dropped:
    # build in a throwaway venv with an older setuptools that sees the torch of
    # the environment we install into. `venv --system-site-packages` alone would
    # expose the *base* interpreter's site-packages (wrong when $PY is itself a
    # venv), so the target's site-packages are added with a .pth file, after the
    # build venv's own (its setuptools wins).
    $PY "$(dirname "$0")/../clearclip_seg/setup_env.py" make-build-env "$work/venv"
    "$work/venv/bin/python" -m pip install -q "setuptools<70" wheel
    "$work/venv/bin/python" "$(dirname "$0")/../clearclip_seg/setup_env.py" check-build-env "$($PY -c 'import torch; print(torch.__file__)')"
    "$work/venv/bin/python" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
        "mmcv==$MMCV_VERSION" -d "$work"
    tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
    src="$work/mmcv-$MMCV_VERSION"
    # mmcv hard-codes -std=c++14/17; use the standard torch's own extensions use.
    "$work/venv/bin/python" - "$src/setup.py" <<'PYEOF'
import inspect, re, sys
import torch.utils.cpp_extension as ce
stds = [int(s) for s in re.findall(r"c\+\+(\d\d)'", inspect.getsource(ce))]
std = max(stds) if stds else 17
path = sys.argv[1]
text = open(path).read()
patched, n = re.subn(r"std([=:])c\+\+1[47]", lambda m: f"std{m.group(1)}c++{std}", text)
open(path, 'w').write(patched)
print(f'[install_mmcv] setup.py: {n} C++ standard flags set to c++{std}')
PYEOF
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$work/venv/bin/python" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" . )
    built=$(ls "$work"/dist/mmcv-*.whl | head -n 1)
    # Atomic publish, so a killed build never leaves a half-written cached wheel.
    cp "$built" "$WHEEL_DIR/.tmp-$(basename "$built")"
    mv "$WHEEL_DIR/.tmp-$(basename "$built")" "$WHEEL_DIR/$(basename "$built")"
    wheel="$WHEEL_DIR/$(basename "$built")"
fi

echo "[install_mmcv] installing $wheel"
$PY -m pip install -q --no-deps --force-reinstall "$wheel"
# mmcv's own dependencies (addict, yapf, opencv-python, numpy<2...) come from requirements.txt.
$PY -c "import mmcv, mmcv.ops; print('[install_mmcv] mmcv', mmcv.__version__, 'with ops OK')"
