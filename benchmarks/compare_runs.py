"""How long `rnnlab compare` takes over many run folders (the bar: 1,000 in <= 0.5 s as a
whole `rnnlab compare` process, median of 3).

    python benchmarks/compare_runs.py [--runs 1000] [--schema 2 1] [--keep DIR]

Writes N synthetic run folders shaped like train.py's (Hydra's config.yaml, hydra.yaml and
overrides.yaml, metrics.csv, summary.json; 2% crashed, 1% corrupt) into a temp folder, then
times: reading them in-process (find_runs + build_table + the printed table), and the whole
command as a fresh process, both `python -m rnnlab.compare` and the `rnnlab` script. Once
with summary.json schema_version 2 (config and choices in the summary: the only file read),
once with version 1 (config from .hydra/ through PyYAML's C loader).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rnnlab import compare
from rnnlab.compare.files import flatten

CONFIG = """\
model:
  _target_: rnnlab.models.SequenceClassifier
  cell: {cell}
  input_size: 28
  hidden_size: {hidden}
  num_layers: {layers}
  batch_first: true
  bidirectional: false
  dropout: {dropout}
  nonlinearity: tanh
  num_classes: 10
data:
  name: mnist_sample
  batch_size: 64
  eval_batch_size: 1000
  val_size: 500
  test_size: 1000
  split_seed: 0
  mean: 0.5
  std: 0.5
optimizer:
  _target_: torch.optim.Adam
  _partial_: true
  lr: {lr}
  weight_decay: 0.0
  foreach: null
  fused: null
trainer:
  epochs: 10
  device: auto
  num_threads: null
  grad_clip_norm: null
  deterministic: true
  progress: auto
  divergence_check_every: 50
  save_checkpoints: true
paths:
  root_dir: ${{hydra:runtime.cwd}}
  output_root: ${{paths.root_dir}}/outputs
  data_dir: ${{paths.root_dir}}/data
  output_dir: ${{hydra:runtime.output_dir}}
seed: {seed}
optimized_metric: val/acc
resume: null
trial: null
"""

# hydra.yaml is long; its size matters for the timing, its content mostly not.
HYDRA = (
    "hydra:\n  run:\n    dir: outputs/runs\n"
    + "".join(f"  filler{i}:\n    key: value {i}\n    other: [1, 2, 3]\n" for i in range(40))
    + "  runtime:\n    version: 1.3.8\n    choices:\n      hparams_search: null\n"
    "      experiment: null\n      hydra: default\n      paths: default\n"
    "      trainer: default\n      scheduler: null\n      optimizer: adam\n"
    "      data: mnist_sample\n      model: {cell}\n      hydra/launcher: basic\n"
    "  verbose: false\n"
)


def write_runs(root: Path, n: int, schema: int = 2, seed: int = 0) -> None:
    rng = random.Random(seed)
    for i in range(n):
        run = root / "multirun" / "2025-01-01" / f"{i // 100:02d}-00-00" / str(i % 100)
        hydra = run / ".hydra"
        hydra.mkdir(parents=True)
        cell = rng.choice(["rnn", "gru", "lstm"])
        lr = rng.choice([1e-4, 3e-4, 1e-3, 3e-3])
        values = dict(
            cell=cell,
            hidden=rng.choice([64, 128, 256]),
            layers=rng.choice([1, 2]),
            dropout=rng.choice([0.0, 0.1]),
            lr=lr,
            seed=i % 3,
        )
        config_text = CONFIG.format(**values)
        (hydra / "config.yaml").write_text(config_text)
        (hydra / "hydra.yaml").write_text(HYDRA.replace("{cell}", cell))
        (hydra / "overrides.yaml").write_text(f"- model={cell}\n- optimizer.lr={lr}\n")
        epochs = 10
        ceiling = rng.uniform(0.85, 0.99)
        accs = [ceiling * (1 - 0.5**e) for e in range(1, epochs + 1)]
        (run / "metrics.csv").write_text(
            "epoch,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,lr,epoch_time_s,"
            "train_samples_per_s\n"
            + "".join(
                f"{e},0.5,{a},0.5,{a},0.5,{a},{lr},2.0,20000\n" for e, a in enumerate(accs, 1)
            )
        )
        if i % 50 == 7:
            continue  # crashed: no summary.json
        summary = {
            "schema_version": schema,
            "status": "completed",
            "reason": None,
            "optimized_metric": "val/acc",
            "objective_mode": "max",
            "objective": max(accs),
            "seed": i % 3,
            "versions": {"rnnlab": "0.1.0", "torch": "2.4.0"},
            "device": "cuda",
            "data_source": "mnist_sample",
            "num_params": 21514,
            "best_epoch": accs.index(max(accs)) + 1,
            "best_val_acc": max(accs),
            "test_acc": max(accs) - 0.01,
            "epochs_completed": epochs,
            "epochs_planned": epochs,
            "train_samples_per_s": 20000.0,
            "wall_time_s": 25.0,
        }
        if schema == 2:
            config = yaml.safe_load(config_text)
            config["paths"] = {k: f"/home/me/rnnlab/{k}" for k in config["paths"]}
            config.pop("trial")
            summary["config"] = flatten(config)
            summary["choices"] = {
                "model": cell,
                "data": "mnist_sample",
                "optimizer": "adam",
                "scheduler": None,
                "trainer": "default",
                "paths": "default",
                "experiment": None,
                "hparams_search": None,
            }
        text = json.dumps(summary, indent=2)
        if i % 100 == 42:
            text = text[: len(text) // 2]  # half-written
        (run / "summary.json").write_text(text)


def time_in_process(root: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        table = compare.build_table(compare.find_runs([root]))
        compare.print_table(table, file=io.StringIO())
        times.append(time.perf_counter() - t0)
    return times


def time_process(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--schema", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    args = parser.parse_args()
    for schema in args.schema:
        root = (
            args.keep / f"v{schema}"
            if args.keep
            else Path(tempfile.mkdtemp(prefix="rnnlab-bench-"))
        )
        try:
            bench(root, args.runs, schema, args.repeats)
        finally:
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)


def bench(root: Path, n: int, schema: int, repeats: int) -> None:
    t0 = time.perf_counter()
    write_runs(root, n, schema)
    print(f"\nschema_version {schema}: wrote {n} run dirs in {time.perf_counter() - t0:.1f}s")
    found = compare.find_runs([root])
    print(f"found {len(found.runs)} comparable, {len(found.incomplete)} incomplete")

    def report(name: str, times: list[float]) -> None:
        print(
            f"{name:<44} median {statistics.median(times):.2f}s  "
            f"(min {min(times):.2f}s, max {max(times):.2f}s, {len(times)} runs)"
        )

    report("in-process (read + table)", time_in_process(root, repeats))
    report(
        "python -m rnnlab.compare (fresh process)",
        time_process([sys.executable, "-m", "rnnlab.compare", str(root)], repeats),
    )
    script = shutil.which("rnnlab") or str(Path(sys.executable).parent / "rnnlab")
    if Path(script).exists():
        report(
            "rnnlab compare (console script)",
            time_process([script, "compare", str(root)], repeats),
        )


if __name__ == "__main__":
    main()
