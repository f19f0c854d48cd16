"""The search space: Hydra sweep overrides <-> Optuna distributions.

choice(...) -> CategoricalDistribution; range(a, b[, step]) -> IntDistribution or a stepped
FloatDistribution (b excluded, as in Python and Hydra; the stock plugin includes it);
interval(a, b) -> IntDistribution / FloatDistribution; tag(log, interval(...)) the same on a
log scale. Plain overrides are fixed values, passed to every trial as they are.
"""

from __future__ import annotations

import math
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
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ._errors import SweepConfigError

_ABSENT = object()


def distribution_from_override(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of a sweep override, or the value of a plain one."""
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
            return _range(override, value)
        if override.is_interval_sweep():
            assert isinstance(value, IntervalSweep)
            return _interval(value)
    except (ValueError, TypeError, AssertionError) as e:
        raise SweepConfigError(f"search space {_text(override)}: {e}") from None
    raise SweepConfigError(
        f"search space {_text(override)}: this sweep is not supported; use choice(...), "
        "range(...), interval(...) or tag(log, interval(...))"
    )


def _range(override: Override, value: RangeSweep) -> BaseDistribution:
    if value.step is None or value.step == 0:
        raise ValueError("range() needs a non-zero step")
    start, stop, step = value.start, value.stop, value.step
    # Count the values ourselves: Hydra's float range can reach the excluded end through
    # rounding (0.1 + 0.1 + 0.1 < 0.4 gives a fourth value, ~0.4).
    n = math.ceil((stop - start) / step - 1e-9)
    if n <= 0:
        raise ValueError(f"range({start}, {stop}) is empty (the end is excluded, as in Python)")
    if value.shuffle:
        return CategoricalDistribution(
            list(override.sweep_iterator(transformer=Transformer.encode))
        )
    low, high = start, start + (n - 1) * step
    if step < 0:
        low, high = high, low
    if all(isinstance(v, int) for v in (start, stop, step)):
        return IntDistribution(int(low), int(high), step=abs(int(step)))
    return FloatDistribution(float(f"{low:.12g}"), float(f"{high:.12g}"), step=float(abs(step)))


def _interval(value: IntervalSweep) -> BaseDistribution:
    low, high = value.start, value.end
    if low is None or high is None or low > high:
        raise ValueError(f"interval({low}, {high}): the start must not exceed the end")
    unknown = set(value.tags) - {"log"}
    if unknown:
        raise ValueError(
            f"unknown tag {sorted(unknown)}; only tag(log, interval(...)) is understood"
        )
    log = "log" in value.tags
    if log and low <= 0:
        raise ValueError(f"a log scale needs a start > 0, not {low}")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _text(override: Override) -> str:
    return override.input_line or override.get_key_element()


def parse_search_space(
    overrides: list[str], config: DictConfig, group_options: Any
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions, fixed values) of the sweep; unknown keys and bad ranges raise.

    Later overrides win: the command line over hydra.sweeper.params.
    """
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
        free = (
            name in choices
            or name.startswith("hydra")
            or override.is_delete()
            or override.is_add()
            or override.is_force_add()
        )
        if not free and not has_key(config, name):
            raise SweepConfigError(
                f"search space {key}: no such key in the config (a typo? new keys need a "
                "leading '+')"
            )
        if name in choices and isinstance(dist, CategoricalDistribution):
            options = group_options(name)
            bad = [c for c in dist.choices if str(c) not in options and c is not None]
            if bad:
                raise SweepConfigError(
                    f"search space {key}: no option {', '.join(map(str, bad))} in group "
                    f"{name}; choose from {', '.join(options)}"
                )
        space.pop(key, None)
        fixed.pop(key, None)
        if isinstance(dist, BaseDistribution):
            space[key] = dist
        else:
            fixed[key] = dist
    return space, fixed


def has_key(config: DictConfig, key: str) -> bool:
    """Whether the composed config has `key` (a null value counts)."""
    return OmegaConf.select(config, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The grid sampler's search space: every value of each choice() and range()."""
    return {name: _grid_values(name, dist) for name, dist in space.items()}


def _grid_values(name: str, dist: BaseDistribution) -> list[Any]:
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


def describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    assert isinstance(dist, IntDistribution | FloatDistribution)
    step = dist.step if dist.step not in (None, 1) else None
    return f"{'log ' if dist.log else ''}[{dist.low}, {dist.high}]" + (
        f" step {step}" if step else ""
    )


def check_compatible(study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
    """Optuna refuses to change a parameter's kind of distribution within a study: say so
    before any trial runs, not as a traceback halfway through."""
    earlier: dict[str, BaseDistribution] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            earlier.setdefault(name, dist)
    for name, dist in space.items():
        if name not in earlier:
            continue
        try:
            optuna.distributions.check_distribution_compatibility(earlier[name], dist)
        except ValueError as e:
            raise SweepConfigError(
                f"search space {name}: {describe(dist)} cannot replace "
                f"{describe(earlier[name])} of this study's earlier trials ({e}); keep it or "
                "start a new study with hydra.sweeper.study_name=<new name>"
            ) from None
