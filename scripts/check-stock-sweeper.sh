#!/usr/bin/env bash
# Forward compatibility with Hydra 1.4 (the `stock-sweeper` extra): in a second, torch-free
# venv with hydra-core 1.4 (release candidate), hydra-optuna-sweeper 1.4 and optuna 4,
#   1. rnnlab's configs compose (every search config, sampler and pruner), and
#   2. both sweepers, hydra/sweeper=optuna (stock) and hydra/sweeper=rnnlab_optuna, run a
#      small plain Hydra app (a function of x and y) to the end.
# If the registry lacks those versions, it says why and exits 0 (CI stays green).
#
#   scripts/check-stock-sweeper.sh            # venv in .venv-stock (reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${STOCK_VENV:-$ROOT/.venv-stock}
PKGS=(
  "hydra-core>=1.4.0rc3,<1.5" "omegaconf>=2.4.1rc1,<2.5" "hydra-optuna-sweeper>=1.4.0rc3,<1.5"
  "optuna>=4.2,<5" "sqlalchemy>=2" "cmaes>=0.10" "hydra-joblib-launcher>=1.2" "pyyaml>=6"
)
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -m pip install -q "${PKGS[@]}" >"$VENV/pip.log" 2>&1; then
  echo "check-stock-sweeper: skipped: pip could not install ${PKGS[*]}:"
  grep -E "^ERROR" "$VENV/pip.log" | head -3 || tail -3 "$VENV/pip.log"
  exit 0
fi
"$VENV/bin/python" -m pip check
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "check-stock-sweeper: torch is installed in $VENV: not the torch-free venv intended" >&2
  exit 1
fi
# rnnlab from this checkout, without its dependencies (torch): the sweeper and configs need
# none of them. PYTHONPATH makes src/hydra_plugins part of the hydra_plugins namespace.
export PYTHONPATH="$ROOT/src"
"$VENV/bin/python" - "$ROOT" <<'PY'
import subprocess, sys, tempfile, textwrap
from pathlib import Path

import hydra, optuna
from hydra import compose, initialize_config_dir

root = Path(sys.argv[1])
print(f"hydra-core {hydra.__version__}, optuna {optuna.__version__}")
searches = sorted(p.stem for p in (root / "conf/hparams_search").glob("*.yaml"))
with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
    n = 0
    for search in searches:
        for pruner in ("none", "median", "successive_halving", "hyperband"):
            compose("train", [f"hparams_search={search}", f"hydra/sweeper/pruner={pruner}"],
                    return_hydra_config=True)
            n += 1
    for sampler in ("tpe", "random", "grid", "cmaes", "qmc", "gp", "nsgaii"):
        for sweeper in ("rnnlab_optuna", "optuna"):
            compose("train", [f"hydra/sweeper={sweeper}", f"hydra/sweeper/sampler={sampler}"],
                    return_hydra_config=True)
            n += 1
print(f"rnnlab's configs: {n} compositions OK ({', '.join(searches)})")

app = textwrap.dedent('''
    import hydra

    @hydra.main(version_base=None, config_path=".", config_name="config")
    def main(cfg):
        return (cfg.x - 1) ** 2 + (cfg.y + 2) ** 2

    if __name__ == "__main__":
        main()
''')
config = "x: 0.0\ny: 0.0\n"
with tempfile.TemporaryDirectory() as tmp:
    Path(tmp, "app.py").write_text(app)
    Path(tmp, "config.yaml").write_text(config)
    for sweeper in ("optuna", "rnnlab_optuna"):
        cmd = [sys.executable, "app.py", "-m", f"hydra/sweeper={sweeper}",
               "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0",
               "x=interval(-3,3)", "y=interval(-3,3)", f"hydra.sweep.dir={tmp}/{sweeper}",
               f"hydra.sweeper.storage=sqlite:///{tmp}/{sweeper}.db",
               "hydra.sweeper.study_name=plain"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            sys.exit(f"{sweeper} failed on a plain app:\n{proc.stderr[-3000:]}")
        study = optuna.load_study(study_name="plain", storage=f"sqlite:///{tmp}/{sweeper}.db")
        states = sorted({t.state.name for t in study.trials})
        print(f"hydra/sweeper={sweeper}: {len(study.trials)} trials {states}, best value "
              f"{study.best_value:.3f}")
        assert len(study.trials) == 4 and states == ["COMPLETE"], states
PY
echo "check-stock-sweeper: OK"
