#!/usr/bin/env bash
# bench/gpu_fit.py's GPU side, on a device machine with PyTorch and JAX, no TensorFlow and no
# network: Keras and its small dependencies come from wheels carried in bench/.gpu/wheels
# (made here with `pip download --only-binary=:all: --python-version 3.1x keras==3.15.1 ...`),
# installed where the image lacks them; the JAX backend first, PyTorch's if it fails.
# Writes gpu-<backend>.json under $OUT (the device tool's result folder) or bench/.gpu/out.
set -u
out=${OUT:-bench/.gpu/out}
mkdir -p "$out"
py=$(command -v python3 || command -v python)
"$py" -V
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -1
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1 | tail -1
# Only what the image lacks goes into /tmp/kt (ahead on PYTHONPATH); its JAX, PyTorch and
# NumPy stay as they are.
for pair in keras:keras absl:absl_py namex:namex h5py:h5py optree:optree ml_dtypes:ml_dtypes \
            rich:rich packaging:packaging markdown_it:markdown_it_py mdurl:mdurl pygments:pygments; do
  module=${pair%%:*} wheel=${pair##*:}
  "$py" -c "import $module" 2>/dev/null && continue
  # A wheel is a zip of its package: unpacked, no pip needed (the image may lack it).
  "$py" - "$wheel" <<'PY'
import glob, sys, zipfile
tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
names = [w for w in glob.glob(f"bench/.gpu/wheels/{sys.argv[1]}-*.whl") if "none-any" in w or tag in w]
zipfile.ZipFile(names[0]).extractall("/tmp/kt")
PY
done
export PYTHONPATH=/tmp/kt
kpy=$py
for backend in jax torch; do
  echo "== keras backend $backend"
  KERAS_BACKEND=$backend timeout 240 "$kpy" bench/gpu_fit.py measure --spec bench/.gpu/spec.json \
    --json "$out/gpu-$backend.json" --tickers 64 && break
done
ls -la "$out"
