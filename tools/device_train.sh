#!/usr/bin/env bash
# Continue the shipped CPU model on a lent GPU machine in ONE device call: render fresh
# packs there (16 cores, the NVIDIA EGL driver), train on the GPU, and bring the weights
# back under $OUT (fp16, one model-store folder). A device call gets the tracked tree plus
# at most 8 carried paths, 64 MiB in all, for at most 10 minutes
# (/work/.library/device/README.md); see docs/training.md, "A GPU session".
#
# Here, first (makes .carry/ and .whl/, both git-ignored, and checks the size):
#     bash tools/device_train.sh --prepare
# Then one device call (the 96 px model must be out of the working tree for the size):
#     run(command="bash tools/device_train.sh", carry=[".carry", ".whl"], timeout_s=590)
# Here, after (the weights come back in parts, each under the 16 MiB a file may have):
#     cp -r <files_at>/jmlr_mnv2_gpu runs/ && cd runs/jmlr_mnv2_gpu && cat model.safetensors.part_* > model.safetensors
#     jmlr eval --model runs/jmlr_mnv2_gpu --data data/synth_test
#
# Knobs (environment): PACK_SECONDS (150) and LEGACY_SECONDS (60) of rendering,
# TRAIN_MINUTES (5), INPUT_SIZE (128), BATCH (256), LR (3e-4 at that batch), SEED (101).
# A CPU dry run of the whole path: DRY_RUN=1 bash tools/device_train.sh (tiny sizes, $OUT
# defaults to /tmp/device_out).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  facemodel="${JMLR_FACEMODEL:-../shared/facemodel/ict_facekit.npz}"
  mkdir -p .carry/facemodel .carry/gl .whl
  cp "$facemodel" .carry/facemodel/ict_facekit.npz
  # The device's Python 3.12 lacks only the renderer's bindings (its image lists torch,
  # numpy, opencv, scipy, scikit-image, safetensors, pyyaml, pillow, tqdm).
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "moderngl>=5.8" "glcontext>=2.5"
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  # shellcheck disable=SC2086
  apt-get $o update -qq && (cd .carry/gl && apt-get $o download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
  tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  carried=$(du -cb .carry .whl | tail -1 | cut -f1)
  echo "tracked tree $((tracked / 1048576)) MiB + carried $((carried / 1048576)) MiB (limit 64 MiB)"
  if [ $((tracked + carried)) -gt $((64 * 1048576)) ]; then
    echo "too large: move model_store/jmlr_mnv2_96_cpu out of the working tree for the call" \
         "(mv model_store/jmlr_mnv2_96_cpu /tmp/; git checkout model_store afterwards)"
  fi
  exit 0
fi

PACK_SECONDS=${PACK_SECONDS:-150}
LEGACY_SECONDS=${LEGACY_SECONDS:-60}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
INPUT_SIZE=${INPUT_SIZE:-128}
BATCH=${BATCH:-256}
LR=${LR:-0.0003}
SEED=${SEED:-101}
WORKERS=$(nproc)
device=cuda
images=400000
if [ "${DRY_RUN:-0}" = 1 ]; then
  PACK_SECONDS=60; LEGACY_SECONDS=30; TRAIN_MINUTES=0.3; BATCH=16; WORKERS=2; device=cpu; images=64
  OUT=${OUT:-/tmp/device_out}
fi
: "${OUT:?OUT is set by the device tool}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JMLR_FACEMODEL="$PWD/.carry/facemodel/ict_facekit.npz"

if [ -d .carry/gl ] && [ "$device" = cuda ]; then
  for f in .carry/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
if [ -d .whl ] && [ "$device" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
PY=python3
[ -x .venv/bin/python ] && [ "$device" = cpu ] && PY=.venv/bin/python
jmlr() { "$PY" -m jmlr.cli "$@"; }

{
  date
  nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  "$PY" -c "from jmlr.synth.render_gl import gl_available; print('GL renderer:', gl_available())"

  # The packs render until their time is up; every finished chunk is used (a cut chunk is
  # not listed). The same specs as data/pack_v5 and data/pack_legacy2, other seeds.
  timeout "$PACK_SECONDS" "$PY" -m jmlr.cli pack --out /tmp/pack --images $images --size 160 --zoom 0.7 \
    --seed "$SEED" --batch 16 --workers "$WORKERS" --no-progress || true
  pkill -f "jmlr.cli pack" || true  # timeout stops the parent only; its workers would render on
  timeout "$LEGACY_SECONDS" "$PY" -m jmlr.cli pack --out /tmp/pack_legacy --images $images --zoom 0.7 \
    --seed $((SEED + 1)) --heads legacy --world legacy --workers "$WORKERS" --no-progress || true
  pkill -f "jmlr.cli pack" || true
  ls /tmp/pack /tmp/pack_legacy | grep -c chunk_ || true

  jmlr train --config cpu_mnv2_96 --init model_store/jmlr_mnv2_128_cpu --device "$device" \
    --packs /tmp/pack /tmp/pack_legacy --set input_size="$INPUT_SIZE" --batch-size "$BATCH" \
    --set optim.lr="$LR" --set optim.lr_batch="$BATCH" --set data.num_workers="$WORKERS" \
    --set threads=null --set progress=false --set heldout=null --max-minutes "$TRAIN_MINUTES" \
    --out /tmp/run
  jmlr export /tmp/run/ckpt --name jmlr_mnv2_gpu --store "$OUT" --dtype fp16 --overwrite \
    --description "JMLR MobileNetV2, the shipped CPU model continued on a GPU for $TRAIN_MINUTES min (tools/device_train.sh)"
  # A returned file may have 16 MiB; the fp16 weights have 20 MB. Here: cat the parts back
  # into model.safetensors (the manifest's sha256 checks the join).
  (cd "$OUT/jmlr_mnv2_gpu" && split -b 12M model.safetensors model.safetensors.part_ && rm model.safetensors)
  cp /tmp/run/log.csv "$OUT/train_log.csv"
  date
} 2>&1 | tee "$OUT/device_log.txt"
