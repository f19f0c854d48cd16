#!/usr/bin/env bash
# Run HERE (the CPU machine), in the repo root the device tool sends, before
# benchmarks/gpu_check.sh runs on the GPU machine. The GPU image has torch, numpy, pandas,
# scikit-learn, matplotlib, rich, joblib and pytest but not rnnlab's other dependencies, and
# nothing can be fetched there; nor does ../shared travel. This puts into the working tree
# (both folders ignored by git, ~20 MB together):
#   .whl/                     wheels of the missing packages, versions as in this .venv
#   shared/data/mnist/raw/    the four MNIST .gz files
# Then call the device tool:  run(command="bash benchmarks/gpu_check.sh",
#                                 carry=[".whl"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MNIST=${MNIST:-/work/shared/data/mnist/raw}
exclude="$(git rev-parse --git-common-dir)/info/exclude"
for ignored in /.whl/ /shared/; do
  grep -qxF "$ignored" "$exclude" 2>/dev/null || echo "$ignored" >> "$exclude"
done

# The GPU image's Python is 3.12 on x86-64 (/work/.library/device/KINDS.md).
pkgs=(hydra-core omegaconf optuna alembic Mako SQLAlchemy greenlet colorlog cmaes
      hydra-joblib-launcher mlxtend)
pins=()
for p in "${pkgs[@]}"; do
  v=$("$PY" -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}')
  pins+=("$p${v:+==$v}")
done
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is only published as a source
# archive: build its pure-Python wheel here.
"$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3

mkdir -p shared/data/mnist/raw
cp -n "$MNIST"/*.gz shared/data/mnist/raw/
du -sh .whl shared/data/mnist/raw
ls .whl
