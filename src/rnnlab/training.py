"""The training loop: config in, run folder and objective out.

Reads top to bottom: `train` checks the config, starts the run's summary, sets up data,
model and optimizer (`_setup`), trains epoch by epoch (`_fit`: train, evaluate on val and
test, save checkpoints and metrics), and whatever happens (completed, diverged, pruned,
interrupted, failed) writes summary.json and curves.png (`_finish`).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnlab import __version__, checkpoints, gpu, pruning, runs, slurm, steps, threads
from rnnlab.checkpoints import TrainState
from rnnlab.config import validate
from rnnlab.data import Batches, load_splits
from rnnlab.devices import configure_torch, device_name, out_of_memory, resolve_device
from rnnlab.errors import ConfigError, RunError, UserError
from rnnlab.loggers import open_loggers
from rnnlab.models import count_parameters
from rnnlab.optim import build_optimizer, build_scheduler
from rnnlab.runs import Status
from rnnlab.secrets import mask_url
from rnnlab.signals import Interrupted, signals_as_exceptions

log = logging.getLogger(__name__)


class Diverged(Exception):
    pass


class RunHook(Protocol):
    """Something told about every epoch and the end of the run: the experiment loggers
    (rnnlab.loggers.Loggers, the `logger` config group)."""

    def log_epoch(self, row: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None: ...


@dataclass
class Run:
    """One training run: its config and folder, its summary, and what it trains."""

    cfg: DictConfig
    dir: Path
    summary: runs.Summary
    resume: checkpoints.Resume | None = None
    state: TrainState | None = None
    batches: dict[str, Batches] = field(default_factory=dict)  # train, val, test
    reporter: Any = None  # reports to the sweep's study and says when to prune
    step: steps.TrainStep | None = None  # one optimisation step (eager, bf16, CUDA graph)
    hooks: list[RunHook] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def epochs(self) -> int:
        return self.cfg.trainer.epochs


def train(cfg: DictConfig) -> float:
    """Train one model as `cfg` says; return the objective (best `optimized_metric`)."""
    validate(cfg)
    run = _start(cfg)
    exit_code = None
    with signals_as_exceptions() as signals:
        try:
            _setup(run)
            _fit(run)
        except Diverged as e:
            signals.hold()
            run.summary.status, run.summary.reason = Status.DIVERGED, f"non-finite loss: {e}"
            log.warning("run diverged: %s", e)
        except (Interrupted, KeyboardInterrupt) as e:
            signals.hold()
            signum = getattr(e, "signum", signal.SIGINT)
            name = signal.Signals(signum).name
            run.summary.status, run.summary.reason = Status.INTERRUPTED, f"stopped by {name}"
            exit_code = 128 + signum
            _say_how_to_resume(run, name)
        except UserError as e:
            signals.hold()
            run.summary.status, run.summary.reason = Status.FAILED, str(e)
            raise
        except Exception as e:
            signals.hold()  # in each handler first: a signal now must not replace the error
            error = _as_run_error(run, e)
            run.summary.status = Status.FAILED
            run.summary.reason = str(error or f"{type(e).__name__}: {e}").splitlines()[0][:500]
            if error is not None:
                raise error from None
            raise
        finally:
            signals.hold()  # from here a signal is remembered: the final files get written
            _finish(run)
    if exit_code is None and signals.pending:
        exit_code = 128 + signals.pending
    if exit_code is not None:
        raise SystemExit(exit_code)
    return run.summary.objective


def _start(cfg: DictConfig) -> Run:
    """The run's folder and summary; for `resume=...`, the config and state to go on from."""
    run_dir = Path(cfg.paths.output_dir)
    resume = checkpoints.load_for_resume(cfg, run_dir) if cfg.get("resume") else None
    if resume is not None:
        cfg = resume.config
    summary = runs.Summary.start(
        OmegaConf.to_container(cfg, resolve=True),
        resume.choices if resume else checkpoints.composed_choices(),
        resumed_from=str(resume.source.resolve()) if resume else None,
        versions=_versions(),
        # a storage URL given on the command line may hold a password
        command=mask_url(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])),
        epochs_planned=cfg.trainer.epochs,
        slurm_job_id=slurm.job_id(),
    )
    return Run(cfg=cfg, dir=run_dir, summary=summary, resume=resume)


def _setup(run: Run) -> None:
    """Device, data on the device, model, optimizer, schedule; the saved state on resume."""
    cfg, summary = run.cfg, run.summary
    # First: a logger that cannot work (bad tracking URI, package missing) is one line now,
    # not a crash after the last epoch.
    run.hooks.append(open_loggers(cfg, run.dir))
    device = resolve_device(cfg.trainer.device)
    num_threads, why = threads.choose(cfg, device)
    configure_torch(device, num_threads, cfg.trainer.deterministic)
    summary.device, summary.device_name = str(device), device_name(device)
    summary.torch_threads, summary.torch_threads_why = torch.get_num_threads(), why
    gpu.limit_memory(device, cfg.trainer.get("gpu_memory_fraction"))

    splits = load_splits(cfg.data).to(device)
    summary.data_source, summary.data_sizes = splits.source, splits.sizes()
    log.info("data: %s  %s", splits.source, splits.sizes())

    torch.manual_seed(cfg.seed)
    model = _build_model(cfg, device)
    capturable = steps.wants_cuda_graphs(cfg.trainer, device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), device, capturable)
    scheduler = build_scheduler(cfg.get("scheduler"), optimizer)
    summary.num_params = count_parameters(model)
    summary.kernel = model.kernel_for(device.type, cfg.trainer.get("precision") == "bf16")
    batch_order = torch.Generator().manual_seed(cfg.seed)
    run.state = TrainState(model, optimizer, scheduler, batch_order)
    d = cfg.data
    run.batches["train"] = Batches(
        splits.train_x,
        splits.train_y,
        d.batch_size,
        d.mean,
        d.std,
        True,
        generator=batch_order,
        max_shift=d.get("augment_shift") or 0,
    )
    for split in ("val", "test"):
        x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
        run.batches[split] = Batches(x, y, d.eval_batch_size, d.mean, d.std, shuffle=False)

    if run.resume is not None:
        checkpoints.restore(run.state, run.resume)
        log.info("resumed from %s after epoch %d", cfg.resume, run.state.epoch)
    log.info(
        "model: %s, %s parameters, device %s, %d torch threads (%s)",
        cfg.model.cell.upper() + (" (rnnlab's CPU kernel)" if summary.kernel == "rnnlab" else ""),
        f"{summary.num_params:,}",
        device,
        torch.get_num_threads(),
        why,
    )
    run.step = steps.make_train_step(model, optimizer, cfg.trainer, device)
    run.reporter = pruning.reporter_from_config(cfg.get("trial"))


def _fit(run: Run) -> None:
    """Train epoch after epoch until trainer.epochs, a divergence or the pruner says stop."""
    cfg, state, summary = run.cfg, run.state, run.summary
    metric = runs.metric_column(cfg.optimized_metric)
    for epoch in range(state.epoch + 1, run.epochs + 1):
        row = _train_and_evaluate(run, epoch)
        state.history.append(row)
        state.epoch = epoch
        if state.scheduler is not None:
            state.scheduler.step()
        _log_epoch(run, row)
        if not math.isfinite(row["val_loss"]):
            raise Diverged(f"validation loss is {row['val_loss']} at epoch {epoch}")
        improved = state.best is None or summary.direction.better(row[metric], state.best[metric])
        if improved:
            state.best = row
        # Checkpoints before metrics.csv: a run stopped in between has a last.pt for every
        # row of its metrics.csv, so its resume command always works.
        if cfg.trainer.save_checkpoints:
            checkpoints.save(run.dir, cfg, state, improved, summary.choices)
        runs.write_metrics(run.dir, state.history)
        for hook in run.hooks:
            hook.log_epoch(row)
        if run.reporter is not None and run.reporter.should_prune(epoch, row[metric]):
            summary.status = Status.PRUNED
            summary.reason = f"pruned by the study's pruner after epoch {epoch}"
            log.info("trial pruned after epoch %d", epoch)
            return
    summary.status = Status.COMPLETED


def _train_and_evaluate(run: Run, epoch: int) -> dict[str, Any]:
    """One epoch of training, then val and test: the epoch's metrics.csv row."""
    state, batches = run.state, run.batches
    t0 = time.perf_counter()
    train_loss, train_acc = _train_epoch(
        run.cfg, state.model, state.optimizer, batches["train"], epoch, run.step
    )
    epoch_time = time.perf_counter() - t0
    val_loss, val_acc = evaluate(state.model, batches["val"])
    test_loss, test_acc = evaluate(state.model, batches["test"])
    return dict(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=val_loss,
        val_acc=val_acc,
        test_loss=test_loss,
        test_acc=test_acc,
        lr=state.optimizer.param_groups[0]["lr"],
        epoch_time_s=epoch_time,
        train_samples_per_s=len(batches["train"].y) / epoch_time,
    )


def _train_epoch(cfg: DictConfig, model, optimizer, batches: Batches, epoch: int, train_step=None):
    """One pass over the training set; returns (mean loss, accuracy).

    Loss and accuracy accumulate on the device: reading them every step would stall the
    pipeline on a host sync. A non-finite loss is looked for every few steps instead.
    `train_step` defaults to the eager step (benchmarks call this function without a run).
    """
    model.train()
    device = batches.y.device
    if train_step is None:
        train_step = steps.make_train_step(model, optimizer, cfg.trainer, device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    check_every = cfg.trainer.divergence_check_every
    with _progress(cfg, len(batches), f"epoch {epoch}/{cfg.trainer.epochs}") as advance:
        for i, (x, y) in enumerate(batches, 1):
            loss, logits = train_step(x, y)
            loss_sum += loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            if i % check_every == 0:
                if not torch.isfinite(loss_sum):
                    raise Diverged(f"training loss is {loss_sum.item()} at epoch {epoch}, step {i}")
                advance(check_every)
    n = len(batches.y)
    train_loss = loss_sum.item() / n
    if not math.isfinite(train_loss):
        raise Diverged(f"training loss is {train_loss} at epoch {epoch}")
    return train_loss, correct.item() / n


@torch.inference_mode()
def evaluate(model, batches: Batches) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over `batches`, with the model in eval mode."""
    model.eval()
    device = batches.y.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for x, y in batches:
        if not model.batch_first:
            x = x.transpose(0, 1)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    n = len(batches.y)
    return loss_sum.item() / n, correct.item() / n


def _build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    try:
        return instantiate(cfg.model).to(device)
    except Exception as e:
        # Hydra wraps what the constructor raised; an allocation failure is said as such.
        cause = e.__cause__ if e.__cause__ is not None else e
        if out_of_memory(cause) is None:
            raise ConfigError(f"model: {type(cause).__name__}: {cause}") from None
        raise cause from None


def _as_run_error(run: Run, e: Exception) -> RunError | None:
    """An error of the machine (out of memory, a full disk, a folder it may not write), as
    one line that says what to do; None for an error we did not foresee (a bug)."""
    oom = out_of_memory(e)
    if oom is not None:
        m = run.cfg.model
        return RunError(
            f"{oom}; model.hidden_size={m.hidden_size}, model.num_layers={m.num_layers}, "
            f"data.batch_size={run.cfg.data.batch_size}: try smaller ones"
        )
    if isinstance(e, OSError) and e.errno is not None:
        where = f" ({e.filename})" if e.filename else f" (writing into {run.dir})"
        hint = _resume_hint(run)
        return RunError(f"{e.strerror or e}{where}{'; ' + hint if hint else ''}")
    return None


def _finish(run: Run) -> None:
    """Fill in the outcome and write summary.json and curves.png (also after a failure)."""
    summary = run.summary
    state = run.state
    history = state.history if state is not None else []
    summary.conclude(history, state.best if state is not None else None)
    summary.wall_time_s = round(time.time() - run.started, 3)
    steps.record(summary, run.step)
    if run.reporter is not None:
        run.reporter.close()
    try:
        summary.write(run.dir)
        m = run.cfg.model
        title = f"{m.cell.upper()}-{m.hidden_size} x{m.num_layers}  {summary.status}  {run.dir}"
        runs.plot_curves(run.dir, history, title=title)
    except OSError as e:
        log.error("could not write the run's summary in %s: %s", run.dir, e)
    for hook in run.hooks:
        hook.finish(summary.to_dict(), run.dir)
    log.info(
        "%s: objective %s = %s, test acc of best epoch %s  (%s)",
        summary.status,
        summary.optimized_metric,
        summary.objective,
        summary.test_acc,
        run.dir,
    )


def _log_epoch(run: Run, row: dict[str, Any]) -> None:
    log.info(
        "epoch %d/%d  loss %.4f  train acc %.2f%%  val loss %.4f  "
        "val acc %.2f%%  test acc %.2f%%  %.1fs  %s samples/s",
        row["epoch"],
        run.epochs,
        row["train_loss"],
        100 * row["train_acc"],
        row["val_loss"],
        100 * row["val_acc"],
        100 * row["test_acc"],
        row["epoch_time_s"],
        f"{row['train_samples_per_s']:,.0f}",
    )


def _resume_hint(run: Run) -> str:
    """How to continue this run, when it has a checkpoint to continue from."""
    if checkpoints.last_checkpoint(run.dir).is_file():
        return f"continue with: python train.py resume={run.dir}"
    return ""


def _say_how_to_resume(run: Run, signal_name: str) -> None:
    hint = _resume_hint(run) or "no checkpoint was written yet, so there is nothing to resume"
    log.warning("interrupted by %s; %s", signal_name, hint)


def _versions() -> dict[str, str]:
    # Package metadata, not imports: importing torchvision alone costs seconds per run.
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {
        "rnnlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for name, dist in (
        ("torchvision", "torchvision"),
        ("hydra", "hydra-core"),
        ("omegaconf", "omegaconf"),
    ):
        try:
            versions[name] = version(dist)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextmanager
def _progress(cfg: DictConfig, total: int, description: str):
    """A progress bar on an interactive terminal; yields advance(n). Plain logs otherwise."""
    show = cfg.trainer.progress
    if show == "auto":
        show = sys.stderr.isatty()
    if not show:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
