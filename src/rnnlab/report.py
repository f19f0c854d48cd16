"""Plots and the HTML page of `rnnlab compare --plot DIR / --html FILE`.

Kept apart from rnnlab.compare so that printing a table never imports matplotlib or optuna.
Every plot is made in memory (name -> PNG bytes): --plot writes them, --html embeds them.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rnnlab import runs
from rnnlab.compare import (
    OPTUNA_RESULTS_FILE,
    SEED_KEY,
    TRIALS_FILE,
    Run,
    Table,
    caption,
    display_rows,
    problem_lines,
    show_config,
)

MAX_LEGEND = 20  # more curves than this and a legend hides the plot


def make_plots(table: Table) -> dict[str, bytes]:
    """Every plot that applies to `table`, as {file name: PNG bytes}."""
    import matplotlib

    matplotlib.use("Agg")
    images: dict[str, bytes] = {}
    curves = plot_curves(table)
    if curves:
        images["val_acc_curves.png"] = curves
    for key in table.varying:
        if key == SEED_KEY:
            continue  # objective vs seed is the noise itself, not a hyperparameter
        image = plot_objective_vs(table, key)
        if image:
            images[f"objective_vs_{_safe(key)}.png"] = image
    sweeps = optuna_sweeps(table.selected)
    for i, (sweep_dir, members) in enumerate(sweeps.items()):
        suffix = "" if len(sweeps) == 1 else f"_{i + 1}"
        trials = read_trials(sweep_dir, members)
        history = plot_history(table, sweep_dir, trials)
        if history:
            images[f"optimization_history{suffix}.png"] = history
        importances = plot_importances(table, sweep_dir, trials)
        if importances:
            images[f"param_importances{suffix}.png"] = importances
    return images


def write_plots(images: dict[str, bytes], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in images.items():
        path = folder / name
        runs.atomic_write(path, data)
        written.append(path)
    return written


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def label(table: Table, row: dict[str, Any], run: Run | None = None) -> str:
    """Legend text: the row's values of the keys that tell rows apart."""
    parts = [f"{k}={show_config(k, row.get(k))}" for k in table.settings]
    return ", ".join(parts) if parts else (run.path.name if run else "")


def _objective_axis(table: Table) -> tuple[float, str]:
    if table.objective_is_acc:
        return 100.0, f"objective: best {table.metric} (%)"
    return 1.0, f"objective: best {table.metric or 'optimized metric'}"


def plot_curves(table: Table) -> bytes | None:
    """Validation accuracy vs epoch for the table's runs (seeds of a setting share a color)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    cmap = plt.get_cmap("tab10" if len(table.rows) <= 10 else "tab20")
    for i, (row, members) in enumerate(zip(table.rows, table.row_runs, strict=True)):
        color = cmap(i % cmap.N)
        for j, run in enumerate(members):
            try:
                metrics = runs.read_metrics(run.path)
            except (OSError, ValueError, KeyError):
                continue
            points = [
                (m["epoch"], 100 * m["val_acc"]) for m in metrics if "epoch" in m and "val_acc" in m
            ]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_objective_vs(table: Table, key: str) -> bytes | None:
    """The objective of every selected run against one differing hyperparameter."""
    import matplotlib.pyplot as plt

    scale, ylabel = _objective_axis(table)
    points = [(run.value(key), run.summary.get("objective"), run.status) for run in table.selected]
    points = [(x, y, s) for x, y, s in points if _number(y) is not None]
    if len(points) < 2:
        return None
    xs_num = [_number(x) for x, _, _ in points]
    numeric = all(x is not None for x in xs_num)
    fig, ax = plt.subplots(figsize=(6, 4))
    if numeric:
        xs = [float(x) for x in xs_num if x is not None]
        positions = xs
        if min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
    else:
        categories = sorted({show_config(key, x) for x, _, _ in points})
        index = {c: i for i, c in enumerate(categories)}
        positions = [float(index[show_config(key, x)]) for x, _, _ in points]
        ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 4 else 0)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ok = [
        (p, float(y) * scale)
        for p, (_, y, s) in zip(positions, points, strict=True)
        if s == "completed"
    ]
    bad = [
        (p, float(y) * scale)
        for p, (_, y, s) in zip(positions, points, strict=True)
        if s != "completed"
    ]
    if ok:
        ax.scatter(*zip(*ok, strict=True), label="completed", alpha=0.8)
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


def optuna_sweeps(selected: Sequence[Run]) -> dict[Path, list[Run]]:
    """Sweep folders written by the Optuna sweeper (trials.csv or optimization_results.yaml)."""
    sweeps: dict[Path, list[Run]] = {}
    checked: dict[Path, bool] = {}
    for run in selected:
        parent = run.path.parent
        if parent not in checked:
            checked[parent] = any(
                (parent / f).is_file() for f in (TRIALS_FILE, OPTUNA_RESULTS_FILE)
            )
        if checked[parent]:
            sweeps.setdefault(parent, []).append(run)
    return sweeps


def read_trials(sweep_dir: Path, members: Sequence[Run]) -> list[dict[str, Any]]:
    """The sweep's trials: number, state, objective, params. From trials.csv when readable
    (it also knows trials that left no run folder), else from the run folders in job order."""
    try:
        with open(sweep_dir / TRIALS_FILE, newline="", encoding="utf-8") as f:
            table = list(csv.DictReader(f))
        trials = []
        for row in table:
            number = _number(row.get("number"))
            if number is None:
                continue
            params = {
                k[len("params_") :]: _param(v)
                for k, v in row.items()
                if k and k.startswith("params_") and v not in (None, "")
            }
            trials.append(
                {
                    "number": int(number),
                    "state": (row.get("state") or "").upper(),
                    "objective": _number(row.get("objective")),
                    "params": params,
                }
            )
        if trials:
            return sorted(trials, key=lambda t: t["number"])
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    state = {"completed": "COMPLETE", "pruned": "PRUNED", "diverged": "COMPLETE", "failed": "FAIL"}

    def job(run: Run) -> float:
        n = _number(run.path.name)
        return n if n is not None else math.inf

    ordered = sorted(members, key=job)
    varying = [k for k in _varying_within(ordered) if k != SEED_KEY]
    return [
        {
            "number": i,
            "state": state.get(r.status, r.status.upper()),
            "objective": _number(r.summary.get("objective")),
            "params": {k: r.value(k) for k in varying},
        }
        for i, r in enumerate(ordered)
    ]


def _varying_within(members: Sequence[Run]) -> list[str]:
    from rnnlab.compare import differing_keys

    return differing_keys(members)


def _param(text: str) -> Any:
    number = _number(text)
    if number is None:
        return text
    return (
        int(number)
        if number.is_integer() and "." not in text and "e" not in text.lower()
        else number
    )


def plot_history(table: Table, sweep_dir: Path, trials: list[dict[str, Any]]) -> bytes | None:
    """Objective per trial, and the best so far (as optuna's plot_optimization_history)."""
    import matplotlib.pyplot as plt

    scale, ylabel = _objective_axis(table)
    done = [t for t in trials if t["objective"] is not None]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    better = max if table.mode == "max" else min
    complete = [t for t in done if t["state"] == "COMPLETE"]
    other = [t for t in done if t["state"] != "COMPLETE"]
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


def param_importances(trials: list[dict[str, Any]], mode: str) -> dict[str, float]:
    """Importance of each parameter for the objective over the complete trials.

    optuna's fANOVA evaluator when it can run (optuna and scikit-learn present, enough
    trials); otherwise the correlation ratio eta^2 of each parameter (the share of the
    objective's variance explained by the parameter's values, numbers binned in quartiles).
    """
    complete = [t for t in trials if t["state"] == "COMPLETE" and t["objective"] is not None]
    names = sorted({k for t in complete for k in t["params"]})
    names = [n for n in names if len({repr(t["params"].get(n)) for t in complete}) > 1]
    if len(complete) < 3 or not names:
        return {}
    try:
        return _optuna_importances(complete, names, mode)
    except Exception:  # noqa: BLE001 - any failure of the optional evaluator: use eta^2
        return _eta_squared(complete, names)


def _optuna_importances(
    complete: list[dict[str, Any]], names: list[str], mode: str
) -> dict[str, float]:
    import optuna
    from optuna import distributions as d

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # create_trial and add_trial are "experimental" in optuna 2.x, and say so on each call.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    dists: dict[str, Any] = {}
    for name in names:
        values = [t["params"].get(name) for t in complete]
        if all(_number(v) is not None and not isinstance(v, str) for v in values):
            lo, hi = min(values), max(values)
            if all(isinstance(v, int) for v in values):
                dists[name] = d.IntUniformDistribution(int(lo), int(hi))
            elif lo > 0 and hi / lo >= 100:
                dists[name] = d.LogUniformDistribution(float(lo), float(hi))
            else:
                dists[name] = d.UniformDistribution(float(lo), float(hi))
        else:
            dists[name] = d.CategoricalDistribution(sorted({str(v) for v in values}))
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in complete:
        params = {
            n: (
                str(t["params"].get(n))
                if isinstance(dists[n], d.CategoricalDistribution)
                else t["params"].get(n)
            )
            for n in names
        }
        if any(v is None for v in params.values()):
            continue
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=t["objective"])
        )
    return dict(optuna.importance.get_param_importances(study))


def _eta_squared(complete: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    ys = [float(t["objective"]) for t in complete]
    mean = sum(ys) / len(ys)
    total = sum((y - mean) ** 2 for y in ys)
    out: dict[str, float] = {}
    for name in names:
        values = [t["params"].get(name) for t in complete]
        numbers = [_number(v) for v in values]
        if all(n is not None for n in numbers) and len(set(numbers)) > 4:
            cuts = sorted(n for n in numbers if n is not None)
            edges = [cuts[len(cuts) * q // 4] for q in (1, 2, 3)]
            keys: list[Any] = [sum(n >= e for e in edges) for n in numbers if n is not None]
        else:
            keys = [repr(v) for v in values]
        groups: dict[Any, list[float]] = {}
        for k, y in zip(keys, ys, strict=True):
            groups.setdefault(k, []).append(y)
        between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
        out[name] = between / total if total > 0 else 0.0
    norm = sum(out.values())
    return {k: v / norm if norm else 0.0 for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


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


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.completed td.status { color: #1a7f37; } tr.diverged td.status,
tr.failed td.status { color: #c62828; } tr.pruned td.status { color: #b26a00; }
figure { display: inline-block; margin: 1em 1em 0 0; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #666; font-size: 13px; }
"""


def to_html(table: Table, images: dict[str, bytes], title: str = "rnnlab compare") -> str:
    """One self-contained page: the table, the incomplete/skipped folders, the plots."""
    from rnnlab.compare import AGGREGATED

    headers, body = display_rows(table)
    numeric = {*AGGREGATED, "n"}
    status_at = table.columns.index("status")
    e = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="note">{e(caption(table))}. Generated '
        f"{datetime.now().isoformat(timespec='seconds')}.</p>",
        "<table>",
        "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr></thead>",
        "<tbody>",
    ]
    for cells in body:
        tds = []
        for key, text in zip(table.columns, cells, strict=True):
            cls = "num" if key in numeric else ("status" if key == "status" else "")
            tds.append(f'<td class="{cls}">{e(text)}</td>' if cls else f"<td>{e(text)}</td>")
        out.append(f'<tr class="{e(cells[status_at])}">' + "".join(tds) + "</tr>")
    out += ["</tbody></table>"]
    problems = problem_lines(table, limit=100)
    if problems:
        out += ['<ul class="note">', *(f"<li>{e(p)}</li>" for p in problems), "</ul>"]
    if images:
        out.append("<h2>Plots</h2>")
    for name, data in images.items():
        b64 = base64.b64encode(data).decode("ascii")
        out.append(
            f'<figure><img alt="{e(name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{e(name)}</figcaption></figure>"
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
