#!/usr/bin/env bash
# One-command set-up on a fresh machine (Python 3.11), then a smoke run of the
# main job: tools/test.py on the VOC21 config with a synthetic VOC2012-layout
# dataset and a tiny random CLIP (no weights, no data, no network needed).
#
#   bash tools/setup.sh            # install + smoke run
#   SKIP_SMOKE=1 bash tools/setup.sh
#
# torch/torchvision: plain pip (this machine has the wheels on disk); mmcv 2.1.0
# is built from source once per machine and cached (tools/install_mmcv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

echo "[setup] python deps (requirements.txt)"
$PY -m pip install -q -r requirements.txt
echo "[setup] mmcv with ops"
PYTHON=$PY bash tools/install_mmcv.sh
echo "[setup] clearclip_seg (editable)"
$PY -m pip install -q --no-deps --no-build-isolation -e .
$PY -c "import clearclip_seg, mmseg, mmcv, open_clip, torch; print('[setup] ok: torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmseg', mmseg.__version__, '| open_clip', open_clip.__version__)"

if [ -z "${SKIP_SMOKE:-}" ]; then
    $PY tools/smoke_run.py
fi
