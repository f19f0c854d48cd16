"""`rnnlab compare` on synthetic run folders, and the end-of-multirun summary.md."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rnnlab import compare, runs
from rnnlab.compare import build_table, find_runs

REPO = Path(__file__).resolve().parents[1]
OUTCOME = [
    "status",
    "objective",
    "best_val_acc",
    "test_acc",
    "epochs_completed",
    "wall_time_s",
    "train_samples_per_s",
]


# --- synthetic run folders -------------------------------------------------------------


def make_run(
    path: Path,
    *,
    model: str = "rnn",
    lr: float = 1e-3,
    seed: int = 0,
    status: str = "completed",
    objective: float | None = 0.9,
    epochs: int = 3,
    planned: int = 3,
    schema: int = runs.SCHEMA_VERSION,
    summary: bool = True,
) -> Path:
    """A run folder as train.py leaves it (.hydra/, metrics.csv, summary.json)."""
    hydra = path / ".hydra"
    hydra.mkdir(parents=True)
    config = {
        "model": {
            "_target_": "rnnlab.models.SequenceClassifier",
            "cell": model,
            "hidden_size": 128,
            "num_layers": 1,
        },
        "data": {"name": "mnist_sample", "batch_size": 64},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr},
        "trainer": {"epochs": planned, "device": "auto"},
        "paths": {"output_dir": str(path)},  # differs per run, must not become a column
        "seed": seed,
        "optimized_metric": "val/acc",
        "resume": None,
        "trial": None,
    }
    (hydra / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump([f"model={model}", f"seed={seed}"]))
    (hydra / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    version: 1.3.8\n    choices:\n      experiment: null\n"
        f"      optimizer: adam\n      data: mnist_sample\n      model: {model}\n"
        "      hydra/launcher: basic\n  verbose: false\n"
    )
    history = []
    for epoch in range(1, epochs + 1):
        acc = (objective or 0.1) * epoch / epochs
        history.append(
            dict(
                epoch=epoch,
                train_loss=1.0 / epoch,
                train_acc=acc,
                val_loss=1.0 / epoch,
                val_acc=acc,
                test_loss=1.0 / epoch,
                test_acc=acc - 0.01,
                lr=lr,
                epoch_time_s=2.0,
                train_samples_per_s=1000.0 + seed,
            )
        )
    if history:
        runs.write_metrics(path, history)
    if summary:
        best = objective if status != "diverged" else None
        runs.write_summary(
            path,
            {
                "schema_version": schema,
                "status": status,
                "reason": None,
                "optimized_metric": "val/acc",
                "objective_mode": "max",
                "objective": objective if status != "diverged" else 0.0,
                "seed": seed,
                "num_params": 21514 if model == "rnn" else 61962,
                "best_epoch": epochs if best is not None else None,
                "best_val_acc": best,
                "test_acc": None if best is None else best - 0.01,
                "epochs_completed": epochs,
                "epochs_planned": planned,
                "train_samples_per_s": 1000.0 + seed,
                "wall_time_s": 10.0 * epochs,
            },
        )
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep with two seeds per setting, one of each bad case, and a non-run folder."""
    root = tmp_path_factory.mktemp("outputs") / "multirun" / "2025-01-01" / "12-00-00"
    make_run(root / "0", model="rnn", seed=0, objective=0.90)
    make_run(root / "1", model="rnn", seed=1, objective=0.92)
    make_run(root / "2", model="gru", seed=0, objective=0.95)
    make_run(root / "3", model="gru", seed=1, objective=0.97)
    make_run(root / "4", model="rnn", lr=0.1, status="diverged", epochs=1)
    make_run(root / "5", model="gru", lr=0.01, status="pruned", objective=0.5, epochs=1)
    make_run(root / "6", summary=False, epochs=2)  # crashed or still running
    make_run(root / "7", summary=False)
    (root / "7" / "summary.json").write_text('{"schema_version": 1, "stat')  # half-written
    make_run(root / "8", status="interrupted")
    make_run(root / "9", schema=0)
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def run_cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = compare.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the table ---------------------------------------------------------------------------


def test_rows_and_columns(sweep: Path) -> None:
    table = build_table(find_runs([sweep]))
    assert table.columns == ["model", "optimizer.lr", "seed", *OUTCOME, "run_dir"]
    assert [Path(r["run_dir"]).name for r in table.rows] == ["3", "2", "1", "0", "5", "4"]
    first = table.rows[0]
    assert first == {
        "model": "gru",
        "optimizer.lr": 0.001,
        "seed": 1,
        "status": "completed",
        "objective": 0.97,
        "best_val_acc": 0.97,
        "test_acc": 0.96,
        "epochs_completed": 3,
        "wall_time_s": 30.0,
        "train_samples_per_s": 1001.0,
        "run_dir": str(sweep / "3"),
    }
    assert table.rows[-1]["status"] == "diverged" and table.rows[-1]["best_val_acc"] is None
    reasons = {r.path.name: r.problem for r in table.incomplete}
    assert set(reasons) == {"6", "7", "8", "9"}
    assert reasons["6"].startswith("no summary.json") and "2 epoch(s)" in reasons["6"]
    assert "not valid JSON" in reasons["7"]
    assert reasons["8"].startswith("interrupted")
    assert "schema_version 0" in reasons["9"]
    assert [(Path(p).name, why) for p, why in table.skipped] == [
        ("notes", "not a run folder (no .hydra/ or summary.json)")
    ]


def test_printed_table_and_no_writes(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(sweep)
    code, out, err = run_cli(capsys, sweep.parents[2])  # any folder above the runs
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == [
        "model",
        "optimizer.lr",
        "seed",
        "status",
        "objective",
        "(val/acc",
        "%)",
        "best",
        "val",
        "acc",
        "%",
        "test",
        "acc",
        "%",
        "epochs",
        "wall",
        "time",
        "samples/s",
        "run",
        "dir",
    ]
    rows = [line.split() for line in lines[2:8]]
    assert rows[0][:9] == [
        "gru",
        "0.001",
        "1",
        "completed",
        "97.00",
        "97.00",
        "96.00",
        "3",
        "30.0s",
    ]
    assert rows[0][9:] == ["1,001", str(sweep / "3")]
    assert rows[5][:7] == ["rnn", "0.1", "0", "diverged", "0.00", "–", "–"]
    assert sum(line.startswith("incomplete: ") for line in lines) == 4
    assert any(
        line.startswith("skipped: ")
        and line.endswith("notes: not a run folder (no .hydra/ or summary.json)")
        for line in lines
    )
    assert snapshot(sweep) == before


def test_filters_sort_top(sweep: Path) -> None:
    found = find_runs([sweep])

    def names(**kw: Any) -> list[str]:
        table = build_table(found, group_by_seed=False, **kw)
        return [Path(r["run_dir"]).name for r in table.rows]

    assert names(where=["status=completed"]) == ["3", "2", "1", "0"]
    assert names(where=["model=gru"]) == ["3", "2", "5"]
    assert names(where=["model=gru", "status!=pruned"]) == ["3", "2"]
    assert names(where=["optimizer.lr>=0.01"]) == ["5", "4"]
    assert names(where=["optimizer._target_=Adam", "seed=1"]) == ["3", "1"]
    assert names(where=["optimizer._target_=torch.optim.Adam", "model=rnn,gru"], top=2) == [
        "3",
        "2",
    ]
    assert names(sort="optimizer.lr") == ["3", "2", "1", "0", "5", "4"]
    assert names(sort="test_acc", top=3) == ["3", "2", "1"]
    assert names(sort="objective", reverse=True)[:2] == ["4", "5"]
    assert names(sort="epochs", where=["status=completed"], reverse=True) == ["3", "2", "1", "0"]
    # Columns follow the selection: among completed runs only the model and the seed differ.
    table = build_table(found, where=["status=completed"], columns=["num_params"])
    assert table.columns == ["model", "seed", *OUTCOME, "num_params", "run_dir"]
    assert table.rows[0]["num_params"] == 61962


def test_group_by_seed(sweep: Path) -> None:
    found = find_runs([sweep])
    table = build_table(found, where=["status=completed"], group_by_seed=True)
    assert table.grouped
    assert table.columns == ["model", "n", "seeds", *OUTCOME, "run_dir"]
    gru, rnn = table.rows
    assert (gru["model"], gru["n"], gru["seeds"]) == ("gru", 2, [0, 1])
    assert gru["objective"] == pytest.approx(0.96)
    assert gru["objective_std"] == pytest.approx(statistics.stdev([0.95, 0.97]))
    assert rnn["objective"] == pytest.approx(0.91)
    assert rnn["test_acc"] == pytest.approx(0.90)
    headers, cells = compare.display_rows(table)
    assert cells[0][headers.index("objective (val/acc %)")] == "96.00 ± 1.41"
    # Runs that differ only by seed are grouped without being asked.
    auto = build_table(found, where=["model=gru", "optimizer.lr=1e-3"])
    assert auto.grouped and len(auto.rows) == 1 and auto.rows[0]["n"] == 2
    assert not build_table(
        found, where=["model=gru", "optimizer.lr=1e-3"], group_by_seed=False
    ).grouped


def test_csv_json_round_trip(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run_cli(
        capsys,
        sweep,
        "--csv",
        tmp_path / "t.csv",
        "--json",
        tmp_path / "t.json",
        "--markdown",
        tmp_path / "t.md",
        "-q",
    )
    assert code == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert doc["columns"] == list(rows[0]) == ["model", "optimizer.lr", "seed", *OUTCOME, "run_dir"]
    assert len(rows) == len(doc["rows"]) == 6

    def as_csv(v: Any) -> str:
        return "" if v is None else str(v)

    assert rows == [{k: as_csv(v) for k, v in r.items()} for r in doc["rows"]]
    assert doc["rows"][0]["objective"] == 0.97
    assert {Path(i["run_dir"]).name for i in doc["incomplete"]} == {"6", "7", "8", "9"}
    md = (tmp_path / "t.md").read_text()
    assert md.count("\n| ") == 7 and "| gru | 0.001 | 1 | completed | 97.00 |" in md
    # Grouped rows export the spread too.
    run_cli(
        capsys,
        sweep,
        "--group-by-seed",
        "--where",
        "status=completed",
        "--json",
        tmp_path / "g.json",
        "-q",
    )
    grouped = json.loads((tmp_path / "g.json").read_text())
    assert "objective_std" in grouped["columns"] and grouped["rows"][0]["n"] == 2


def test_bad_input_one_line(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        ([tmp_path / "nope"], "no such file or folder"),
        ([sweep, "--where", "model"], "expected KEY=VALUE"),
        ([sweep, "--sort", "colour"], "no run has this key; keys are: run_dir, status"),
        ([sweep, "--where", "colour=red"], "--where colour: no run has this key"),
        ([sweep, "--csv", tmp_path], "is a folder"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert err.count("\n") == 1 and err.startswith("rnnlab: error: ") and message in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, empty)
    assert code == 1 and "no run folders found" in err
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab.compare", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("rnnlab: error:")
    assert "Traceback" not in proc.stderr


def test_plots_and_html(
    sweep: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An Optuna sweep: the sweeper's trial table sits next to the runs.
    optuna_dir = tmp_path / "optuna"
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    objectives = [0.80, 0.85, 0.93, 0.95, 0.90, 0.70]
    with open(optuna_dir.mkdir() or optuna_dir / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "number",
                "state",
                "params_optimizer.lr",
                "params_model",
                "objective",
                "epochs",
                "duration_s",
                "run_dir",
            ]
        )
        for i, (lr, obj) in enumerate(zip(lrs, objectives, strict=True)):
            model = "rnn" if i % 2 else "gru"
            make_run(optuna_dir / str(i), model=model, lr=lr, objective=obj)
            w.writerow([i, "COMPLETE", lr, model, obj, 3, 30.0, optuna_dir / str(i)])
    before = snapshot(tmp_path / "optuna") | snapshot(sweep)
    plots = tmp_path / "plots"
    code, _, err = run_cli(
        capsys, sweep, optuna_dir, "--plot", plots, "--html", tmp_path / "page.html"
    )
    assert code == 0, err
    names = sorted(p.name for p in plots.iterdir())
    assert names == [
        "objective_vs_model.png",
        "objective_vs_optimizer.lr.png",
        "optimization_history.png",
        "param_importances.png",
        "val_acc_curves.png",
    ]
    for p in plots.iterdir():
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, p.name
    page = (tmp_path / "page.html").read_text()
    assert "<table>" in page and "<td>gru</td>" in page and "97.00" in page
    assert page.count('src="data:image/png;base64,') == len(names)
    assert snapshot(tmp_path / "optuna") | snapshot(sweep) == before


def test_multirun_writes_summary_md(rnn_gru_multirun: tuple[Path, Any]) -> None:
    """A real 2-job multirun through train.py ends with the table and summary.md."""
    sweep_dir, proc = rnn_gru_multirun
    summary = sweep_dir / "summary.md"
    assert summary.is_file()
    text = summary.read_text()
    assert text.startswith(f"# Sweep {sweep_dir}: top 2 of 2 runs")
    table_lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert table_lines[0].startswith("| model | status | objective (val/acc %) |")
    assert {line.split(" | ")[0] for line in table_lines[2:]} == {"| rnn", "| gru"}
    assert "model" in proc.stdout and "completed" in proc.stdout
    assert f"summary: {summary}" in proc.stdout


def test_fast_yaml_reads_what_pyyaml_reads() -> None:
    """compare's YAML shortcut must agree with PyYAML, falling back to it when unsure."""
    doc = (
        "a: 1e-3\nb: 1.0e-05\nc: 0.001\nd: 'it''s'\ne: \"x\"\nf: yes\ng: 2025-01-01\n"
        "h: 0x10\ni: [1, 2]\nj: x86_64\nk: ${hydra:runtime.cwd}\nl:\n- a=b\n- c.d=1\n"
        "m:\n  n: null\n  o: ~\n  deep:\n    x: -3\np:\nr: .inf\ns: 010\nt: '???'\n"
        "u: {}\nv: 'a: b'\nw: a # comment\n"
    )
    assert compare.load_yaml(doc) == yaml.safe_load(doc)
    for line in doc.splitlines():
        if not line.startswith(("-", " ")):
            assert compare.load_yaml(line) == yaml.safe_load(line), line
