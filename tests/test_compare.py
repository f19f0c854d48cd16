"""`rnnlab compare` on synthetic run folders, and the end-of-multirun summary.md."""

from __future__ import annotations

import csv
import json
import shutil
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


V1 = 1  # summary.json schema_version 1: the config is read from .hydra/
V2 = 2  # schema_version 2: summary.json records the config and the group choices


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The v2 summary's `config`: nested dicts joined with ".", lists kept as lists."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def make_run(
    path: Path,
    *,
    model: str = "rnn",
    lr: float = 1e-3,
    seed: int = 0,
    status: str = runs.Status.COMPLETED,
    objective: float | None = 0.9,
    epochs: int = 3,
    planned: int = 3,
    schema: int = V2,
    summary: bool = True,
    optimizer: str = "adam",
    scheduler: str | None = None,
    hydra_choices: dict[str, Any] | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> Path:
    """A run folder as train.py leaves it (.hydra/, metrics.csv, summary.json).

    `hydra_choices` overrides the choices written to .hydra/hydra.yaml (what a resumed run
    records: Hydra's defaults, not what ran).
    """
    hydra = path / runs.HYDRA_DIR
    hydra.mkdir(parents=True)
    targets = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW", "sgd": "torch.optim.SGD"}
    config: dict[str, Any] = {
        "model": {
            "_target_": "rnnlab.models.SequenceClassifier",
            "cell": model,
            "hidden_size": 128,
            "num_layers": 1,
        },
        "data": {"name": "mnist_sample", "batch_size": 64},
        "optimizer": {"_target_": targets[optimizer], "_partial_": True, "lr": lr},
        "trainer": {"epochs": planned, "device": "auto"},
        "paths": {"output_dir": str(path)},  # differs per run, must not become a column
        "seed": seed,
        "optimized_metric": "val/acc",
        "resume": None,
        "trial": None,
    }
    if scheduler is not None:
        config["scheduler"] = {
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "_partial_": True,
            "T_max": planned,
        }
    choices = {
        "model": model,
        "data": "mnist_sample",
        "optimizer": optimizer,
        "scheduler": scheduler,
        "trainer": "default",
        "paths": "default",
        "experiment": None,
        "hparams_search": None,
    }
    shown = {**choices, **(hydra_choices or {})}
    (hydra / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump([f"model={model}", f"seed={seed}"]))
    (hydra / "hydra.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "run": {"dir": "outputs/runs"},
                    "runtime": {
                        "version": "1.3.8",
                        "choices": {**dict(reversed(shown.items())), "hydra/launcher": "basic"},
                    },
                    "verbose": False,
                }
            },
            sort_keys=False,
        )
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
        doc = {
            "schema_version": schema,
            "status": status,
            "reason": None,
            "optimized_metric": "val/acc",
            "objective_mode": "max",
            "objective": objective if status != "diverged" else 0.0,
            "resumed_from": None,
            "seed": seed,
            "num_params": 21514 if model == "rnn" else 61962,
            "best_epoch": epochs if best is not None else None,
            "best_val_acc": best,
            "test_acc": None if best is None else best - 0.01,
            "epochs_completed": epochs,
            "epochs_planned": planned,
            "train_samples_per_s": 1000.0 + seed,
            "wall_time_s": 10.0 * epochs,
        }
        if schema == V2:
            doc["config"] = flat({k: v for k, v in config.items() if k != "trial"})
            doc["choices"] = choices
        doc.update(extra_summary or {})
        runs.write_summary(path, doc)
    return path


def make_sweep(root: Path, schema: int) -> Path:
    """A sweep with two seeds per setting, one of each bad case, and a non-run folder."""
    make_run(root / "0", model="rnn", seed=0, objective=0.90, schema=schema)
    make_run(root / "1", model="rnn", seed=1, objective=0.92, schema=schema)
    make_run(root / "2", model="gru", seed=0, objective=0.95, schema=schema)
    make_run(root / "3", model="gru", seed=1, objective=0.97, schema=schema)
    make_run(root / "4", model="rnn", lr=0.1, status=runs.Status.DIVERGED, epochs=1, schema=schema)
    make_run(
        root / "5",
        model="gru",
        lr=0.01,
        status=runs.Status.PRUNED,
        objective=0.5,
        epochs=1,
        schema=schema,
    )
    make_run(root / "6", summary=False, epochs=2)  # crashed or still running
    make_run(root / "7", summary=False)
    (root / "7" / runs.SUMMARY_FILE).write_text('{"schema_version": 2, "stat')  # half-written
    make_run(root / "8", status=runs.Status.INTERRUPTED, schema=schema)
    make_run(root / "9", schema=0)
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    (root / runs.MULTIRUN_FILE).write_text("hydra: {}\n")
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep as today's train.py writes it (schema_version 2)."""
    root = tmp_path_factory.mktemp("outputs") / "multirun" / "2025-01-01" / "12-00-00"
    return make_sweep(root, V2)


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
    with open(optuna_dir.mkdir() or optuna_dir / runs.TRIALS_FILE, "w", newline="") as f:
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


@pytest.mark.slow
def test_multirun_writes_summary_md(rnn_gru_multirun: tuple[Path, Any]) -> None:
    """A real 2-job multirun through train.py ends with the table and summary.md."""
    sweep_dir, proc = rnn_gru_multirun
    summary = sweep_dir / runs.SWEEP_SUMMARY_FILE
    assert summary.is_file()
    text = summary.read_text()
    assert text.startswith(f"# Sweep {sweep_dir}: top 2 of 2 runs")
    table_lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert table_lines[0].startswith("| model | status | objective (val/acc %) |")
    assert {line.split(" | ")[0] for line in table_lines[2:]} == {"| rnn", "| gru"}
    assert "model" in proc.stdout and "completed" in proc.stdout
    assert f"summary: {summary}" in proc.stdout


# --- schema versions: v2 reads summary.json only, v1 reads .hydra/ ----------------------


def _without_dirs(table: compare.Table) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "run_dir"} for row in table.rows]


def test_v1_folders_compare_like_v2(sweep: Path, tmp_path: Path) -> None:
    """Folders written before schema v2 (config only in .hydra/) give the same table."""
    old = make_sweep(tmp_path / "v1", V1)
    for kw in (
        {},
        {"where": ["model=gru"]},
        {"group_by_seed": True, "where": ["status=completed"]},
    ):
        new_table, old_table = (
            build_table(find_runs([sweep]), **kw),
            build_table(find_runs([old]), **kw),
        )
        assert old_table.columns == new_table.columns
        assert _without_dirs(old_table) == _without_dirs(new_table)
    reasons = {r.path.name: r.problem for r in find_runs([old]).incomplete}
    assert set(reasons) == {"6", "7", "8", "9"}
    assert "schema_version 0; this rnnlab reads 1 and 2" in reasons["9"]


def test_v2_reads_summary_json_only(tmp_path: Path) -> None:
    """A v2 folder's .hydra/ is never read: garbage there changes nothing."""
    for i, model in enumerate(["rnn", "gru", "lstm"]):
        run = make_run(tmp_path / "sweep" / str(i), model=model, seed=i, objective=0.9 + i / 100)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            (run / runs.HYDRA_DIR / name).write_text("model: [unclosed\n")
    table = build_table(find_runs([tmp_path]))
    assert table.columns[:2] == ["model", "seed"] and not table.incomplete
    assert [r["model"] for r in table.rows] == ["lstm", "gru", "rnn"]
    # The whole command on v2 folders loads neither the v1 reader (PyYAML) nor the plotting.
    code = (
        "import sys; from rnnlab.compare import main; rc = main([sys.argv[1]]);"
        "heavy = {'rnnlab.compare.v1', 'matplotlib', 'optuna', 'rich', 'torch'};"
        "print(sorted(heavy & set(sys.modules))); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def _resumed_pair(root: Path, schema: int) -> tuple[Path, Path]:
    """An LSTM/AdamW/cosine run, interrupted, then resumed into a new folder: as train.py
    writes it, the new .hydra/hydra.yaml has the default choices (rnn/adam/no scheduler),
    while .hydra/config.yaml (and a v2 summary) hold what ran."""
    first = make_run(
        root / "runs" / "first",
        model="lstm",
        optimizer="adamw",
        scheduler="cosine",
        status=runs.Status.INTERRUPTED,
        epochs=1,
        schema=schema,
    )
    resumed = make_run(
        root / "runs" / "resumed",
        model="lstm",
        optimizer="adamw",
        scheduler="cosine",
        objective=0.97,
        schema=schema,
        hydra_choices={"model": "rnn", "optimizer": "adam", "scheduler": None},
        extra_summary={"resumed_from": str(first)},
    )
    (resumed / runs.HYDRA_DIR / "overrides.yaml").write_text(
        yaml.safe_dump(["model=lstm", "optimizer=adamw", "scheduler=cosine", f"resume={first}"])
    )
    make_run(root / "runs" / "plain", model="rnn", objective=0.9, schema=schema)
    return first, resumed


@pytest.mark.parametrize("schema", [V1, V2], ids=["v1", "v2"])
def test_resumed_run_shows_what_ran(tmp_path: Path, schema: int) -> None:
    first, resumed = _resumed_pair(tmp_path, schema)
    table = build_table(find_runs([tmp_path]))
    row = next(r for r in table.rows if r["run_dir"] == str(resumed))
    assert (row["model"], row["optimizer"], row["scheduler"]) == ("lstm", "adamw", "cosine")
    kept = build_table(find_runs([tmp_path]), where=["model=lstm"])
    assert [r["run_dir"] for r in kept.rows] == [str(resumed)]
    if schema == V1:  # the first run gone: the overrides the resume copied tell the choices
        shutil.rmtree(first)
        table = build_table(find_runs([tmp_path]), where=["optimizer=adamw", "scheduler=cosine"])
        assert [r["run_dir"] for r in table.rows] == [str(resumed)]


@pytest.mark.slow
def test_real_resumed_run_shows_what_ran(run_train: Any, tmp_path: Path) -> None:
    """train.py: LSTM/AdamW/cosine for 1 epoch, resumed to 2 epochs into a new folder."""
    common = [
        "data=mnist_sample",
        "trainer.progress=false",
        "model.hidden_size=16",
    ]
    first = tmp_path / "first"
    run_train(
        *common,
        "model=lstm",
        "optimizer=adamw",
        "scheduler=cosine",
        "trainer.epochs=1",
        f"hydra.run.dir={first}",
        check=True,
    )
    resumed = tmp_path / "resumed"
    run_train(  # only what a resume may change: the rest comes from the checkpoint
        "trainer.progress=false",
        "trainer.epochs=2",
        f"resume={first}",
        f"hydra.run.dir={resumed}",
        check=True,
    )
    assert runs.read_summary(resumed)["resumed_from"]
    table = build_table(find_runs([resumed]), where=["model=lstm"], columns=["optimizer,scheduler"])
    assert len(table.rows) == 1
    row = table.rows[0]
    assert (row["optimizer"], row["scheduler"]) == ("adamw", "cosine")
