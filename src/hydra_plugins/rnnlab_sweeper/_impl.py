"""The rnnlab_optuna sweep loop.

Per trial: ask the study, launch a Hydra job with the trial's parameters (and, for an rnnlab
app, a `trial={...}` override so the job can report per epoch and be pruned), then read the
job's return and summary.json and tell the study what happened. With a launcher that runs jobs
in processes of their own, a new trial starts whenever one ends; otherwise trials go in
batches, as Hydra's do. Failed, diverged, pruned and interrupted trials are recorded with their
reason and the sweep goes on. At the end: counts by status, the best trial (or the Pareto
front), optimization_results.yaml and trials.csv in the sweep dir.

Parts: space (overrides <-> distributions), samplers, study (open, create, resume, recover),
outcome (a job -> the trial's state), telling (recording it in the study), results (the
sweep folder's files).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnlab import runs, secrets, sweeps
from rnnlab.runs import Status
from rnnlab.storage import Heartbeat

from . import _jobs as jobs
from . import _outcome as outcome
from . import _settings as settings
from . import _space as space
from . import _study as studies
from ._errors import SweepConfigError, SweepFailed, SweepInterrupted
from ._optuna_seams import trial_id
from ._samplers import PerTrialSampler, build_sampler
from ._telling import FAILURES, Teller

log = logging.getLogger(__name__)

# A key only rnnlab's train config has: the sweeper sets it only where the app has it too.
TRIAL_KEY = "trial"
# Seconds a Ctrl-C'd sweep waits for its jobs to record themselves before it stops them.
CTRL_C_GRACE_S = 15.0

Finished = queue.Queue  # of (trial, JobReturn | BaseException)


class RnnlabOptunaSweeperImpl:
    def __init__(
        self,
        *,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        resume: bool,
        n_trials: int,
        n_jobs: int | None,
        timeout: float | None,
        max_failure_rate: float,
        pipeline: bool,
        params: DictConfig | None,
        custom_search_space: str | None,
        summary_objectives: list[str] | None = None,
        search_space: DictConfig | None = None,
    ) -> None:
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.resume = resume
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.timeout = timeout
        self.max_failure_rate = max_failure_rate
        self.pipeline = pipeline
        self.params = params
        if search_space is not None:
            # The stock plugin's old name for params (deprecated there in Hydra 1.2).
            log.warning(
                "hydra.sweeper.search_space is deprecated: use hydra.sweeper.params instead"
            )
            self.params = OmegaConf.merge(search_space, params or {})
        self.custom_search_space = custom_search_space
        self.summary_objectives = list(summary_objectives or [])
        self.job_idx = 0
        self.counts: Counter[str] = Counter()  # this sweep's trials by status
        self.stopped: str | None = None  # why max_failure_rate stopped the sweep
        self._threads: list[threading.Thread] = []  # pipelined launches

    # ---------------------------------------------------------------- setup

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        if self.n_trials < 0:
            raise SweepConfigError(f"hydra.sweeper.n_trials={self.n_trials}: expected >= 0")
        if self.n_jobs is not None and self.n_jobs < 1:
            raise SweepConfigError(f"hydra.sweeper.n_jobs={self.n_jobs}: expected >= 1 or null")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise SweepConfigError(
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: "
                "expected a number in [0, 1]"
            )
        self.rnnlab_app = space.has_key(config, TRIAL_KEY)
        self.study_name = self.study_name or settings.search_name(config) or "rnnlab"
        self.storage_url = self.storage or settings.default_storage(config, self.study_name)
        self.masked_storage = secrets.mask_url(self.storage_url)
        # Restored when the sweep ends: the calling process gets back what it had.
        self._saved_argv = list(sys.argv)
        self._saved_env = dict(os.environ)
        # Before the launcher exists: it keeps `config`, and every job's hydra.yaml is
        # recomposed from hydra.overrides.hydra, so both must hold the masked URL only. The
        # jobs find the real URL in the environment.
        os.environ[secrets.STORAGE_ENV] = self.storage_url
        with settings.writable(
            config, "hydra", "hydra.sweeper", "hydra.overrides", "hydra.job.config"
        ):
            config.hydra.sweeper.storage = self.masked_storage
            config.hydra.sweeper.study_name = self.study_name
            # Unresolved: Hydra resolves interpolations in them (e.g.
            # hydra.sweep.subdir=${hydra.job.override_dirname}) per job, not here.
            kept = [
                o
                for o in OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)
                if not o.lstrip("+~").startswith(
                    ("hydra.sweeper.storage=", "hydra.sweeper.study_name=")
                )
            ]
            config.hydra.overrides.hydra = [
                *kept,
                f"hydra.sweeper.storage={settings.quote(self.masked_storage)}",
                f"hydra.sweeper.study_name={settings.quote(self.study_name)}",
            ]
            # The trial's bookkeeping is no part of a job's name (override_dirname).
            exclude = config.hydra.job.config.override_dirname.exclude_keys
            if TRIAL_KEY not in exclude:
                exclude.append(TRIAL_KEY)
        # Runs record their command line (summary.json): keep the password out of it.
        sys.argv[:] = [secrets.mask_url(a) for a in sys.argv]
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # ---------------------------------------------------------------- the sweep

    def sweep(self, arguments: list[str]) -> None:
        try:
            self._sweep(arguments)
        finally:
            # Also what the launcher changed (joblib sets KMP_INIT_AT_FORK).
            sys.argv[:] = self._saved_argv
            for key in set(os.environ) - set(self._saved_env):
                del os.environ[key]
            os.environ.update(self._saved_env)

    def _sweep(self, arguments: list[str]) -> None:
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        loader = self.hydra_context.config_loader
        self.space, self.fixed = space.parse_search_space(
            [*params, *arguments], self.config, loader.get_group_options
        )
        self.directions = settings.directions(
            self.direction, OmegaConf.select(self.config, "optimized_metric", default=None)
        )
        parallel = jobs.parallelism(self.config)
        self.width = self.n_jobs or parallel  # trials running at once
        self.pipelined = self._pipelined()
        self.custom = self._custom_search_space()
        is_grid = str(self.sampler_cfg.get("_target_", "")).endswith("GridSampler")
        self.grid = space.grid(self.space) if is_grid else None
        n_trials = self.n_trials
        if self.grid is not None:
            n_trials = min(n_trials, math.prod(len(v) for v in self.grid.values()))

        self.storage_obj = studies.open_study_storage(self.storage_url)
        # Beats for this sweep's unfinished trials: cooperating sweeps on other hosts can tell
        # they are not abandoned.
        self.heartbeat = Heartbeat(self.storage_obj)
        self.teller = Teller(
            self.storage_obj,
            self.study_name,
            self.config.hydra.launcher,
            self.directions,
            self.summary_objectives,
            self.heartbeat,
        )
        study = studies.create_or_resume(
            self.storage_obj, self.study_name, self.directions, self.resume, self.masked_storage
        )
        space.check_compatible(study, self.space)
        studies.recover_abandoned(self.storage_obj, study, self.teller.settle_unreturned)
        self._write(runs.MULTIRUN_FILE, OmegaConf.to_yaml(self.config))
        self._log_plan(study, n_trials)

        self.teller.first_error = None  # not the recovered trials' errors
        try:
            with jobs.sigterm_raises():
                self._run(n_trials)
        except (KeyboardInterrupt, SweepInterrupted) as e:
            raise SweepFailed(
                f"sweep stopped by {'SIGINT' if isinstance(e, KeyboardInterrupt) else 'SIGTERM'}"
                f"; its running trials were recorded as interrupted; continue with "
                "hydra.sweeper.resume=true"
            ) from None
        finally:
            self.heartbeat.stop()
        outcome_study = studies.load_study(self.storage_obj, self.study_name)
        try:
            from ._results import write_results

            write_results(
                self.sweep_dir,
                outcome_study,
                self.directions,
                self.masked_storage,
                self.counts,
                str(OmegaConf.select(self.config, "optimized_metric", default="objective")),
            )
        except OSError as e:
            raise SweepFailed(f"cannot write the results into {self.sweep_dir}: {e}") from None
        if self.stopped:
            raise SweepFailed(self.stopped)
        done = sum(self.counts.values())
        if done and not any(self.counts[s] for s in (Status.COMPLETED, Status.PRUNED)):
            raise SweepFailed(
                f"none of this sweep's {done} trials succeeded; the first error: "
                f"{self.teller.first_error or 'see the log above'}"
            )

    def _run(self, n_trials: int) -> None:
        """Keep `width` trials running: pipelined, a new one starts as soon as any ends (each
        a one-job launch from a thread of its own); in batches, `width` at a time, launched
        from this thread and all awaited. Asking and telling stay in this thread."""
        finished: Finished = queue.Queue()
        running: dict[int, optuna.trial.Trial] = {}
        started, launched = time.monotonic(), 0
        try:
            while True:
                while not self.stopped and launched < n_trials:
                    room = self.width - len(running) if self.pipelined else self.width
                    if room <= 0 or (running and not self.pipelined):
                        break
                    if self._stop_launching(started):
                        n_trials = launched
                        break
                    size = 1 if self.pipelined else min(room, n_trials - launched)
                    group = [self._ask() for _ in range(size)]
                    running.update((t.number, t) for t in group)
                    launched += len(group)
                    self._launch(group, finished)
                if not running:
                    break
                trial, result = finished.get()
                del running[trial.number]
                self._count(self.teller.settle(trial, result))
        except BaseException as e:
            reason = f"sweep stopped during the trial ({type(e).__name__})"
            frozen = [self.storage_obj.get_trial(trial_id(t)) for t in running.values()]
            if isinstance(e, KeyboardInterrupt):
                # Ctrl-C reached the workers too: let them record themselves first (a second
                # signal while a run writes its final files helps nobody).
                jobs.wait_finished(frozen, CTRL_C_GRACE_S)
            for t in frozen:
                jobs.stop_job(t.user_attrs.get("job"))
                self.teller.settle_unreturned(t, reason)
            # Let the launches return (their jobs are stopping) so that the launcher cleans
            # up before this process exits (joblib's resource tracker otherwise races it).
            deadline = time.monotonic() + CTRL_C_GRACE_S
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            raise

    def _ask(self) -> optuna.trial.Trial:
        study = studies.load_study(self.storage_obj, self.study_name)
        study.sampler = PerTrialSampler(
            lambda number: build_sampler(self.sampler_cfg, number, self.grid, self.width > 1),
            # The owner goes in first: a trial whose sweep dies from here on is recoverable.
            lambda frozen: self.storage_obj.set_trial_user_attr(
                trial_id(frozen), "owner", sweeps.process_identity()
            ),
        )
        with warnings.catch_warnings():
            # Heartbeats are ours (rnnlab.storage.Heartbeat), not Study.optimize's.
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trial = study.ask(fixed_distributions=self.space)
        self.heartbeat.add(trial_id(trial))
        try:
            if self.custom is not None:
                self.custom(self.config, trial)
                overlap = sorted(set(trial.params) & set(self.fixed))
                if overlap:
                    raise SweepConfigError(
                        f"hydra.sweeper.custom_search_space={self.custom_search_space} "
                        f"suggests {', '.join(overlap)}, which the sweep's params fix; "
                        "remove one of the two"
                    )
            trial.set_user_attr("pruner", OmegaConf.to_container(self.pruner_cfg, resolve=True))
            trial.set_user_attr("sweep_dir", str(self.sweep_dir))
        except BaseException as e:
            self.teller.settle_unreturned(
                self.storage_obj.get_trial(trial_id(trial)), outcome.error_line(e)
            )
            if isinstance(e, Exception) and not isinstance(e, SweepConfigError):
                raise SweepConfigError(
                    f"hydra.sweeper.custom_search_space={self.custom_search_space}: "
                    f"{outcome.error_line(e)}"
                ) from None
            raise
        return trial

    def _launch(self, group: list[optuna.trial.Trial], finished: Finished) -> None:
        overrides = [self._overrides(t) for t in group]
        job_idx, self.job_idx = self.job_idx, self.job_idx + len(group)

        def launch() -> None:
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=job_idx)
            except Exception as e:
                # E.g. the OS killed a worker (out of memory): these trials failed, the sweep
                # goes on (with fresh workers).
                returns = [e] * len(group)
            except BaseException as e:
                if not self.pipelined:
                    raise  # Ctrl-C in this thread: the loop records the batch
                returns = [e] * len(group)
            for t, r in zip(group, returns, strict=True):
                finished.put((t, r))

        if self.pipelined:
            thread = threading.Thread(target=launch, name=f"trial-{group[0].number}", daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        else:
            launch()  # the basic launcher runs the job in this thread: signals must reach it

    def _overrides(self, trial: optuna.trial.Trial) -> list[str]:
        values = {name: f"{name}={value}" for name, value in trial.params.items()}
        for name, value in self.fixed.items():
            values.setdefault(name, f"{name}={value}")
        if self.rnnlab_app:
            values[TRIAL_KEY] = (
                f"{TRIAL_KEY}={{study_name:{settings.quote(self.study_name)},number:{trial.number},"
                f"trial_id:{trial_id(trial)},storage:{settings.quote(self.masked_storage)}}}"
            )
        return list(values.values())

    def _count(self, status: str) -> None:
        self.counts[status] += 1

    def _stop_launching(self, started: float) -> bool:
        if self.timeout is not None and time.monotonic() - started >= self.timeout:
            log.info("timeout of %ss reached: no new trials", self.timeout)
            return True
        done = sum(self.counts.values())
        failed = sum(self.counts[s] for s in FAILURES)
        if done and failed / done > self.max_failure_rate:
            self.stopped = (
                f"{failed} of {done} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: sweep stopped; "
                f"the first error: {self.teller.first_error or 'see the log above'}"
            )
            log.error("%s", self.stopped)
            return True
        return False

    # ---------------------------------------------------------------- settings

    def _pipelined(self) -> bool:
        # Only launchers that run each job in its own process may be called from several
        # threads at once; the basic launcher runs jobs inside this process.
        target = str(self.config.hydra.launcher.get("_target_", ""))
        return self.pipeline and self.width > 1 and ("Joblib" in target or "submitit" in target)

    def _custom_search_space(self) -> Any:
        if not self.custom_search_space:
            return None
        try:
            return instantiate({"_target_": self.custom_search_space, "_partial_": True})
        except Exception as e:
            cause = e.__cause__ or e
            raise SweepConfigError(
                f"hydra.sweeper.custom_search_space={self.custom_search_space}: cannot import "
                f"it ({outcome.error_line(cause)})"
            ) from None

    def _write(self, name: str, text: str) -> None:
        try:
            runs.atomic_write(self.sweep_dir / name, text)
        except OSError as e:
            raise SweepConfigError(
                f"hydra.sweep.dir={self.sweep_dir}: cannot write {name} there ({e.strerror or e})"
            ) from None

    def _log_plan(self, study: optuna.Study, n_trials: int) -> None:
        log.info(
            "Study %s in %s (%d earlier trials), sampler %s, pruner %s, direction %s",
            self.study_name,
            self.masked_storage,
            len(study.get_trials(deepcopy=False)),
            self.sampler_cfg.get("_target_"),
            self.pruner_cfg.get("_target_"),
            ", ".join(d.optuna for d in self.directions),
        )
        log.info(
            "Search space: %s",
            ", ".join(f"{k}: {space.describe(d)}" for k, d in self.space.items()) or "(none)",
        )
        log.info(
            "%d new trials, %d at a time (%s)",
            n_trials,
            self.width,
            "each starts when one ends" if self.pipelined else "in batches",
        )
