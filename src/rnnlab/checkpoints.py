"""Checkpoints: last.pt and best.pt after every epoch, and resuming a run from last.pt.

last.pt holds everything a run needs to go on exactly where it stopped (model, optimizer,
scheduler, every RNG state, the epochs' rows, the config and the group choices that ran);
best.pt the weights of the best epoch. Neither holds the `trial` subtree of the config: it
names the sweep's study storage (a URL that may carry a password), and a resumed run takes
`trial` from its own command line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab import runs
from rnnlab.config import validate
from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# On resume these may differ from the checkpoint's config (where things are, how long to go
# on, which device); everything that shapes the numbers is taken from the checkpoint.
RESUME_OVERRIDABLE = (
    "trainer.epochs",
    "trainer.device",
    "trainer.progress",
    "trainer.num_threads",
    "paths.",
    "data.root",
    "data.cache_dir",
    "data.download",
)
# Never from the checkpoint: where this run is, what it resumes, which trial it reports to.
PER_RUN_KEYS = ("paths", "resume", "trial")
# What last.pt must hold to be resumed from (best.pt has the weights only).
RESUMABLE_KEYS = ("epoch", "model", "optimizer", "rng", "history", "best", "config")


@dataclass
class TrainState:
    """What changes as a run trains, and what last.pt saves and resume restores."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batch_order: torch.Generator
    epoch: int = 0  # the last finished epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # the row of the best epoch so far


@dataclass
class Resume:
    """A run to continue: the effective config, the state saved in last.pt, its choices."""

    source: Path
    config: DictConfig
    state: dict[str, Any]
    choices: dict[str, str | None]


def save(run_dir: Path, cfg: DictConfig, state: TrainState, improved: bool, choices: dict) -> None:
    """best.pt (when this epoch is the best so far), then last.pt, both atomically.

    `choices` are the config-group choices of what runs (for a resumed run, the original's).

    In that order, so that a run stopped between the two resumes from the epoch before and
    best.pt never runs ahead of the `best` row saved in last.pt.
    """
    ckpt_dir = run_dir / runs.CHECKPOINT_DIR
    runs.remove_stale_temp_files(ckpt_dir)  # a few names to look at: cheap every epoch
    config_yaml = OmegaConf.to_yaml(_recorded(cfg), resolve=True)
    model_state = {k: v.detach().cpu() for k, v in state.model.state_dict().items()}
    common = {"format": CHECKPOINT_FORMAT, "epoch": state.epoch, "model": model_state}
    if improved:
        runs.atomic_torch_save(
            {**common, "metrics": state.best, "config": config_yaml},
            ckpt_dir / runs.BEST_CHECKPOINT,
        )
    runs.atomic_torch_save(
        {
            **common,
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "rng": rng_state(state.batch_order),
            "history": state.history,
            "best": state.best,
            "config": config_yaml,
            "choices": choices,
            "task_overrides": _task_overrides(),
        },
        ckpt_dir / runs.LAST_CHECKPOINT,
    )


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT


def load_for_resume(cfg: DictConfig, run_dir: Path) -> Resume:
    """The run `cfg.resume` names, ready to continue in `run_dir`.

    The config comes from the checkpoint, with the few keys that may change (RESUME_OVERRIDABLE)
    taken from `cfg`; the new run folder's .hydra files are rewritten to say what runs.
    """
    source = Path(cfg.resume)
    ckpt_path = source if source.is_file() else last_checkpoint(source)
    if not ckpt_path.is_file():
        raise ConfigError(
            f"resume={cfg.resume}: no checkpoint at {ckpt_path} "
            f"(expected a run dir holding {runs.CHECKPOINT_DIR}/{runs.LAST_CHECKPOINT})"
        )
    state = _read(ckpt_path, cfg.resume)
    source_dir = ckpt_path.parent.parent
    for folder in (source_dir, ckpt_path.parent):  # left by a run killed mid-write
        runs.remove_stale_temp_files(folder)
    effective = _effective_config(cfg, OmegaConf.create(state["config"]))
    done, planned = state["epoch"], effective.trainer.epochs
    if done >= planned:
        raise ConfigError(
            f"resume={cfg.resume}: that run has already trained {done} epochs and "
            f"trainer.epochs={planned}; give trainer.epochs=N with N > {done} to train it further"
        )
    choices = state.get("choices") or _choices_in_hydra_yaml(source_dir)
    _record_in_hydra_dir(run_dir, effective, state, choices)
    return Resume(source=source, config=effective, state=state, choices=choices)


def restore(state: TrainState, resume: Resume) -> None:
    """Put the saved model, optimizer, scheduler, RNG states and rows back into `state`."""
    saved = resume.state
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scheduler is not None and saved.get("scheduler") is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], state.batch_order)
        state.history = list(saved["history"])
        state.best = saved["best"]
        state.epoch = int(saved["epoch"])
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError) as e:
        # a damaged or hand-made last.pt whose parts do not fit its own config
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        raise ConfigError(
            f"resume={resume.source}: {runs.LAST_CHECKPOINT} does not fit the config it "
            f"carries ({type(e).__name__}: {detail})"
        ) from None


def rng_state(batch_order: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_order": batch_order.get_state(),
    }


def set_rng_state(state: dict[str, Any], batch_order: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    batch_order.set_state(state["batch_order"])


def _read(ckpt_path: Path, resume: str) -> dict[str, Any]:
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        OmegaConf.create(state["config"])
    except Exception as e:
        raise ConfigError(
            f"resume={resume}: {ckpt_path} is not a readable rnnlab checkpoint ({type(e).__name__})"
        ) from None
    missing = [k for k in RESUMABLE_KEYS if k not in state]
    if missing:
        raise ConfigError(
            f"resume={resume}: {ckpt_path.name} holds a model's weights only, not the "
            f"training state to go on from (no {', '.join(missing)}); resume from the run "
            f"dir, i.e. its {runs.CHECKPOINT_DIR}/{runs.LAST_CHECKPOINT}"
        )
    return state


def _effective_config(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """The checkpoint's config with this command's per-run keys and allowed overrides."""
    overridden = {o.lstrip("+~").split("=")[0]: o for o in _task_overrides()}
    refused = [
        o
        for key, o in overridden.items()
        if not key.startswith(RESUME_OVERRIDABLE) and key not in PER_RUN_KEYS
    ]
    if refused:
        raise ConfigError(
            f"resume={cfg.resume}: the config comes from the checkpoint; only "
            f"{', '.join(RESUME_OVERRIDABLE)} may be changed, not {', '.join(refused)}"
        )
    effective = saved.copy()
    with open_dict(effective):
        for key in PER_RUN_KEYS:
            effective[key] = cfg.get(key)
        for key in overridden:
            if key.startswith(RESUME_OVERRIDABLE):
                OmegaConf.update(effective, key, OmegaConf.select(cfg, key))
    validate(effective)
    return effective


def _record_in_hydra_dir(
    run_dir: Path, effective: DictConfig, state: dict[str, Any], choices: dict
) -> None:
    """The run folder must describe what ran: the effective config and the original group
    choices, not the defaults that Hydra composed around `resume=...`."""
    hydra_dir = run_dir / runs.HYDRA_DIR
    if not hydra_dir.is_dir():
        return
    runs.atomic_write(hydra_dir / runs.HYDRA_CONFIG_FILE, OmegaConf.to_yaml(effective))
    overrides = [*state.get("task_overrides", []), *_task_overrides()]
    runs.atomic_write(
        hydra_dir / runs.HYDRA_OVERRIDES_FILE, OmegaConf.to_yaml(OmegaConf.create(overrides))
    )
    hydra_yaml = hydra_dir / runs.HYDRA_RUNTIME_FILE
    if choices and hydra_yaml.is_file():
        recorded = OmegaConf.load(hydra_yaml)
        with open_dict(recorded):
            for group, choice in choices.items():
                recorded.hydra.runtime.choices[group] = choice
        runs.atomic_write(hydra_yaml, OmegaConf.to_yaml(recorded))


def _recorded(cfg: DictConfig) -> DictConfig:
    """`cfg` as a checkpoint keeps it: without the per-run `trial` (the study's storage)."""
    kept = cfg.copy()
    with open_dict(kept):
        for key in runs.UNRECORDED_CONFIG_KEYS:
            kept.pop(key, None)
    return kept


def _task_overrides() -> list[str]:
    """This run's command-line overrides, without `trial...` (it holds the storage URL)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    overrides = HydraConfig.get().overrides.task
    return [o for o in overrides if not o.lstrip("+~").startswith(runs.UNRECORDED_CONFIG_KEYS)]


def composed_choices() -> dict[str, str | None]:
    """The config-group choices Hydra composed for this run (for a resumed run these are
    the defaults around `resume=...`: use `Resume.choices` instead)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return runs.run_choices(HydraConfig.get().runtime.choices)


def _choices_in_hydra_yaml(run_dir: Path) -> dict[str, str | None]:
    """Choices of a run whose last.pt predates them: its .hydra/hydra.yaml has them."""
    try:
        recorded = OmegaConf.load(run_dir / runs.HYDRA_DIR / runs.HYDRA_RUNTIME_FILE)
        return runs.run_choices(OmegaConf.to_container(recorded.hydra.runtime.choices))
    except Exception:
        return {}
