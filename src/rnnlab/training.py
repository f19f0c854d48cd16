"""The training loop: config in, run folder and objective out.

Reads top to bottom: check the config, load data onto the device, build model and
optimizer, then per epoch train, evaluate on val and test, write metrics and checkpoints.
Whatever happens (completed, diverged, pruned, interrupted, failed) summary.json says so.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from rnnlab import __version__, pruning, runs
from rnnlab.config import validate
from rnnlab.data import Batches, load_splits
from rnnlab.errors import ConfigError, DataError
from rnnlab.models import count_parameters
from rnnlab.runs import atomic_torch_save
from rnnlab.secrets import mask_url

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
    "resume",
    "trial",
)


class Diverged(Exception):
    pass


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so the run can record itself before it exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def train(cfg: DictConfig) -> float:
    """Train one model as `cfg` says; return the objective (best `optimized_metric`)."""
    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    resume_state = None
    if cfg.get("resume"):
        cfg, resume_state = _load_resume(cfg, run_dir)
    mode = runs.OPTIMIZED_METRICS[cfg.optimized_metric]
    metric_key = cfg.optimized_metric.replace("/", "_")

    started = time.time()
    summary: dict[str, Any] = {
        "schema_version": runs.SCHEMA_VERSION,
        "status": "running",
        "reason": None,
        "optimized_metric": cfg.optimized_metric,
        "objective_mode": mode,
        "objective": None,
        "started_at": _now(),
        "resumed_from": str(Path(cfg.resume).resolve()) if cfg.get("resume") else None,
        "seed": cfg.seed,
        "versions": _versions(),
        # a storage URL given on the command line may hold a password
        "command": mask_url(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])),
    }
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    reporter = None
    exit_code = None

    with _sigterm_as_exception():
        try:
            device = _resolve_device(cfg.trainer.device)
            _configure_torch(cfg, device)
            summary.update(
                device=str(device),
                device_name=_device_name(device),
                torch_threads=torch.get_num_threads(),
            )

            splits = load_splits(cfg.data).to(device)
            summary.update(data_source=splits.source, data_sizes=splits.sizes())
            log.info("data: %s  %s", splits.source, splits.sizes())

            torch.manual_seed(cfg.seed)
            model = instantiate(cfg.model).to(device)
            optimizer = _build_optimizer(cfg.optimizer, model, device)
            scheduler = instantiate(cfg.scheduler)(optimizer) if cfg.get("scheduler") else None
            summary["num_params"] = count_parameters(model)
            batch_order = torch.Generator().manual_seed(cfg.seed)
            train_batches = Batches(
                splits.train_x,
                splits.train_y,
                cfg.data.batch_size,
                cfg.data.mean,
                cfg.data.std,
                shuffle=True,
                generator=batch_order,
            )
            val_batches, test_batches = (
                Batches(x, y, cfg.data.eval_batch_size, cfg.data.mean, cfg.data.std, shuffle=False)
                for x, y in ((splits.val_x, splits.val_y), (splits.test_x, splits.test_y))
            )

            first_epoch = 1
            if resume_state is not None:
                model.load_state_dict(resume_state["model"])
                optimizer.load_state_dict(resume_state["optimizer"])
                if scheduler is not None and resume_state.get("scheduler") is not None:
                    scheduler.load_state_dict(resume_state["scheduler"])
                _set_rng_state(resume_state["rng"], batch_order)
                history = list(resume_state["history"])
                best = resume_state["best"]
                first_epoch = resume_state["epoch"] + 1
                log.info("resumed from %s after epoch %d", cfg.resume, resume_state["epoch"])
            log.info(
                "model: %s, %s parameters, device %s, %d torch threads",
                cfg.model.cell.upper(),
                f"{summary['num_params']:,}",
                device,
                torch.get_num_threads(),
            )

            reporter = pruning.reporter_from_config(cfg.get("trial"))
            status = "completed"
            for epoch in range(first_epoch, cfg.trainer.epochs + 1):
                t0 = time.perf_counter()
                train_loss, train_acc = _train_epoch(cfg, model, optimizer, train_batches, epoch)
                epoch_time = time.perf_counter() - t0
                val_loss, val_acc = evaluate(model, val_batches)
                test_loss, test_acc = evaluate(model, test_batches)
                row = dict(
                    epoch=epoch,
                    train_loss=train_loss,
                    train_acc=train_acc,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    test_loss=test_loss,
                    test_acc=test_acc,
                    lr=optimizer.param_groups[0]["lr"],
                    epoch_time_s=epoch_time,
                    train_samples_per_s=len(splits.train_y) / epoch_time,
                )
                history.append(row)
                if scheduler is not None:
                    scheduler.step()
                log.info(
                    "epoch %d/%d  loss %.4f  train acc %.2f%%  val loss %.4f  "
                    "val acc %.2f%%  test acc %.2f%%  %.1fs  %s samples/s",
                    epoch,
                    cfg.trainer.epochs,
                    train_loss,
                    100 * train_acc,
                    val_loss,
                    100 * val_acc,
                    100 * test_acc,
                    epoch_time,
                    f"{row['train_samples_per_s']:,.0f}",
                )
                if not math.isfinite(val_loss):
                    raise Diverged(f"validation loss is {val_loss} at epoch {epoch}")
                improved = best is None or mode.better(row[metric_key], best[metric_key])
                if improved:
                    best = row
                runs.write_metrics(run_dir, history)
                if cfg.trainer.save_checkpoints:
                    _save_checkpoints(
                        run_dir,
                        cfg,
                        model,
                        optimizer,
                        scheduler,
                        batch_order,
                        epoch,
                        history,
                        best,
                        improved,
                    )
                if reporter is not None and reporter.should_prune(epoch, row[metric_key]):
                    status = "pruned"
                    summary["reason"] = f"pruned by the study's pruner after epoch {epoch}"
                    log.info("trial pruned after epoch %d", epoch)
                    break
            summary["status"] = status
        except Diverged as e:
            summary.update(status="diverged", reason=f"non-finite loss: {e}")
            log.warning("run diverged: %s", e)
        except (Interrupted, KeyboardInterrupt) as e:
            name = e.args[0] if isinstance(e, Interrupted) else "SIGINT"
            summary.update(status="interrupted", reason=f"stopped by {name}")
            exit_code = 128 + (e.signum if isinstance(e, Interrupted) else signal.SIGINT)
            log.warning(
                "interrupted by %s; continue with: python train.py resume=%s", name, run_dir
            )
        except (ConfigError, DataError) as e:
            summary.update(status="failed", reason=str(e))
            raise
        except Exception as e:
            oom = isinstance(e, torch.OutOfMemoryError | MemoryError)
            reason = "out of memory" if oom else f"{type(e).__name__}: {e}"
            summary.update(status="failed", reason=reason.splitlines()[0][:500])
            raise
        finally:
            if reporter is not None:
                reporter.close()
            _finish(run_dir, cfg, summary, history, best, mode, metric_key, started)

    if exit_code is not None:
        raise SystemExit(exit_code)
    return summary["objective"]


def _train_epoch(cfg: DictConfig, model, optimizer, batches: Batches, epoch: int):
    """One pass over the training set; returns (mean loss, accuracy).

    Loss and accuracy accumulate on the device: reading them every step would stall the
    pipeline on a host sync. A non-finite loss is looked for every few steps instead.
    """
    model.train()
    device = batches.y.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    clip = cfg.trainer.grad_clip_norm
    check_every = cfg.trainer.divergence_check_every
    params = [p for p in model.parameters() if p.requires_grad]
    with _progress(cfg, len(batches), f"epoch {epoch}/{cfg.trainer.epochs}") as advance:
        for step, (x, y) in enumerate(batches, 1):
            if not model.batch_first:
                x = x.transpose(0, 1)  # (seq, batch, feature), as such a model expects
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if step % check_every == 0:
                if not torch.isfinite(loss_sum):
                    raise Diverged(
                        f"training loss is {loss_sum.item()} at epoch {epoch}, step {step}"
                    )
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


def _build_optimizer(opt_cfg: DictConfig, model, device: torch.device):
    opt_cfg = opt_cfg.copy()
    with open_dict(opt_cfg):
        for flag in ("fused", "foreach"):
            if flag in opt_cfg and opt_cfg[flag] is None:
                del opt_cfg[flag]
        # Neither flag set: the fused kernel where torch has one for this device (one kernel
        # per step instead of several per parameter tensor).
        if (
            "fused" not in opt_cfg
            and "foreach" not in opt_cfg
            and _fused_supported(opt_cfg._target_, device)
        ):
            opt_cfg.fused = True
    return instantiate(opt_cfg)(model.parameters())


def _fused_supported(target: str, device: torch.device) -> bool:
    if target not in ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"):
        return False
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device.type in _get_fused_kernels_supported_devices()
    except ImportError:
        return device.type == "cuda"


def _save_checkpoints(
    run_dir: Path,
    cfg,
    model,
    optimizer,
    scheduler,
    batch_order,
    epoch: int,
    history,
    best,
    improved: bool,
) -> None:
    ckpt_dir = run_dir / runs.CHECKPOINT_DIR
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    model_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if improved:
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "model": model_state,
                "metrics": best,
                "config": config_yaml,
            },
            ckpt_dir / "best.pt",
        )
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": model_state,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": _get_rng_state(batch_order),
            "history": history,
            "best": best,
            "config": config_yaml,
            "task_overrides": _task_overrides(),
        },
        ckpt_dir / "last.pt",
    )


def _load_resume(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, dict]:
    """The config and state to continue `cfg.resume` from; the config comes from the checkpoint."""
    source = Path(cfg.resume)
    ckpt_path = source if source.is_file() else source / runs.CHECKPOINT_DIR / "last.pt"
    if not ckpt_path.is_file():
        raise ConfigError(
            f"resume={cfg.resume}: no checkpoint at {ckpt_path} "
            "(expected a run dir holding checkpoints/last.pt)"
        )
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = OmegaConf.create(state["config"])
    except Exception as e:
        raise ConfigError(
            f"resume={cfg.resume}: {ckpt_path} is not a readable rnnlab "
            f"checkpoint ({type(e).__name__})"
        ) from None
    overridden = {o.lstrip("+~").split("=")[0]: o for o in _task_overrides()}
    refused = [o for key, o in overridden.items() if not key.startswith(RESUME_OVERRIDABLE)]
    if refused:
        raise ConfigError(
            f"resume={cfg.resume}: the config comes from the checkpoint; only "
            f"{', '.join(RESUME_OVERRIDABLE[:-2])} may be changed, not "
            f"{', '.join(refused)}"
        )
    effective = saved.copy()
    with open_dict(effective):
        for key in ("paths", "resume", "trial"):
            effective[key] = cfg.get(key)
        for key in overridden:
            if not key.startswith(("paths.", "resume", "trial")):
                OmegaConf.update(effective, key, OmegaConf.select(cfg, key))
    validate(effective)
    # The run folder must describe what ran: record the effective config, not the defaults
    # that Hydra composed around `resume=...`.
    hydra_dir = run_dir / ".hydra"
    if hydra_dir.is_dir():
        runs.atomic_write(hydra_dir / "config.yaml", OmegaConf.to_yaml(effective))
        overrides = [*state.get("task_overrides", []), *_task_overrides()]
        runs.atomic_write(
            hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides))
        )
    return effective, state


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def _finish(run_dir: Path, cfg, summary, history, best, mode, metric_key, started) -> None:
    """Fill in the outcome and write summary.json and curves.png (also after a failure)."""
    status = summary["status"]
    if status == "running":  # an exception we did not classify got here
        summary["status"] = status = "failed"
    if best is not None:
        summary.update(
            best_epoch=best["epoch"],
            best_val_acc=best["val_acc"],
            best_val_loss=best["val_loss"],
            test_acc=best["test_acc"],
            test_loss=best["test_loss"],
        )
    else:
        summary.update(
            best_epoch=None, best_val_acc=None, best_val_loss=None, test_acc=None, test_loss=None
        )
    if status == "diverged" or best is None:
        summary["objective"] = mode.worst
    else:
        summary["objective"] = best[metric_key]
    speeds = [r["train_samples_per_s"] for r in history]
    summary.update(
        epochs_completed=len(history),
        epochs_planned=cfg.trainer.epochs,
        train_samples_per_s=statistics.median(speeds) if speeds else None,
        wall_time_s=round(time.time() - started, 3),
        finished_at=_now(),
    )
    try:
        runs.write_summary(run_dir, summary)
        title = (
            f"{cfg.model.cell.upper()}-{cfg.model.hidden_size} x{cfg.model.num_layers}  "
            f"{summary['status']}  {run_dir}"
        )
        runs.plot_curves(run_dir, history, title=title)
    except OSError as e:
        log.error("could not write the run's summary in %s: %s", run_dir, e)
    log.info(
        "%s: objective %s = %s, test acc of best epoch %s  (%s)",
        summary["status"],
        cfg.optimized_metric,
        summary["objective"],
        summary["test_acc"],
        run_dir,
    )


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name}: CUDA is not available on this machine; "
            "use trainer.device=auto or cpu"
        )
    return device


def _configure_torch(cfg: DictConfig, device: torch.device) -> None:
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(cfg.trainer.num_threads)
    if cfg.trainer.deterministic and device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic results; cuDNN its deterministic RNNs.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _get_rng_state(batch_order: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batch_order": batch_order.get_state(),
    }


def _set_rng_state(state: dict[str, Any], batch_order: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    batch_order.set_state(state["batch_order"])


def _versions() -> dict[str, str]:
    # Package metadata, not imports: importing torchvision alone costs seconds per run.
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _sigterm_as_exception():
    """Turn SIGTERM into Interrupted so the run writes summary.json before it exits."""

    def handler(signum, frame):
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (some launchers): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
