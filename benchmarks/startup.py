"""Start-up of a training process: from `python train.py ...` to its first training step.

Each measured process is a real `train.py` run of one epoch on a cached dataset (the MNIST
sample by default; `--data mnist --root DIR` for the full set), in two ways:

  plain  a run of its own (`trial: null`);
  trial  the job side of a sweep trial: `trial={...}` names a real trial of a real Optuna
         study in SQLite, with the median pruner and an owner stored on it as the rnnlab
         sweeper does, so the job opens the storage, starts its heartbeat and reports.

The first training step is seen from outside through torch's public optimizer hook
(`torch.optim.optimizer.register_optimizer_step_pre_hook`), set by a small wrapper that then
runs train.py unchanged; it also says which heavy libraries were imported by then. The end
is the process's exit (after summary.json, checkpoints and curves.png). Wall-clock and CPU
seconds (user + system, all threads) are both given: on a shared machine the CPU seconds
to the first step vary far less than the wall clock. One warm-up round first (page cache,
the data cache), then the median of --runs rounds; with --against, the same runs of another
checkout, alternated with this one's so that load hits both alike; and in each round a
process that only imports torch: the floor.

Then a breakdown of the imports (`python -X importtime`, one run of each kind), summed by
top-level package, before the first step and after it.

    python benchmarks/startup.py [--runs 5] [--data mnist --root ../shared/data/mnist]
    python benchmarks/startup.py --against /tmp/old-checkout     # before/after, side by side
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch._dynamo",
    "optuna",
    "sqlalchemy",
    "alembic",
    "matplotlib",
    "torchvision",
    "mlxtend",
    "rich",
    "scipy",
    "sklearn",
    "pandas",
)
MARK = "RNNLAB_STARTUP_FIRST_STEP"

# The measured process: the checkout's src/ first on sys.path (so --against measures that
# checkout even with this one installed), a hook on the first optimizer step, then train.py.
CHILD = """
import json, os, runpy, sys, time
src, repo = sys.argv[1], sys.argv[2]
sys.path[:] = [src] + [p for p in sys.path if os.path.abspath(p or ".") != {this_src!r}]
from torch.optim.optimizer import register_optimizer_step_pre_hook

def first_step(*_):
    stamp, cpu = time.time(), time.process_time()
    handle.remove()
    heavy = [m for m in {heavy!r} if m in sys.modules]
    sys.stderr.flush()
    print({mark!r}, file=sys.stderr, flush=True)
    print({mark!r}, json.dumps({{"t": stamp, "cpu": cpu, "heavy": heavy}}), flush=True)

handle = register_optimizer_step_pre_hook(first_step)
os.chdir(repo)
sys.argv = ["train.py", *sys.argv[3:]]
runpy.run_path("train.py", run_name="__main__")
"""


def child_code() -> str:
    return CHILD.format(this_src=str(REPO / "src"), heavy=HEAVY, mark=MARK)


class Trials:
    """A real study in SQLite whose trials look to the job as the sweeper leaves them."""

    def __init__(self, tmp: Path) -> None:
        import optuna

        from rnnlab import sweeps

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = f"sqlite:///{tmp}/startup.db"
        self.study = optuna.create_study(
            study_name="startup", storage=self.url, direction="maximize"
        )
        self.owner = sweeps.process_identity()  # this process: alive while the jobs run

    def override(self) -> str:
        trial = self.study.ask()
        trial.set_user_attr("owner", self.owner)
        trial.set_user_attr("pruner", {"_target_": "optuna.pruners.MedianPruner"})
        return (
            f"trial={{study_name:startup,number:{trial.number},"
            f"trial_id:{trial._trial_id},storage:'{self.url}'}}"
        )


def run_once(
    checkout: Path, overrides: list[str], importtime: bool = False
) -> tuple[float, float, list[str], str, float, float]:
    """(seconds to the first step, seconds to the end, heavy modules by then, stderr, CPU
    seconds to the first step, CPU seconds in all)."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    cmd += ["-c", child_code(), str(checkout / "src"), str(checkout), *overrides]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    cpu_before = _children_cpu()
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    end = time.time()
    cpu = _children_cpu() - cpu_before
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK + " ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(
            f"{checkout}: train.py failed or never stepped (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    first = json.loads(line.partition(" ")[2])
    return first["t"] - start, end - start, first["heavy"], proc.stderr, first["cpu"], cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_breakdown(stderr: str) -> tuple[dict[str, float], dict[str, float]]:
    """Self time of the imports (ms) by top-level package: before the first step, after it."""
    before: dict[str, float] = defaultdict(float)
    after: dict[str, float] = defaultdict(float)
    into = before
    for line in stderr.splitlines():
        if line == MARK:
            into = after
            continue
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _, name = (part.strip() for part in line[len("import time:") :].split("|"))
        if not self_us.isdigit():
            continue  # the header
        into[name.split(".")[0]] += int(self_us) / 1000
    return before, after


def print_breakdown(kind: str, stderr: str, top: int) -> None:
    before, after = import_breakdown(stderr)
    names = sorted(set(before) | set(after), key=lambda n: -(before.get(n, 0) + after.get(n, 0)))
    print(f"\nimports of one {kind} run (python -X importtime, self ms by top-level package)")
    print(f"  {'package':<22}{'to 1st step':>12}{'after':>10}")
    for name in names[:top]:
        print(f"  {name:<22}{before.get(name, 0):>12.0f}{after.get(name, 0):>10.0f}")
    rest = names[top:]
    print(
        f"  {'(' + str(len(rest)) + ' others)':<22}"
        f"{sum(before.get(n, 0) for n in rest):>12.0f}{sum(after.get(n, 0) for n in rest):>10.0f}"
    )
    print(f"  {'total':<22}{sum(before.values()):>12.0f}{sum(after.values()):>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (after a warm-up)")
    parser.add_argument("--data", choices=("mnist_sample", "mnist"), default="mnist_sample")
    parser.add_argument("--root", help="data.root for --data mnist (the IDX files)")
    parser.add_argument("--kinds", default="plain,trial", help="plain, trial or both")
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--top", type=int, default=12, help="packages in the import table")
    parser.add_argument("--no-imports", action="store_true", help="skip the import breakdown")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if not set(kinds) <= {"plain", "trial"}:
        parser.error("--kinds: plain, trial or plain,trial")
    if args.data == "mnist" and not args.root:
        parser.error("--data mnist needs --root (a folder with the MNIST IDX files)")
    checkouts = {"this": REPO}
    if args.against:
        checkouts = {"against": args.against.resolve(), **checkouts}

    with tempfile.TemporaryDirectory(prefix="rnnlab-startup-") as tmp_name:
        tmp = Path(tmp_name)
        trials = Trials(tmp) if "trial" in kinds else None
        common = [
            f"data={args.data}",
            *([f"data.root={args.root}"] if args.root else []),
            "trainer.epochs=1",
            "trainer.progress=false",
            f"paths.output_root={tmp}/out",
            f"paths.data_dir={tmp}/data",  # the data cache: filled by the warm-up round
        ]

        def overrides(kind: str) -> list[str]:
            return common + ([trials.override()] if kind == "trial" else [])

        results: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        cpu_times: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        heavy: dict[tuple[str, str], list[str]] = {}
        for round_ in range(args.runs + 1):
            for kind in kinds:
                for label, checkout in checkouts.items():
                    first, end, loaded, _, cpu_first, cpu = run_once(checkout, overrides(kind))
                    heavy[label, kind] = loaded
                    if round_:  # round 0 is the warm-up
                        results[label, kind].append((first, end))
                        cpu_times[label, kind].append((cpu_first, cpu))
            cpu_before, start = _children_cpu(), time.time()
            subprocess.run([sys.executable, "-c", "import torch"], check=True)
            if round_:
                results["floor", "torch"].append((time.time() - start, 0.0))
                cpu_times["floor", "torch"].append((_children_cpu() - cpu_before, 0.0))
            print(f"round {round_ or 'warm-up'} done", file=sys.stderr)

        load = os.getloadavg()
        print(
            f"start-up of train.py, {args.data}, 1 epoch; median of {args.runs} runs "
            f"(load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} CPUs)"
        )
        print(
            f"  {'checkout':<9}{'kind':<7}{'wall: 1st step':>15}{'end':>8}"
            f"{'CPU: 1st step':>15}{'end':>8}   heavy modules at 1st step"
        )
        for (label, kind), values in results.items():
            if label == "floor":
                continue
            wall_first, wall_end = (statistics.median(v[i] for v in values) for i in (0, 1))
            cpu = cpu_times[label, kind]
            cpu_first, cpu_end = (statistics.median(v[i] for v in cpu) for i in (0, 1))
            print(
                f"  {label:<9}{kind:<7}{wall_first:>14.2f}s{wall_end:>7.2f}s"
                f"{cpu_first:>14.2f}s{cpu_end:>7.2f}s   {', '.join(heavy[label, kind]) or '-'}"
            )
            print(
                f"  {'':<16}runs (wall, 1st step/end): "
                f"{', '.join(f'{v[0]:.2f}/{v[1]:.2f}' for v in values)}"
            )
        floor, floor_cpu = results.pop(("floor", "torch")), cpu_times.pop(("floor", "torch"))
        print(
            "  floor: a process that only imports torch, same rounds: "
            f"wall {statistics.median(f for f, _ in floor):.2f}s, "
            f"CPU {statistics.median(f for f, _ in floor_cpu):.2f}s "
            f"(wall runs: {', '.join(f'{f:.2f}' for f, _ in floor)})"
        )

        if not args.no_imports:
            for kind in kinds:
                print_breakdown(kind, run_once(REPO, overrides(kind), importtime=True)[3], args.top)


if __name__ == "__main__":
    main()
