"""Every config option composes and instantiates; bad values stop at once with one line."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from rnnlab.config import ConfigError, validate
from rnnlab.models import SequenceClassifier

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=False)
    with open_dict(cfg):  # ${hydra:...} only resolves inside a Hydra run
        cfg.paths = {
            "root_dir": str(REPO),
            "output_root": "/tmp/unused",
            "data_dir": "/tmp/unused",
            "output_dir": "/tmp/unused",
        }
    return cfg


def test_every_group_has_options():
    for group in ("model", "data", "optimizer", "scheduler", "experiment"):
        assert options(group), group


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_model_and_optimizer_options_instantiate(model, optimizer):
    cfg = compose_train(f"model={model}", f"optimizer={optimizer}")
    validate(cfg)
    net = instantiate(cfg.model)
    assert isinstance(net, SequenceClassifier) and net.cell == model
    opt = instantiate(cfg.optimizer)(net.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_scheduler_options_instantiate(scheduler):
    cfg = compose_train(f"scheduler={scheduler}")
    net = instantiate(cfg.model)
    opt = instantiate(cfg.optimizer)(net.parameters())
    sched = instantiate(cfg.scheduler)(opt)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)


@pytest.mark.parametrize("data", options("data"))
def test_data_options_validate(data):
    cfg = compose_train(f"data={data}")
    validate(cfg)
    assert cfg.data.batch_size == 64 and cfg.data.mean == 0.5 and cfg.data.std == 0.5


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment):
    validate(compose_train(f"experiment={experiment}"))


def test_seed_book_is_the_textbook_run():
    cfg = compose_train("experiment=seed_book")
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.num_layers) == ("rnn", 128, 1)
    assert cfg.model.batch_first and not cfg.model.bidirectional and cfg.model.dropout == 0
    assert cfg.data.name == "mnist" and cfg.data.batch_size == 64
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.trainer.epochs == 10 and cfg.get("scheduler") is None


def test_default_objective_is_validation_accuracy():
    cfg = compose_train()
    assert cfg.optimized_metric == "val/acc"


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.hidden_size=0", "model.hidden_size"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.nonlinearity=sigmoid", "model.nonlinearity"),
        ("model.batch_first=yes", "model.batch_first"),
        ("data.std=0", "data.std"),
        ("data.val_size=60000", "data.val_size"),
        ("data.augment_shift=-1", "data.augment_shift"),
        ("data.augment_shift=1.5", "data.augment_shift"),
        ("optimizer.lr=nan", "optimizer.lr"),
        ("optimizer.lr=inf", "optimizer.lr"),
        ("trainer.grad_clip_norm=0", "trainer.grad_clip_norm"),
        ("trainer.device=cuda:x", "trainer.device"),
        ("optimized_metric=test/acc", "optimized_metric"),
    ],
)
def test_validate_names_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        validate(compose_train(override))


def test_sample_val_size_must_leave_training_images():
    with pytest.raises(ConfigError, match=r"data.val_size=4000 .* 1 to 3999"):
        validate(compose_train("data=mnist_sample", "data.val_size=4000"))


# Through the real CLI: one line on stderr naming the key, exit code 2, no traceback, no run.
BAD_INPUTS = [
    ("model.hidden_size=0", "model.hidden_size"),
    ("model.hidden_size=abc", "model.hidden_size"),
    ("model.num_layers=-1", "model.num_layers"),
    ("model.num_layers=1.5", "model.num_layers"),
    ("model.dropout=1.5", "model.dropout"),
    ("model.bidirectional=maybe", "model.bidirectional"),
    ("model.nonlinearity=sigmoid", "model.nonlinearity"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.batch_size=-64", "data.batch_size"),
    ("data.val_size=70000", "data.val_size"),
    ("data.val_size=0", "data.val_size"),
    ("data.std=0", "data.std"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=fast", "optimizer.lr"),
    ("model=transformer", "model=transformer"),
    ("optimizer=lbfgs", "optimizer=lbfgs"),
    ("data=cifar10", "data=cifar10"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.epochs=ten", "trainer.epochs"),
    ("trainer.device=tpu", "trainer.device"),
    ("trainer.num_threads=0", "trainer.num_threads"),
    ("seed=-5", "seed"),
    ("optimized_metric=test/acc", "optimized_metric"),
    ("resume=/nonexistent/run", "resume=/nonexistent/run"),
]


@functools.cache
def _run_bad(override: str, data_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "train.py",
            override,
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={data_dir}/bad-runs/{abs(hash(override))}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def bad_results(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("bad"))
    with ThreadPoolExecutor(max_workers=2) as pool:  # 25 interpreter start-ups, 2 at a time
        results = dict(
            zip(BAD_INPUTS, pool.map(lambda b: _run_bad(b[0], data_dir), BAD_INPUTS), strict=True)
        )
    return results


@pytest.mark.slow
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gives_one_line_and_no_traceback(bad, bad_results):
    override, named = bad
    proc = bad_results[bad]
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rnnlab: error: ") and named in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_unknown_key_is_refused_by_hydra_without_traceback(run_train, tmp_path):
    proc = run_train("model.hiden_size=3", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "model.hiden_size" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bad_value_in_a_multirun_is_reported_without_traceback(run_train, tmp_path):
    proc = run_train("-m", "model.hidden_size=0", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    assert "model.hidden_size=0 is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("override", "options"),
    [
        ("hydra/sweeper/sampler=foo", "cmaes, gp, grid, nsgaii, qmc, random, tpe"),
        ("hydra/sweeper/pruner=bar", "hyperband, median, none, successive_halving"),
        ("hydra/launcher=slurmm", "basic, joblib, slurm, submitit_local, submitit_slurm"),
    ],
)
def test_unknown_sampler_pruner_or_launcher_is_one_line(
    override: str, options: str, capsys: pytest.CaptureFixture
) -> None:
    """Hydra would list its search paths over a dozen lines; the plugins' groups count too."""
    from hydra.core.global_hydra import GlobalHydra

    from rnnlab.cli import check_group_choices

    check_group_choices(["hydra/sweeper/sampler=random", "hydra/launcher=joblib"], CONF)
    with pytest.raises(SystemExit) as exit_info:
        check_group_choices(["hparams_search=rnn_optuna", override], CONF)
    assert exit_info.value.code == 2
    key, _, value = override.partition("=")
    assert capsys.readouterr().err == (
        f"rnnlab: error: {key}={value}: no such option; choose one of {options}\n"
    )
    assert not GlobalHydra.instance().is_initialized()  # left for train.py's @hydra.main


@pytest.mark.slow
@pytest.mark.parametrize(
    "override",
    [
        "hydra.sweeper.storage=${oc.env:RNNLAB_TEST_UNSET_URL}",  # resolved by Hydra itself
        "paths.output_root=${oc.env:RNNLAB_TEST_UNSET_URL}",
    ],
)
def test_unset_environment_variable_is_one_line(override: str, tmp_path: Path) -> None:
    """The README's ${oc.env:MY_DB_URL} with the variable not exported: Hydra printed a
    traceback of a hundred lines."""
    env = {k: v for k, v in os.environ.items() if k != "RNNLAB_TEST_UNSET_URL"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "hparams_search=rnn_optuna", override],
        cwd=tmp_path,
        env={**env, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    key = override.partition("=")[0]
    assert proc.stderr.splitlines() == [
        f"rnnlab: error: {key}=${{oc.env:RNNLAB_TEST_UNSET_URL}}: the environment variable "
        "RNNLAB_TEST_UNSET_URL is not set; export it, or give a default: "
        "${oc.env:RNNLAB_TEST_UNSET_URL,<default>}"
    ]
    assert not (tmp_path / "outputs").exists()


def test_set_or_defaulted_environment_variables_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnlab.cli import check_env_variables

    monkeypatch.setenv("RNNLAB_TEST_SET", "x")
    monkeypatch.delenv("RNNLAB_TEST_UNSET_URL", raising=False)
    check_env_variables(
        [
            "-m",
            "a=${oc.env:RNNLAB_TEST_SET}",
            "b=${oc.env:RNNLAB_TEST_UNSET_URL,null}",
            "c=${oc.env:RNNLAB_TEST_UNSET_URL,/tmp/x}",
        ]
    )
