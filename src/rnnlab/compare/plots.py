"""The PNG plots of `rnnlab compare --plot DIR / --html FILE`, made in memory.

The only module of the package that imports matplotlib (when a plot is asked for). Every
plot is {file name: PNG bytes}: --plot writes them, --html embeds them. A plot that cannot
be drawn from what the folders hold is left out with a one-line note, never a crash.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlab import runs
from rnnlab.compare.fields import SEED_KEY, finite_number
from rnnlab.compare.files import Unreadable, one_line, read_text
from rnnlab.compare.render import show_config
from rnnlab.compare.rundirs import Run
from rnnlab.compare.select import Table
from rnnlab.compare.trials import COMPLETE, optuna_sweeps, param_importances, read_trials
from rnnlab.runs import Direction, Status

MAX_LEGEND = 20  # more curves than this and a legend hides the plot


def make_plots(table: Table) -> tuple[dict[str, bytes], list[str]]:
    """Every plot that applies to `table` as {file name: PNG bytes}, and notes on what was
    left out."""
    import matplotlib

    matplotlib.use("Agg")
    images: dict[str, bytes] = {}
    notes: list[str] = []

    def add(name: str, draw: Callable[[], bytes | None]) -> None:
        try:
            image = draw()
        except Exception as e:  # noqa: BLE001 - odd values in a run folder: skip that plot
            notes.append(f"{name} not drawn: {one_line(e)}")
            return
        if image:
            images[name] = image

    add("val_acc_curves.png", lambda: plot_curves(table))
    for key in table.varying:
        if key != SEED_KEY:  # objective vs seed is the noise itself, not a hyperparameter
            add(f"objective_vs_{_safe(key)}.png", lambda key=key: plot_objective_vs(table, key))
    sweeps = optuna_sweeps(table.selected)
    for i, (sweep_dir, members) in enumerate(sweeps.items()):
        suffix = "" if len(sweeps) == 1 else f"_{i + 1}"
        trials = read_trials(sweep_dir, members, notes)
        add(
            f"optimization_history{suffix}.png",
            lambda d=sweep_dir, t=trials: plot_history(table, d, t),
        )
        add(
            f"param_importances{suffix}.png",
            lambda d=sweep_dir, t=trials: plot_importances(table, d, t),
        )
    return images, notes


def write_plots(images: dict[str, bytes], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in images.items():
        path = folder / name
        runs.atomic_write(path, data)
        written.append(path)
    return written


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)[:100]


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    try:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()
    finally:
        plt.close(fig)


def label(table: Table, row: dict[str, Any], run: Run | None = None) -> str:
    """Legend text: the row's values of the keys that tell rows apart."""
    parts = [f"{k}={show_config(k, row.get(k))}" for k in table.settings]
    return ", ".join(parts) if parts else (run.path.name if run else "")


def _objective_axis(table: Table) -> tuple[float, str]:
    if table.objective_is_acc:
        return 100.0, f"objective: best {table.metric} (%)"
    return 1.0, f"objective: best {table.metric or 'optimized metric'}"


def read_curve(run: Run) -> list[tuple[float, float]]:
    """(epoch, val_acc) of each row of the run's metrics.csv with both finite."""
    try:
        text = read_text(run.path / runs.METRICS_FILE)
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except (OSError, Unreadable, csv.Error):
        return []
    points = [(finite_number(r.get("epoch")), finite_number(r.get("val_acc"))) for r in rows]
    return [(x, y) for x, y in points if x is not None and y is not None]


def plot_curves(table: Table) -> bytes | None:
    """Validation accuracy vs epoch for the table's runs (seeds of a setting share a color)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    cmap = plt.get_cmap("tab10" if len(table.rows) <= 10 else "tab20")
    for i, (row, members) in enumerate(zip(table.rows, table.row_runs, strict=True)):
        color = cmap(i % cmap.N)
        for j, run in enumerate(members):
            points = read_curve(run)
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                [100 * y for y in ys],
                marker="o",
                markersize=3,
                color=color,
                alpha=0.85,
                label=label(table, row, run) if j == 0 else None,
            )
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy per epoch")
    ax.grid(alpha=0.3)
    if len(table.rows) <= MAX_LEGEND:
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


def plot_objective_vs(table: Table, key: str) -> bytes | None:
    """The objective of every selected run against one differing hyperparameter."""
    import matplotlib.pyplot as plt

    scale, ylabel = _objective_axis(table)
    points = [
        (run.value(key), finite_number(run.summary.get("objective")), run.status)
        for run in table.selected
    ]
    points = [(x, y, s) for x, y, s in points if y is not None]
    if len(points) < 2:
        return None
    xs_num = [finite_number(x) if not isinstance(x, str) else None for x, _, _ in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    if all(x is not None for x in xs_num):
        positions = [float(x) for x in xs_num if x is not None]
        if min(positions) > 0 and max(positions) / min(positions) >= 100:
            ax.set_xscale("log")
    else:
        categories = sorted({show_config(key, x) for x, _, _ in points})
        index = {c: i for i, c in enumerate(categories)}
        positions = [float(index[show_config(key, x)]) for x, _, _ in points]
        ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ok = [
        (p, y * scale)
        for p, (_, y, s) in zip(positions, points, strict=True)
        if s == Status.COMPLETED
    ]
    bad = [
        (p, y * scale)
        for p, (_, y, s) in zip(positions, points, strict=True)
        if s != Status.COMPLETED
    ]
    if ok:
        ax.scatter(*zip(*ok, strict=True), label=str(Status.COMPLETED), alpha=0.8)
    if bad:
        ax.scatter(
            *zip(*bad, strict=True),
            marker="x",
            color="tab:red",
            label="diverged / pruned / failed",
            alpha=0.8,
        )
        ax.legend(fontsize=7)
    ax.set(xlabel=key, ylabel=ylabel, title=f"objective vs {key}")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_history(table: Table, sweep_dir: Path, trials: list[dict[str, Any]]) -> bytes | None:
    """Objective per trial, and the best so far (as optuna's plot_optimization_history)."""
    import matplotlib.pyplot as plt

    scale, ylabel = _objective_axis(table)
    done = [t for t in trials if t["objective"] is not None]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    better = max if table.mode is Direction.MAX else min
    complete = [t for t in done if t["state"] == COMPLETE]
    other = [t for t in done if t["state"] != COMPLETE]
    if complete:
        ax.scatter(
            [t["number"] for t in complete],
            [scale * t["objective"] for t in complete],
            label="trial",
            alpha=0.8,
        )
        best: list[float] = []
        for t in complete:
            best.append(t["objective"] if not best else better(best[-1], t["objective"]))
        ax.step(
            [t["number"] for t in complete],
            [scale * b for b in best],
            where="post",
            color="tab:red",
            label="best so far",
        )
    if other:
        ax.scatter(
            [t["number"] for t in other],
            [scale * t["objective"] for t in other],
            marker="x",
            color="tab:gray",
            label="pruned / failed",
            alpha=0.8,
        )
    ax.set(xlabel="trial", ylabel=ylabel, title=f"optimization history: {sweep_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_importances(table: Table, sweep_dir: Path, trials: list[dict[str, Any]]) -> bytes | None:
    import matplotlib.pyplot as plt

    importances = param_importances(trials, table.mode)
    if not importances:
        return None
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, n in enumerate(names):
        ax.text(importances[n], y, f" {importances[n]:.2f}", va="center", fontsize=8)
    ax.set(xlabel="importance for the objective", title=f"parameter importances: {sweep_dir.name}")
    ax.set_xlim(0, max(importances.values()) * 1.2 or 1)
    return _png(fig)
