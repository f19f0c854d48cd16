"""Optuna sweeps through the real CLI (`python train.py -m ...`) on the MNIST sample.

Models are tiny (RNN, 8 units, 1-2 epochs on 500 training digits) so the file stays within
a few minutes on two cores. Each sweep runs from a temporary working directory, which also
checks that Hydra finds the rnnlab_optuna plugin from anywhere.
"""

from __future__ import annotations

import csv
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.trial import TrialState

from hydra_plugins.rnnlab_sweeper import _study as studies
from hydra_plugins.rnnlab_sweeper._errors import SweepConfigError
from hydra_plugins.rnnlab_sweeper._space import distribution_from_override
from pg import SUPERUSER_PASSWORD, postgres_server
from rnnlab import secrets
from rnnlab.runs import Direction
from rnnlab.storage import STALE_AFTER_S, open_storage
from sweeping import TINY_TRIAL, sweep_env

REPO = Path(__file__).resolve().parents[1]
# 500 digits to train on: validation 400, test 4,100 (evaluation is cheap, training is not).
TINY = [
    *TINY_TRIAL,
    "model=rnn",
    "trainer.save_checkpoints=false",
    "hydra/sweeper=rnnlab_optuna",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _cmd(out: Path, data_dir: Path, *args: str, drop: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        f"paths.data_dir={data_dir}",
        f"paths.output_root={out}",
        *(o for o in TINY if o not in drop),
        *args,
    ]


def _env() -> dict[str, str]:
    return sweep_env()


def sweep(
    out: Path, data_dir: Path, *args: str, ok: bool = True, timeout: float = 240
) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        _cmd(out, data_dir, *args),
        cwd=out,
        env=_env(),
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    if ok and proc.returncode != 0:
        raise AssertionError(
            f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def study(out: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out}/optuna/{name}.db")


def by_number(s: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in s.get_trials()}


def sweep_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("multirun/*/*/multirun.yaml"))


def summary(run_dir: str) -> dict:
    import json

    return json.loads((Path(run_dir) / "summary.json").read_text())


# --------------------------------------------------------------------------- in-process


def test_search_space_semantics() -> None:
    parse = OverridesParser.create().parse_override
    d = distribution_from_override(parse("a=range(1,3)"))
    assert (d.low, d.high, d.step) == (1, 2, 1)  # never the excluded end
    d = distribution_from_override(parse("a=range(0.1,0.4,0.1)"))
    assert (d.low, d.high) == (0.1, 0.3)
    d = distribution_from_override(parse("a=tag(log, interval(1e-4, 1e-1))"))
    assert type(d).__name__ == "FloatDistribution" and d.log
    for bad in ("a=interval(1,0)", "a=range(3,3)", "a=tag(log,interval(0,1))"):
        with pytest.raises(SweepConfigError, match="rnnlab: error: search space"):
            distribution_from_override(parse(bad))


def test_mask_url() -> None:
    url = "postgresql+psycopg2://user:p%40ss:w@db.example:5432/x"
    assert secrets.mask_url(url) == "postgresql+psycopg2://user:***@db.example:5432/x"
    assert (
        secrets.mask_url(f"log line {url} end")
        == "log line postgresql+psycopg2://user:***@db.example:5432/x end"
    )
    assert secrets.mask_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


@pytest.mark.parametrize(
    "overrides",
    [
        ["hydra/sweeper=rnnlab_optuna", "hydra/sweeper/sampler=qmc", "hydra.sweeper.n_trials=2"],
        ["hparams_search=rnn_optuna", "hydra/launcher=submitit_slurm"],
        [
            "hparams_search=rnn_optuna",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.sweeper.n_trials=3",
        ],
        ["hparams_search=lstm_gru_budget", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ],
)
def test_sweeper_and_launcher_configs_compose(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("Sweeper")
    if any(o.startswith("hydra/launcher=s") for o in overrides):
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    if "hydra/launcher=slurm" in overrides:
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
        assert cfg.hydra.launcher.partition == "gpu"
        assert cfg.hydra.launcher.timeout_min == 120


# --------------------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_sweep_failures_resume_and_sigkill(tmp_path: Path, data_dir: Path) -> None:
    """4 trials (one diverges, one raises) -> resume after SIGKILL mid-trial -> resume."""
    grid = [
        "hydra.sweeper.study_name=s",
        "hydra/sweeper/sampler=grid",
        "model.nonlinearity=relu",
        "optimizer.lr=choice(0.01,0.003,1e6,-1.0)",
    ]
    proc = sweep(tmp_path, data_dir, *grid, "hydra.sweeper.n_trials=4")
    trials = by_number(study(tmp_path, "s"))
    assert sorted(trials) == [0, 1, 2, 3]
    status = {t.params["optimizer.lr"]: t.user_attrs["status"] for t in trials.values()}
    assert status == {0.01: "completed", 0.003: "completed", 1e6: "diverged", -1.0: "failed"}
    failed = next(t for t in trials.values() if t.params["optimizer.lr"] == -1.0)
    assert failed.state == TrialState.FAIL and "optimizer.lr" in failed.user_attrs["reason"]
    diverged = next(t for t in trials.values() if t.params["optimizer.lr"] == 1e6)
    assert summary(diverged.user_attrs["run_dir"])["status"] == "diverged"
    assert "2 completed, 1 diverged, 1 failed" in proc.stderr + proc.stdout
    (first,) = sweep_dirs(tmp_path)
    results = yaml.safe_load((first / "optimization_results.yaml").read_text())
    assert results["best_params"]["optimizer.lr"] in (0.01, 0.003)
    rows = list(csv.DictReader((first / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    assert {
        "state",
        "status",
        "params_optimizer.lr",
        "objective",
        "epochs",
        "duration_s",
        "run_dir",
    } <= set(rows[0])

    # Same study again without resume=true: refused, so that old and new never mix by mistake.
    url = f"sqlite:///{tmp_path}/optuna/s.db"
    with pytest.raises(SweepConfigError, match=r"has 4 trials; add hydra.sweeper.resume=true"):
        studies.create_or_resume(open_storage(url), "s", [Direction.MAX], False, url)

    # Resume, and SIGKILL the sweep in the middle of its trial.
    resume = [
        "hydra.sweeper.study_name=s",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=3",
        "optimizer.lr=0.01",
        "seed=choice(1,2)",
        "hydra.sweeper.resume=true",
        "hydra.sweeper.n_trials=1",
    ]
    victim = subprocess.Popen(
        _cmd(tmp_path, data_dir, *resume, "trainer.epochs=200"),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    run_dir = None
    while time.monotonic() < deadline and victim.poll() is None:
        t4 = by_number(study(tmp_path, "s")).get(4)
        run_dir = t4 and t4.user_attrs.get("run_dir")
        if run_dir and (Path(run_dir) / "metrics.csv").exists():
            break
        time.sleep(0.5)
    assert victim.poll() is None and run_dir, "the resumed trial never started training"
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert by_number(study(tmp_path, "s"))[4].state == TrialState.RUNNING

    sweep(tmp_path, data_dir, *resume)
    trials_after = by_number(study(tmp_path, "s"))
    assert sorted(trials_after) == [0, 1, 2, 3, 4, 5]
    for n, t in trials.items():  # nothing lost, nothing changed
        assert (trials_after[n].state, trials_after[n].value) == (t.state, t.value)
    killed = trials_after[4]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["status"] == "interrupted"
    assert "died" in killed.user_attrs["reason"]
    assert summary(run_dir)["status"] == "interrupted"
    assert summary(run_dir)["epochs_completed"] >= 1
    assert trials_after[5].state == TrialState.COMPLETE


@pytest.mark.slow
def test_trial_abandoned_on_another_host_fails_once_its_heartbeat_stops(
    tmp_path: Path, data_dir: Path
) -> None:
    """Trials left RUNNING by a sweep on another host: the one whose heartbeat stopped long ago
    is recorded as interrupted on resume, the one still beating is left alone."""
    url = f"sqlite:///{tmp_path}/optuna/h.db"
    storage = open_storage(url)
    s = optuna.create_study(study_name="h", storage=storage, direction="maximize")
    elsewhere = {"host": "node-that-is-not-this-one", "pid": 4242, "start": "1"}
    abandoned, alive = s.ask(), s.ask()
    for t in (abandoned, alive):
        t.set_user_attr("owner", elsewhere)
        storage.record_heartbeat(t._trial_id)
    with sqlite3.connect(f"{tmp_path}/optuna/h.db") as db:
        db.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = ?",
            (f"-{STALE_AFTER_S + 60} seconds", abandoned._trial_id),
        )

    sweep(
        tmp_path,
        data_dir,
        "hydra.sweeper.study_name=h",
        "hydra.sweeper.resume=true",
        "hydra.sweeper.n_trials=1",
    )
    trials = by_number(study(tmp_path, "h"))
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["status"] == "interrupted"
    assert "no heartbeat" in trials[0].user_attrs["reason"]
    assert trials[1].state == TrialState.RUNNING
    assert trials[2].state == TrialState.COMPLETE
    with sqlite3.connect(f"{tmp_path}/optuna/h.db") as db:
        beats = db.execute(
            "SELECT count(*) FROM trial_heartbeats WHERE trial_id = ?", (trials[2]._trial_id,)
        ).fetchone()[0]
    assert beats == 1  # the sweep and its job kept its heartbeat while it ran


@pytest.mark.slow
def test_custom_search_space_adds_conditional_parameters(tmp_path: Path, data_dir: Path) -> None:
    """hydra.sweeper.custom_search_space=<module.function> suggests more parameters, here a
    group choice and a parameter that only exists for one of its options."""
    (tmp_path / "my_space.py").write_text(
        "def space(cfg, trial):\n"
        "    if trial.suggest_categorical('model', ['rnn', 'gru']) == 'gru':\n"
        "        trial.suggest_float('optimizer.weight_decay', 1e-6, 1e-2, log=True)\n"
    )
    proc = subprocess.run(
        _cmd(
            tmp_path,
            data_dir,
            "hydra.sweeper.study_name=custom",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.seed=1",
            "hydra.sweeper.custom_search_space=my_space.space",
            # The custom space chooses the model: a fixed model= would be refused (upstream's
            # rule: a custom search space must not redefine a fixed parameter).
            drop=("model=rnn",),
        ),
        cwd=tmp_path,
        env={**_env(), "PYTHONPATH": str(tmp_path)},
        text=True,
        capture_output=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = study(tmp_path, "custom").get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.params["model"] for t in trials} == {"rnn", "gru"}  # both branches (seed 1)
    for t in trials:
        config = yaml.safe_load((Path(t.user_attrs["run_dir"]) / ".hydra/config.yaml").read_text())
        assert config["model"]["cell"] == t.params["model"]
        decay = t.params.get("optimizer.weight_decay")
        assert (decay is not None) == (t.params["model"] == "gru")
        assert config["optimizer"]["weight_decay"] == (decay or 0.0)


@pytest.mark.slow
def test_pruning_prunes_a_hopeless_trial(tmp_path: Path, data_dir: Path) -> None:
    # Every trial starts from the same weights (seed 0); lr=1e-9 never moves from them, so
    # once a trial with lr=0.01 has completed, the lr=1e-9 trials fall below its median.
    sweep(
        tmp_path,
        data_dir,
        "hydra.sweeper.study_name=p",
        "optimized_metric=val/loss",
        # Seed 4 draws lr 0.01 first, then 1e-9 twice.
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=4",
        "optimizer.lr=choice(0.01,1e-9)",
        "hydra.sweeper.n_trials=3",
        "trainer.epochs=2",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
    )
    trials = list(study(tmp_path, "p").get_trials())
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state, t.intermediate_values) for t in trials]
    for t in pruned:
        assert t.params["optimizer.lr"] == 1e-9
        assert t.user_attrs["status"] == "pruned"
        s = summary(t.user_attrs["run_dir"])
        assert s["status"] == "pruned" and s["epochs_completed"] == 1
    assert any(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_joblib_and_a_second_sweep_process_share_one_study(tmp_path: Path, data_dir: Path) -> None:
    """Sweep A runs 3 trials, 2 at a time, with joblib; sweep B, started at the same time, joins
    the same study with 1 trial: 4 trials in all, each run once."""
    common = [
        "hydra.sweeper.study_name=c",
        "hydra.sweeper.resume=true",
        "optimizer.lr=tag(log,interval(1e-3,1e-2))",
    ]
    extra = [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_trials=3"],
        ["hydra.sweeper.n_trials=1"],
    ]
    procs = [
        subprocess.Popen(
            _cmd(tmp_path, data_dir, *common, *extra[i], f"hydra.sweep.dir={tmp_path}/sweep{i}"),
            cwd=tmp_path,
            env=_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-3000:]
    trials = study(tmp_path, "c").get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    run_dirs = {t.user_attrs["run_dir"] for t in trials}
    assert len(run_dirs) == 4
    assert sorted(Path(d).parent.name for d in run_dirs) == ["sweep0"] * 3 + ["sweep1"]

    joblib_trials = sorted(
        (t for t in trials if Path(t.user_attrs["run_dir"]).parent.name == "sweep0"),
        key=lambda t: t.datetime_start,
    )
    assert len({t.user_attrs["job"]["pid"] for t in joblib_trials}) == 2
    a, b = (summary(t.user_attrs["run_dir"]) for t in joblib_trials[:2])
    assert a["started_at"] <= b["finished_at"] and b["started_at"] <= a["finished_at"]
    # Pipelined: the third trial starts as soon as one of the first two has ended, not after
    # both (a batch launcher would wait for the slower one).
    first, second, third = joblib_trials
    assert third.datetime_start < max(first.datetime_complete, second.datetime_complete)
    # Two workers on this machine's cores: each trial's own thread policy (not an override
    # from the sweeper) keeps it within its half, and a step this small to one thread.
    for s in (a, b):
        assert s["torch_threads"] == 1, s["torch_threads_why"]
        assert "parallel trials" in s["torch_threads_why"] or "small step" in s["torch_threads_why"]


@pytest.mark.slow
def test_bad_search_space_fails_at_once_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    proc = sweep(tmp_path, data_dir, "model.dropout=interval(0.5,0.1)", ok=False, timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("rnnlab: error: search space model.dropout=interval(0.5,0.1)")
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("multirun/*/*/0"))


# --------------------------------------------------------------------------- postgres

PASSWORD = SUPERUSER_PASSWORD


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on loopback (tests/pg.py); skipped where none is installed."""
    with postgres_server() as server:
        yield server.url()


@pytest.mark.slow
def test_postgres_storage_password_never_written(
    tmp_path: Path, data_dir: Path, postgres_url: str
) -> None:
    out = tmp_path / "out"
    proc = sweep(
        out,
        data_dir,
        f"hydra.sweeper.storage={postgres_url}",
        "hydra.sweeper.study_name=pg",
        "hydra.sweeper.n_trials=2",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "optimizer.lr=tag(log,interval(1e-3,1e-2))",
    )
    trials = optuna.load_study(study_name="pg", storage=postgres_url).get_trials()
    assert trials[0].state == TrialState.COMPLETE
    assert trials[1].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert all(t.intermediate_values for t in trials)  # the jobs reported to postgres
    assert PASSWORD not in proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in files)
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
    hydra_yaml = next(p for p in files if p.name == "hydra.yaml").read_text()
    assert "rnnlab:***@127.0.0.1" in hydra_yaml


@pytest.mark.slow
def test_unreachable_postgres_fails_in_one_line_without_password(
    tmp_path: Path, data_dir: Path
) -> None:
    pytest.importorskip("psycopg2")
    proc = sweep(
        tmp_path,
        data_dir,
        f"hydra.sweeper.storage=postgresql://u:{PASSWORD}@127.0.0.1:1/db",
        ok=False,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "rnnlab: error: hydra.sweeper.storage=postgresql://u:***@127.0.0.1:1/db" in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert PASSWORD.encode() not in path.read_bytes(), path
