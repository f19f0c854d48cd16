"""The rnnlab_optuna sweep loop.

Per trial: ask the study, launch a Hydra job with the trial's parameters and a `trial={...}`
override (so the job can report per epoch and be pruned), then read the job's summary.json
and tell the study what happened. With a launcher that runs jobs in processes of their own,
a new trial starts whenever one ends; otherwise trials go in batches, as Hydra's do. Failed,
diverged, pruned and interrupted trials are recorded with their reason and the sweep goes
on; nothing non-finite ever reaches Optuna. At the end: counts by status, the best trial,
optimization_results.yaml and trials.csv in the sweep dir.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from rnnlab import runs, secrets, sweeps
from rnnlab.storage import STALE_AFTER_S, Heartbeat, open_storage, stale_trial_ids

from .samplers import PerTrialSampler

log = logging.getLogger(__name__)

STATUSES = ("completed", "diverged", "pruned", "failed", "interrupted")
_WORST = {"maximize": 0.0, "minimize": 1e9}
_DIRECTIONS = {"val/acc": "maximize", "val/loss": "minimize"}


class SweepConfigError(CompactHydraException):
    """A mistake in the sweep's config: printed as one line, before any trial runs."""

    def __init__(self, message: str) -> None:
        super().__init__(f"rnnlab: error: {secrets.mask_url(message)}")


# --------------------------------------------------------------------------- search space


def distribution_from_override(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of a sweep override, or the value of a plain one.

    Unlike the stock plugin, range(a, b) never samples b (it is Python's and Hydra's range).
    """
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    try:
        if override.is_choice_sweep():
            assert isinstance(value, ChoiceSweep)
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            if not choices:
                raise ValueError("choice() needs at least one option")
            return CategoricalDistribution(choices)
        if override.is_range_sweep():
            assert isinstance(value, RangeSweep)
            if value.step is None or value.step == 0:
                raise ValueError("range() needs a non-zero step")
            start, stop, step = value.start, value.stop, value.step
            # Count the values ourselves: Hydra's float range can reach the excluded end
            # through rounding (0.1 + 0.1 + 0.1 < 0.4 gives a fourth value, ~0.4).
            n = math.ceil((stop - start) / step - 1e-9)
            if n <= 0:
                raise ValueError(
                    f"range({start}, {stop}) is empty (the end is excluded, as in Python)"
                )
            if value.shuffle:
                return CategoricalDistribution(
                    list(override.sweep_iterator(transformer=Transformer.encode))
                )
            low, high = start, start + (n - 1) * step
            if step < 0:
                low, high = high, low
            if all(isinstance(v, int) for v in (start, stop, step)):
                return IntDistribution(int(low), int(high), step=abs(int(step)))
            return FloatDistribution(
                float(f"{low:.12g}"), float(f"{high:.12g}"), step=float(abs(step))
            )
        if override.is_interval_sweep():
            assert isinstance(value, IntervalSweep)
            low, high = value.start, value.end
            if low is None or high is None or low > high:
                raise ValueError(f"interval({low}, {high}): the start must not exceed the end")
            unknown = set(value.tags) - {"log"}
            if unknown:
                raise ValueError(
                    f"unknown tag {sorted(unknown)}; only tag(log, interval(...)) is understood"
                )
            ints = isinstance(low, int) and isinstance(high, int)
            if "log" in value.tags:
                if low <= 0:
                    raise ValueError(f"a log scale needs a start > 0, not {low}")
                return (
                    IntDistribution(low, high, log=True)
                    if ints
                    else FloatDistribution(float(low), float(high), log=True)
                )
            return (
                IntDistribution(low, high) if ints else FloatDistribution(float(low), float(high))
            )
    except (ValueError, TypeError, AssertionError) as e:
        raise SweepConfigError(f"search space {_text(override)}: {e}") from None
    raise SweepConfigError(
        f"search space {_text(override)}: this sweep is not "
        "supported; use choice(...), range(...), interval(...) or "
        "tag(log, interval(...))"
    )


def _text(override: Override) -> str:
    return override.input_line or override.get_key_element()


def parse_search_space(
    overrides: list[str],
    config: DictConfig,
    group_options: Any,
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions, fixed values) of the sweep; unknown keys and bad ranges raise."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise SweepConfigError(f"search space: {str(e).splitlines()[0]}") from None
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    choices = config.hydra.runtime.choices
    for override in parsed:
        key = override.get_key_element()
        name = override.key_or_group
        dist = distribution_from_override(override)
        if (
            name in choices
            or override.is_delete()
            or name.startswith("hydra")
            or override.is_add()
            or override.is_force_add()
        ):
            pass
        elif OmegaConf.select(config, name, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise SweepConfigError(
                f"search space {key}: no such key in the config (a typo? "
                "new keys need a leading '+')"
            )
        if name in choices and isinstance(dist, CategoricalDistribution):
            options = group_options(name)
            bad = [c for c in dist.choices if str(c) not in options and c is not None]
            if bad:
                raise SweepConfigError(
                    f"search space {key}: no option {', '.join(map(str, bad))}"
                    f" in group {name}; choose from {', '.join(options)}"
                )
        # Later overrides win: the command line over hydra.sweeper.params.
        space.pop(key, None)
        fixed.pop(key, None)
        if isinstance(dist, BaseDistribution):
            space[key] = dist
        else:
            fixed[key] = dist
    return space, fixed


_ABSENT = object()


def _grid_choices(name: str, dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = round((dist.high - dist.low) / dist.step)
        return [float(f"{dist.low + i * dist.step:.12g}") for i in range(n + 1)]
    raise SweepConfigError(
        f"search space {name}: the grid sampler needs choice() or range(), not an interval"
    )


# --------------------------------------------------------------------------- the sweeper


class RnnlabOptunaSweeperImpl:
    def __init__(
        self,
        *,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: str | None,
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
        self.custom_search_space = custom_search_space
        self.job_idx = 0

    # ---------------------------------------------------------------- setup: storage, masking

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
        self.study_name = self.study_name or _search_name(config) or "rnnlab"
        self.storage_url = self.storage or _default_storage(config, self.study_name)
        self.masked_storage = secrets.mask_url(self.storage_url)
        # Before the launcher exists: it keeps `config`, and every job's hydra.yaml is
        # recomposed from hydra.overrides.hydra, so both must hold the masked URL only.
        os.environ[secrets.STORAGE_ENV] = self.storage_url
        with read_write(config), open_dict(config):
            config.hydra.sweeper.storage = self.masked_storage
            config.hydra.sweeper.study_name = self.study_name
            kept = [
                o
                for o in config.hydra.overrides.hydra
                if not o.lstrip("+~").startswith(
                    ("hydra.sweeper.storage=", "hydra.sweeper.study_name=")
                )
            ]
            config.hydra.overrides.hydra = [
                *kept,
                f"hydra.sweeper.storage={_quote(self.masked_storage)}",
                f"hydra.sweeper.study_name={_quote(self.study_name)}",
            ]
        # Runs record their command line (summary.json): keep the password out of it.
        sys.argv[:] = [secrets.mask_url(a) for a in sys.argv]
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def _parallelism(self) -> int:
        launcher = self.config.hydra.launcher
        target = str(launcher.get("_target_", ""))
        if "Joblib" in target:
            n = launcher.get("n_jobs") or 1
            cpus = _cpu_count()
            return max(1, cpus + 1 + n if n < 0 else n)
        return 1

    # ---------------------------------------------------------------- the loop

    def sweep(self, arguments: list[str]) -> None:
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        loader = self.hydra_context.config_loader
        space, fixed = parse_search_space(
            [*params, *arguments], self.config, lambda group: loader.get_group_options(group)
        )
        direction = self._direction()
        parallel = self._parallelism()
        width = self.n_jobs or parallel  # trials running at once
        self._width = width
        if parallel > 1 and not any(
            k.lstrip("+~") == "trainer.num_threads" for k in [*space, *fixed]
        ):
            # Workers that each take every core slow each other down.
            fixed["trainer.num_threads"] = str(max(1, _cpu_count() // min(parallel, width)))

        is_grid = str(self.sampler_cfg.get("_target_", "")).endswith("GridSampler")
        grid = {k: _grid_choices(k, d) for k, d in space.items()} if is_grid else None

        storage = self._open_storage()
        # Beats for this sweep's unfinished trials: cooperating sweeps on other hosts can tell
        # they are not abandoned.
        self._heartbeat = Heartbeat(storage)
        study = self._create_study(storage, direction)
        _check_compatible(study, space)
        self._recover_stale_trials(storage, study)
        existing = len(study.get_trials(deepcopy=False))
        n_trials = self.n_trials
        if grid is not None:
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()) if grid else 1)

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        runs.atomic_write(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        log.info(
            "Study %s in %s (%d earlier trials), sampler %s, pruner %s, direction %s",
            self.study_name,
            self.masked_storage,
            existing,
            self.sampler_cfg.get("_target_"),
            self.pruner_cfg.get("_target_"),
            direction,
        )
        log.info(
            "Search space: %s",
            ", ".join(f"{k}: {_describe(d)}" for k, d in space.items()) or "(none)",
        )
        log.info(
            "%d new trials, %d at a time (%s)%s",
            n_trials,
            width,
            "each starts when one ends" if self._pipelined(width) else "in batches",
            f", torch threads per trial: {fixed['trainer.num_threads']}"
            if "trainer.num_threads" in fixed and parallel > 1
            else "",
        )

        counts: Counter[str] = Counter()
        pruner_spec = OmegaConf.to_container(self.pruner_cfg, resolve=True)

        def ask() -> optuna.trial.Trial:
            study = self._load_study(storage)
            study.sampler = PerTrialSampler(
                lambda number: self._sampler(number, grid),
                lambda frozen: storage.set_trial_user_attr(
                    frozen._trial_id, "owner", sweeps.process_identity()
                ),
            )
            trial = study.ask(fixed_distributions=space)
            if self.custom_search_space:
                instantiate({"_target_": self.custom_search_space, "_partial_": True})(
                    self.config, trial
                )
            self._heartbeat.add(trial._trial_id)
            trial.set_user_attr("pruner", pruner_spec)
            trial.set_user_attr("sweep_dir", str(self.sweep_dir))
            return trial

        run = self._run_pipelined if self._pipelined(width) else self._run_batches
        try:
            run(n_trials, width, ask, fixed, storage, direction, counts)
        finally:
            self._heartbeat.stop()
        self._report(storage, counts, direction)

    def _pipelined(self, width: int) -> bool:
        # Only launchers that run each job in its own process may be called from several
        # threads at once; the basic launcher runs jobs inside this process.
        target = str(self.config.hydra.launcher.get("_target_", ""))
        return self.pipeline and width > 1 and ("Joblib" in target or "submitit" in target)

    def _stop_launching(self, started: float, counts: Counter[str]) -> bool:
        if self.timeout is not None and time.monotonic() - started >= self.timeout:
            log.info("timeout of %ss reached: no new trials", self.timeout)
            return True
        done = sum(counts.values())
        failed = counts["failed"] + counts["interrupted"]
        if done and failed / done > self.max_failure_rate:
            log.error(
                "%d of %d trials failed, more than max_failure_rate=%s: stopping",
                failed,
                done,
                self.max_failure_rate,
            )
            return True
        return False

    def _run_batches(
        self,
        n_trials: int,
        width: int,
        ask: Callable[[], optuna.trial.Trial],
        fixed: dict[str, str],
        storage: Any,
        direction: str,
        counts: Counter[str],
    ) -> None:
        """Hydra's way: launch `width` trials, wait for all of them, tell, repeat."""
        started, launched = time.monotonic(), 0
        while launched < n_trials and not self._stop_launching(started, counts):
            trials = [ask() for _ in range(min(width, n_trials - launched))]
            overrides = [self._overrides(t, fixed) for t in trials]
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except Exception as e:
                # E.g. the OS killed a worker (out of memory): the batch failed, the sweep goes on.
                reason = _launcher_failed(e)
                for t in trials:
                    counts[self._finish_unreturned(storage, t._trial_id, t.number, reason)] += 1
                self.job_idx += len(trials)
                launched += len(trials)
                continue
            except BaseException as e:
                # Ctrl-C or SIGTERM: record the batch before leaving.
                reason = f"sweep stopped during the trial ({type(e).__name__})"
                for t in trials:
                    self._finish_unreturned(storage, t._trial_id, t.number, reason)
                raise
            self.job_idx += len(returns)
            launched += len(returns)
            tell_study = self._load_study(storage)
            for trial, ret in zip(trials, returns, strict=True):
                counts[self._tell(tell_study, storage, trial, ret, direction)] += 1

    def _run_pipelined(
        self,
        n_trials: int,
        width: int,
        ask: Callable[[], optuna.trial.Trial],
        fixed: dict[str, str],
        storage: Any,
        direction: str,
        counts: Counter[str],
    ) -> None:
        """Keep `width` trials running: a new one starts as soon as any ends, so no worker
        idles until the slowest trial of a batch is done. Each trial is a one-job launch made
        from a thread of its own; asking and telling stay in this thread."""
        finished: queue.Queue[tuple[optuna.trial.Trial, JobReturn | BaseException]] = queue.Queue()
        running: dict[int, optuna.trial.Trial] = {}
        started, launched, stopping = time.monotonic(), 0, False
        try:
            while True:
                while not stopping and launched < n_trials and len(running) < width:
                    if self._stop_launching(started, counts):
                        stopping = True
                        break
                    trial = ask()
                    running[trial.number] = trial
                    threading.Thread(
                        target=self._launch_one,
                        args=(trial, self._overrides(trial, fixed), self.job_idx, finished),
                        name=f"trial-{trial.number}",
                        daemon=True,  # never keeps a stopped sweep alive
                    ).start()
                    self.job_idx += 1
                    launched += 1
                if not running:
                    break
                trial, result = finished.get()
                del running[trial.number]
                if isinstance(result, BaseException):
                    # E.g. the OS killed the worker (out of memory): this trial failed (joblib
                    # then stops the other workers too), the sweep goes on with fresh ones.
                    status = self._finish_unreturned(
                        storage, trial._trial_id, trial.number, _launcher_failed(result)
                    )
                else:
                    status = self._tell(
                        self._load_study(storage), storage, trial, result, direction
                    )
                counts[status] += 1
        except BaseException as e:
            reason = f"sweep stopped during the trial ({type(e).__name__})"
            for t in running.values():
                self._finish_unreturned(storage, t._trial_id, t.number, reason)
            raise

    def _launch_one(
        self,
        trial: optuna.trial.Trial,
        overrides: list[str],
        job_idx: int,
        finished: queue.Queue[tuple[optuna.trial.Trial, JobReturn | BaseException]],
    ) -> None:
        try:
            [ret] = self.launcher.launch([overrides], initial_job_idx=job_idx)
            finished.put((trial, ret))
        except BaseException as e:
            finished.put((trial, e))

    def _overrides(self, trial: optuna.trial.Trial, fixed: dict[str, str]) -> list[str]:
        values = {name: f"{name}={value}" for name, value in trial.params.items()}
        for name, value in fixed.items():
            values.setdefault(name, f"{name}={value}")
        spec = (
            f"trial={{study_name:{_quote(self.study_name)},number:{trial.number},"
            f"trial_id:{trial._trial_id},storage:{_quote(self.masked_storage)}}}"
        )
        return [*values.values(), spec]

    def _direction(self) -> str:
        metric = OmegaConf.select(self.config, "optimized_metric", default=None)
        expected = _DIRECTIONS.get(str(metric))
        direction = self.direction
        if direction is not None:
            direction = str(getattr(direction, "name", direction))
            if direction not in ("maximize", "minimize"):
                raise SweepConfigError(
                    f"hydra.sweeper.direction={direction}: expected maximize or minimize"
                )
            if expected is not None and direction != expected:
                raise SweepConfigError(
                    f"hydra.sweeper.direction={direction} but "
                    f"optimized_metric={metric} must be {expected}d; leave "
                    "direction unset to follow the metric"
                )
        return direction or expected or "maximize"

    def _sampler(self, number: int, grid: dict[str, list[Any]] | None) -> Any:
        cfg = self.sampler_cfg
        if grid is not None:
            return (
                instantiate(cfg, search_space=grid)
                if cfg.get("_partial_") is not True
                else instantiate(cfg)(grid)
            )
        kwargs: dict[str, Any] = {}
        if "constant_liar" in cfg and cfg.constant_liar is None:
            kwargs["constant_liar"] = self._width > 1
        seed = cfg.get("seed")
        if seed is not None and not str(cfg.get("_target_")).endswith("QMCSampler"):
            # One seed per trial number: a resumed study does not replay the sampler's
            # first draws, and cooperating sweeps do not draw the same parameters.
            kwargs["seed"] = (int(seed) * 1_000_003 + number) % 2**32
        with warnings_silenced():
            return instantiate(cfg, **kwargs)

    # ---------------------------------------------------------------- storage and study

    def _open_storage(self) -> Any:
        for attempt in range(6):
            try:
                return open_storage(self.storage_url)
            except Exception as e:
                # Sweeps started together race to create the tables; the loser retries.
                racing = any(
                    m in str(e)
                    for m in (
                        "UNIQUE constraint",
                        "already exists",
                        "database is locked",
                        "duplicate key",
                    )
                )
                if not racing or attempt == 5:
                    raise SweepConfigError(
                        f"hydra.sweeper.storage={self.masked_storage}: cannot open the "
                        f"study's storage: {str(e).splitlines()[0]}"
                    ) from None
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")

    def _load_study(self, storage: Any) -> optuna.Study:
        # A fresh Study per use: optuna's storage cache would hide what the jobs wrote to the
        # trials it created (intermediate values, run dir), so ask and tell use separate ones.
        return optuna.load_study(
            study_name=self.study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )

    def _create_study(self, storage: Any, direction: str) -> optuna.Study:
        try:
            study = optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            study = None
        if study is not None:
            n = len(study.get_trials(deepcopy=False))
            if study.direction.name.lower() != direction:
                raise SweepConfigError(
                    f"study {self.study_name} in {self.masked_storage} was created to "
                    f"{study.direction.name.lower()}, this sweep would {direction}; use another "
                    "hydra.sweeper.study_name"
                )
            if n and not self.resume:
                raise SweepConfigError(
                    f"study {self.study_name} in {self.masked_storage} already has {n} trials; "
                    "add hydra.sweeper.resume=true to continue it, or set "
                    "hydra.sweeper.study_name=<new name> to start a new study"
                )
            return study
        for attempt in range(5):
            try:
                return optuna.create_study(
                    study_name=self.study_name,
                    storage=storage,
                    direction=direction,
                    load_if_exists=True,
                )
            except Exception:  # another sweep created the tables or the study just now
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")

    def _recover_stale_trials(self, storage: Any, study: optuna.Study) -> None:
        """Settle trials left RUNNING by a sweep process that died (e.g. SIGKILL)."""
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        stale = stale_trial_ids(storage, study._study_id)
        for t in running:
            reason = _abandoned(t, t._trial_id in stale)
            if reason is None:
                continue
            log.warning("trial %d was left running: %s", t.number, reason)
            self._finish_unreturned(storage, t._trial_id, t.number, reason)

    def _finish_unreturned(self, storage: Any, trial_id: int, number: int, reason: str) -> str:
        """Record a trial whose job never returned: from its summary.json if the run got as
        far as writing one, else as interrupted (and say so in the run dir)."""
        try:
            frozen = storage.get_trial(trial_id)
            if frozen.state.is_finished():
                return _status_of(frozen)
            run_dir = frozen.user_attrs.get("run_dir")
            summary = _read_summary(run_dir)
            if summary is None or summary.get("status") not in STATUSES:
                summary = _mark_interrupted(run_dir, reason)
            study = self._load_study(storage)
            return self._record(
                study,
                storage,
                trial_id,
                number,
                summary,
                run_dir,
                summary.get("objective"),
                _direction_of(study),
            )
        except Exception as e:
            log.error(
                "could not record trial %d: %s",
                number,
                secrets.mask_url(f"{type(e).__name__}: {e}"),
            )
            return "failed"

    # ---------------------------------------------------------------- results

    def _tell(
        self,
        study: optuna.Study,
        storage: Any,
        trial: optuna.trial.Trial,
        ret: JobReturn,
        direction: str,
    ) -> str:
        run_dir = None
        if ret.hydra_cfg is not None:
            run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None)
        run_dir = run_dir or storage.get_trial(trial._trial_id).user_attrs.get("run_dir")
        summary = _read_summary(run_dir) or {}
        value: Any = None
        if ret.status == JobStatus.COMPLETED:
            value = ret._return_value
            summary.setdefault("status", "completed")
        else:
            error = ret._return_value
            summary.setdefault("status", "failed")
            if summary["status"] not in ("failed", "interrupted") or not summary.get("reason"):
                summary["status"] = "failed"
                summary["reason"] = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        try:
            return self._record(
                study, storage, trial._trial_id, trial.number, summary, run_dir, value, direction
            )
        except Exception as e:
            log.error(
                "could not record trial %d in the study: %s",
                trial.number,
                secrets.mask_url(f"{type(e).__name__}: {e}"),
            )
            return "failed"

    def _record(
        self,
        study: optuna.Study,
        storage: Any,
        trial_id: int,
        number: int,
        summary: dict[str, Any],
        run_dir: str | None,
        value: Any,
        direction: str,
    ) -> str:
        self._heartbeat.discard(trial_id)
        status = summary.get("status") if summary.get("status") in STATUSES else "failed"
        reason = summary.get("reason")
        reason = secrets.mask_url(str(reason)) if reason else None
        objective = _finite(value)
        if objective is None:
            objective = _finite(summary.get("objective"))
        if status in ("completed", "diverged") and objective is None:
            # Never hand Optuna (or the stock sweeper's code path) a NaN.
            status, reason = "failed", f"the run returned a non-finite objective ({value!r})"
        if status == "diverged":
            objective = _WORST[direction]
        attrs = {
            "status": status,
            "reason": reason,
            "run_dir": run_dir,
            "epochs": summary.get("epochs_completed"),
            "duration_s": summary.get("wall_time_s"),
            "objective": objective if status in ("completed", "diverged", "pruned") else None,
        }
        for key, val in attrs.items():
            storage.set_trial_user_attr(trial_id, key, val)
        if status in ("completed", "diverged"):
            # A diverged trial counts with the worst value: the sampler learns to avoid it.
            state, values = TrialState.COMPLETE, objective
        elif status == "pruned":
            state, values = TrialState.PRUNED, None
        else:
            state, values = TrialState.FAIL, None
        try:
            study.tell(number, values, state=state)
        except RuntimeError as e:  # the grid sampler stops the study when the grid is done
            if "Study.stop" not in str(e):
                raise
        log.info(
            "trial %d %s%s%s",
            number,
            status,
            f": {reason}" if reason and status != "completed" else "",
            f" (objective {objective:.6g})" if objective is not None else "",
        )
        return status

    def _report(self, storage: Any, counts: Counter[str], direction: str) -> None:
        study = self._load_study(storage)
        trials = study.get_trials(deepcopy=False)
        totals = Counter(_status_of(t) for t in trials)
        this_run = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) or "no trials"
        log.info(
            "This sweep: %s. Study %s now has %d trials: %s.",
            this_run,
            self.study_name,
            len(trials),
            ", ".join(f"{totals[s]} {s}" for s in (*STATUSES, "running") if totals[s]),
        )
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": self.study_name,
            "storage": self.masked_storage,
            "direction": direction,
            "n_trials": len(trials),
            "trials_by_status": {s: totals[s] for s in totals},
        }
        completed = [
            t for t in trials if t.state == TrialState.COMPLETE and _status_of(t) == "completed"
        ]
        if completed:
            best = (max if direction == "maximize" else min)(completed, key=lambda t: t.value)
            results.update(
                best_params=dict(best.params),
                best_value=best.value,
                best_trial=best.number,
                best_run_dir=best.user_attrs.get("run_dir"),
            )
            log.info(
                "Best trial %d: %s = %s, params %s, run dir %s",
                best.number,
                OmegaConf.select(self.config, "optimized_metric", default="objective"),
                best.value,
                dict(best.params),
                best.user_attrs.get("run_dir"),
            )
        else:
            results.update(best_params=None, best_value=None, best_trial=None, best_run_dir=None)
            log.warning("No trial of study %s has completed yet", self.study_name)
        runs.atomic_write(
            self.sweep_dir / "optimization_results.yaml",
            OmegaConf.to_yaml(OmegaConf.create(results)),
        )
        runs.atomic_write(self.sweep_dir / "trials.csv", trials_csv(trials))
        log.info(
            "Wrote %s and %s",
            self.sweep_dir / "optimization_results.yaml",
            self.sweep_dir / "trials.csv",
        )


def trials_csv(trials: list[optuna.trial.FrozenTrial]) -> str:
    """One row per trial of the study: number, state, status, params_*, objective, ..."""
    names = sorted({name for t in trials for name in t.params})
    columns = [
        "number",
        "state",
        "status",
        *(f"params_{n}" for n in names),
        "objective",
        "epochs",
        "duration_s",
        "run_dir",
        "reason",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        duration = a.get("duration_s")
        if duration is None and t.datetime_start and t.datetime_complete:
            duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        objective = a.get("objective", t.value)
        writer.writerow(
            [
                t.number,
                t.state.name,
                _status_of(t),
                *(t.params.get(n, "") for n in names),
                "" if objective is None else objective,
                "" if a.get("epochs") is None else a["epochs"],
                "" if duration is None else duration,
                a.get("run_dir") or "",
                a.get("reason") or "",
            ]
        )
    return buf.getvalue()


# --------------------------------------------------------------------------- helpers


def _check_compatible(study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
    """Optuna refuses to change a parameter's kind of distribution within a study: say so
    before any trial runs, not as a traceback halfway through."""
    earlier: dict[str, BaseDistribution] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            earlier.setdefault(name, dist)
    for name, dist in space.items():
        if name in earlier:
            try:
                optuna.distributions.check_distribution_compatibility(earlier[name], dist)
            except ValueError as e:
                raise SweepConfigError(
                    f"search space {name}: {_describe(dist)} cannot replace "
                    f"{_describe(earlier[name])} of this study's earlier trials ({e}); keep "
                    "it or start a new study with hydra.sweeper.study_name=<new name>"
                ) from None


def _launcher_failed(error: BaseException) -> str:
    return f"the launcher failed: {type(error).__name__}: {error}".splitlines()[0][:500]


def _abandoned(t: optuna.trial.FrozenTrial, stale: bool) -> str | None:
    """Why trial `t`, found RUNNING, has no live process behind it; None if it may still run.

    On this host the sweep process (owner) and the job are checked directly; a process on
    another host (a cooperating sweep, a Slurm job) only through the trial's heartbeat.
    """
    owner, job = t.user_attrs.get("owner") or {}, t.user_attrs.get("job")
    owner_alive, job_alive = sweeps.process_alive(owner), sweeps.process_alive(job)
    if owner_alive or job_alive:
        return None  # a live sweep (maybe a cooperating one), or its worker still finishing
    if owner_alive is None or (job is not None and job_alive is None):
        if not stale:
            return None
        return (
            f"no heartbeat for over {STALE_AFTER_S} s from sweep process "
            f"{owner.get('pid')} on {owner.get('host')} or its job"
        )
    return f"sweep process {owner.get('pid')} died during the trial"


def _status_of(t: optuna.trial.FrozenTrial) -> str:
    status = t.user_attrs.get("status")
    if status in STATUSES:
        return status
    return {
        TrialState.COMPLETE: "completed",
        TrialState.PRUNED: "pruned",
        TrialState.FAIL: "failed",
        TrialState.RUNNING: "running",
    }.get(t.state, "waiting")


def _direction_of(study: optuna.Study) -> str:
    return study.direction.name.lower()


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_summary(run_dir: str | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    try:
        return runs.read_summary(Path(run_dir))
    except (OSError, ValueError):
        return None


def _mark_interrupted(run_dir: str | None, reason: str) -> dict[str, Any]:
    """summary.json of a run killed before it could write one: status interrupted."""
    summary: dict[str, Any] = {
        "schema_version": runs.SCHEMA_VERSION,
        "status": "interrupted",
        "reason": reason,
        "objective": None,
        "epochs_completed": 0,
        "wall_time_s": None,
    }
    if not run_dir or not Path(run_dir).is_dir():
        return summary
    old = _read_summary(run_dir)
    if old is not None:
        old.update(status="interrupted", reason=reason)
        summary = old
    else:
        with contextlib.suppress(OSError, ValueError):
            summary["epochs_completed"] = len(runs.read_metrics(Path(run_dir)))
    try:
        runs.write_summary(Path(run_dir), summary)
    except OSError as e:
        log.error("could not mark %s interrupted: %s", run_dir, e)
    return summary


def _search_name(config: DictConfig) -> str | None:
    choice = OmegaConf.select(config, "hydra.runtime.choices.hparams_search", default=None)
    return str(choice).replace("/", "-") if choice else None


def _default_storage(config: DictConfig, study_name: str) -> str:
    root = OmegaConf.select(config, "paths.output_root", default=None)
    root_path = Path(str(root)) if root else Path.cwd() / "outputs"
    return f"sqlite:///{root_path.resolve() / 'optuna' / study_name}.db"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    log_scale = bool(getattr(dist, "log", False))
    step = getattr(dist, "step", None)
    return (
        f"{'log ' if log_scale else ''}[{dist.low}, {dist.high}]"  # type: ignore[attr-defined]
        + (f" step {step}" if step not in (None, 1) else "")
    )


class warnings_silenced:
    """Optuna warns that samplers are experimental on every construction; once is enough."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
