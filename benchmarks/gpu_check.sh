#!/usr/bin/env bash
# The GPU checks of issue 13 as ONE command on the device machine (at most 9 minutes,
# about 5 expected):
#   0. what the machine is; 1. the GPU tests (graphs == eager within float tolerance over a
#   few epochs, last shorter batch, lr recapture, bf16, memory cap, a real train.py run);
#   2. what bf16 autocast does with each cuDNN RNN; 3. benchmarks/gpu_sweep.py on full MNIST
#   (samples/s and s/epoch per cell in eager/graphs/bf16, then trials/hour for N=1,2,4,8).
# Prepare first, on the CPU machine: bash benchmarks/gpu_prepare.sh (wheels + MNIST), then
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=590)
# Everything is logged to $OUT/gpu_check.log (comes back even if the time runs out);
# gpu_sweep.json and junit.xml land in $OUT too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=0
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY=${PY:-python3}
# One device command may run 600 s; finish by BUDGET_S so that the log comes back whole.
BUDGET_S=${BUDGET_S:-540}
left() { echo $((BUDGET_S - SECONDS)); }

if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi

echo "== 0. machine  $(date -u +%FT%TZ)"
nvidia-smi -L || true
"$PY" -c "import torch, hydra, optuna; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), '|', torch.cuda.get_device_name(0), '| hydra', hydra.__version__, 'optuna', optuna.__version__)" || exit 1

echo "== 1. GPU tests  $(date -u +%T)"
timeout 200 "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/junit.xml" \
  tests/test_gpu.py tests/test_steps.py
echo "pytest exit: $?"

echo "== 2. bf16 autocast on CUDA, per cell  $(date -u +%T)"
timeout 60 "$PY" - <<'PYEOF'
import torch
from rnnlab.models import SequenceClassifier
x = torch.randn(64, 28, 28, device="cuda")
for cell in ("rnn", "lstm", "gru"):
    m = SequenceClassifier(cell=cell).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = m.rnn(x)
        logits = m(x)
    print(f"{cell}: rnn output {out.dtype}, logits {logits.dtype}")
PYEOF

echo "== 3. gpu_sweep  $(date -u +%T)"
echo "($(left) s left)"
timeout "$(left)" "$PY" benchmarks/gpu_sweep.py --data-root shared/data/mnist/raw \
  --timed-epochs 1 --trials "${GPU_CHECK_TRIALS:-16}" --jobs "${GPU_CHECK_JOBS:-1,2,4,8}" \
  --out "$OUT"
echo "gpu_sweep exit: $?  $(date -u +%T)"
