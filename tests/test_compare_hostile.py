"""`rnnlab compare` on a hostile outputs/ tree: it never hangs, crashes or writes.

Files that are not regular files of sane size are not read; YAML alias bombs, odd tags and
very deep documents are refused in one line; odd values (NaN, Infinity, huge numbers, a
list where text belongs, dates) show as "n/a" or a note. The commands run as their own
process with a timeout (and, where a file could be read without end, a memory cap), so a
regression fails the test instead of hanging or exhausting the machine.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rnnlab import compare, runs
from test_compare import V1, V2, make_run

TIMEOUT = 120  # seconds; the cases take well under 5 s


def _cap_memory() -> None:
    limit = 1536 * 1024 * 1024  # a reader of /dev/zero fails here instead of eating the host
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_compare(*argv: Any, cap_memory: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnlab.compare", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_cap_memory if cap_memory else None,
        env={**os.environ, "NO_COLOR": "1"},
    )


def lsnapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under root, by lstat (opening nothing, so FIFOs are safe)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            st = os.lstat(Path(dirpath) / name)
            out[str(Path(dirpath) / name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def line_with(text: str, *parts: str) -> str:
    """The one output line that holds every part (fails if none does)."""
    hits = [line for line in text.splitlines() if all(p in line for p in parts)]
    assert hits, f"no line with {parts} in:\n{text}"
    return hits[0]


def test_fifos_never_block(tmp_path: Path) -> None:
    """Named pipes where compare reads files: listed as such, the command ends
    (`rnnlab compare /` meets such things)."""
    make_run(tmp_path / "good", objective=0.9)
    fifo_summary = make_run(tmp_path / "fifo_summary", summary=False)
    os.mkfifo(fifo_summary / runs.SUMMARY_FILE)
    fifo_config = make_run(tmp_path / "fifo_config", schema=V1)
    (fifo_config / runs.HYDRA_DIR / "config.yaml").unlink()
    os.mkfifo(fifo_config / runs.HYDRA_DIR / "config.yaml")
    fifo_metrics = make_run(tmp_path / "fifo_metrics", summary=False, epochs=0)
    os.mkfifo(fifo_metrics / runs.METRICS_FILE)
    os.mkfifo(tmp_path / runs.TRIALS_FILE)
    before = lsnapshot(tmp_path)
    proc = run_compare(tmp_path, "--plot", tmp_path.parent / f"{tmp_path.name}-plots")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    line_with(out, "fifo_summary: summary.json is a named pipe; skipped")
    line_with(out, "fifo_config: .hydra/config.yaml unreadable: is a named pipe; skipped")
    line_with(out, "fifo_metrics: no summary.json")
    assert "Traceback" not in proc.stderr
    assert lsnapshot(tmp_path) == before


def test_devices_and_huge_files_are_not_read(tmp_path: Path) -> None:
    zero = make_run(tmp_path / "zero", summary=False)
    (zero / runs.SUMMARY_FILE).symlink_to("/dev/zero")
    crashed = make_run(tmp_path / "crashed", summary=False, epochs=0)
    (crashed / runs.METRICS_FILE).symlink_to("/dev/zero")
    huge = make_run(tmp_path / "huge", summary=False)
    with open(huge / runs.SUMMARY_FILE, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: no disk used
    v1 = make_run(tmp_path / "v1_huge", schema=V1)
    with open(v1 / runs.HYDRA_DIR / "config.yaml", "wb") as f:
        f.truncate(1 << 30)
    proc = run_compare(tmp_path, cap_memory=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    line_with(out, "zero: summary.json is a character device; skipped")
    line_with(out, "huge: summary.json is 1,073,741,824 bytes (more than")
    line_with(out, "v1_huge: .hydra/config.yaml unreadable: is 1,073,741,824 bytes")
    line_with(out, "crashed: no summary.json")


ALIAS_BOMB = "a: &a {x: 1, y: 2}\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} {{"
    + ", ".join(f"k{j}: *{chr(97 + i)}" for j in range(9))
    + "}\n"
    for i in range(9)
)
LIST_BOMB = "a: &a [lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(9)
)


def test_yaml_alias_bombs_refused_fast(tmp_path: Path) -> None:
    """9 levels of 9 aliases: 387 million nodes once expanded; refused before that."""
    for name, bomb in (("dicts", ALIAS_BOMB), ("lists", LIST_BOMB)):
        run = make_run(tmp_path / name, schema=V1)
        (run / runs.HYDRA_DIR / "config.yaml").write_text(bomb)
    make_run(tmp_path / "good", schema=V1)
    proc = run_compare(tmp_path, cap_memory=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("dicts", "lists"):
        assert "alias bomb" in line_with(proc.stdout, f"{name}: .hydra/config.yaml unreadable")


def test_odd_yaml_tags_and_dates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """v1 configs with dates, sets, bytes; a python tag is refused; --where/--sort on dates."""
    for i in range(3):
        run = make_run(tmp_path / str(i), schema=V1, seed=i, objective=0.9 + i / 100)
        with open(run / runs.HYDRA_DIR / "config.yaml", "a") as f:
            f.write(f"when: 2025-01-0{i + 1}\nstamp: 2025-01-01 10:00:0{i}\n")
            f.write(f"tags: !!set {{a: null, b{i}: null}}\nblob: !!binary aGVsbG8{i}\n")
    evil = make_run(tmp_path / "evil", schema=V1)
    with open(evil / runs.HYDRA_DIR / "config.yaml", "a") as f:
        f.write("boom: !!python/object/apply:os.system ['echo pwned']\n")
    code = compare.main([str(tmp_path), "--where", "when=2025-01-02", "--sort", "stamp"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len([line for line in out.splitlines() if "completed" in line]) == 1
    code = compare.main([str(tmp_path), "--sort", "when", "--reverse", "--columns", "tags,blob"])
    out, err = capsys.readouterr()
    assert code == 0, err
    line_with(out, "evil: .hydra/config.yaml unreadable: ConstructorError")
    assert "pwned" not in out
    rows = [line.split() for line in out.splitlines() if "completed" in line]
    assert [r[0] for r in rows] == ["2025-01-03", "2025-01-02", "2025-01-01"]


@pytest.mark.parametrize("schema", [V1, V2], ids=["v1", "v2"])
def test_nan_infinity_and_huge_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schema: int
) -> None:
    odd = {
        "objective": float("nan"),
        "best_val_acc": float("inf"),
        "wall_time_s": float("inf"),
        "train_samples_per_s": 10**400,  # valid JSON, too large for a float
        "epochs_completed": -float("inf"),
        "test_acc": "high",
    }
    for seed in (0, 1):
        run = make_run(tmp_path / f"odd{seed}", seed=seed, schema=schema)
        doc = json.loads((run / runs.SUMMARY_FILE).read_text())
        doc.update(odd)
        (run / runs.SUMMARY_FILE).write_text(json.dumps(doc))  # NaN, Infinity as Python writes
    make_run(tmp_path / "normal", seed=2, objective=0.8, schema=schema)
    exports = tmp_path.parent / f"{tmp_path.name}-out"
    for extra in ([], ["--group-by-seed"], ["--sort", "samples/s"], ["--where", "wall_time>1"]):
        code = compare.main(
            [
                str(tmp_path),
                *extra,
                "--json",
                str(exports / "t.json"),
                "--csv",
                str(exports / "t.csv"),
            ]
        )
        out, err = capsys.readouterr()
        assert code == 0, (extra, err)
        doc = json.loads((exports / "t.json").read_text(), parse_constant=pytest.fail)
        assert doc["rows"]
    code = compare.main([str(tmp_path), "--no-group-by-seed"])
    out, _ = capsys.readouterr()
    row = line_with(out, "odd0").split()
    assert row[row.index("completed") + 1 :][:6] == ["n/a"] * 6


@pytest.mark.parametrize("schema", [V1, V2], ids=["v1", "v2"])
def test_lists_where_text_belongs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schema: int
) -> None:
    odd = make_run(tmp_path / "odd", model="gru", schema=schema)
    doc = json.loads((odd / runs.SUMMARY_FILE).read_text())
    doc.update(optimized_metric=["val/acc"], objective_mode=["max"], reason=["x"] * 3)
    if schema == V2:
        doc["choices"]["model"] = ["gru"]
    (odd / runs.SUMMARY_FILE).write_text(json.dumps(doc))
    bad_status = make_run(tmp_path / "bad_status", schema=schema)
    doc = json.loads((bad_status / runs.SUMMARY_FILE).read_text())
    doc["status"] = ["completed"] * 100
    (bad_status / runs.SUMMARY_FILE).write_text(json.dumps(doc))
    v1 = make_run(tmp_path / "v1", schema=V1, model="lstm")
    hydra_yaml = (
        (v1 / runs.HYDRA_DIR / "hydra.yaml").read_text().replace("model: lstm", "model: [lstm]")
    )
    (v1 / runs.HYDRA_DIR / "hydra.yaml").write_text(hydra_yaml)
    make_run(tmp_path / "normal", schema=schema)
    for extra in ([], ["--group-by-seed"], ["--where", "model=rnn"], ["--sort", "model"]):
        code = compare.main([str(tmp_path), *extra])
        out, err = capsys.readouterr()
        assert code == 0, (extra, err)
    assert line_with(out, "bad_status: unknown status ['completed',").endswith("...")
    assert len(line_with(out, "bad_status")) < 200


def test_very_deep_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep_json = make_run(tmp_path / "deep_json", summary=False)
    (deep_json / runs.SUMMARY_FILE).write_text("[" * 100_000 + "]" * 100_000)
    deep_config = make_run(tmp_path / "deep_config")
    doc = json.loads((deep_config / runs.SUMMARY_FILE).read_text())
    nested: dict[str, Any] = {"x": 1}
    for _ in range(200):
        nested = {"a": nested}
    doc["config"]["deep"] = nested
    doc["config"]["deep_list"] = [[[[[[1]]]]]]
    (deep_config / runs.SUMMARY_FILE).write_text(json.dumps(doc))
    deep_yaml = make_run(tmp_path / "deep_yaml", schema=V1)
    (deep_yaml / runs.HYDRA_DIR / "config.yaml").write_text(
        "".join(" " * (2 * i) + f"k{i}:\n" for i in range(900)) + " " * 1800 + "x: 1\n"
    )
    make_run(tmp_path / "normal")
    code = compare.main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    line_with(out, "deep_json: summary.json is nested deeper than 32 levels; refused")
    line_with(out, "deep_config: summary.json is nested deeper than 32 levels; refused")
    line_with(out, "deep_yaml: .hydra/config.yaml unreadable: is nested deeper than 32 levels")


@pytest.mark.parametrize("schema", [V1, V2], ids=["v1", "v2"])
def test_huge_trial_numbers_under_plot(tmp_path: Path, schema: int) -> None:
    sweep = tmp_path / "sweep"
    with open(sweep.mkdir() or sweep / runs.TRIALS_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "params_optimizer.lr", "objective"])
        for i, (number, lr, obj) in enumerate(
            [
                (0, 1e-3, 0.9),
                (1, 1e-2, 0.8),
                (2, 3e-3, 0.95),
                ("1e400", 1e-4, 0.7),
                (10**30, 3e-4, 0.85),
                (-5, 3e-2, 0.6),
                ("x", 1e-1, 0.1),
                (3, 1e-3, "nan"),
            ]
        ):
            make_run(sweep / str(i), lr=lr, objective=0.5 + i / 100, schema=schema)
            w.writerow([number, "COMPLETE", lr, obj])
    plots = tmp_path / "plots"
    proc = run_compare(sweep, "--plot", plots, "--html", tmp_path / "page.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    line_with(proc.stdout, "note:", "trials.csv: 4 row(s) without a trial number")
    assert (plots / "optimization_history.png").stat().st_size > 10_000


@pytest.mark.parametrize("schema", [V1, V2], ids=["v1", "v2"])
def test_control_characters_never_reach_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schema: int
) -> None:
    """A folder name or a value with ESC sequences or newlines is shown escaped, in one line."""
    evil = make_run(tmp_path / "run\x1b[2J\nfake row", model="gru\x1b]0;owned\x07", schema=schema)
    doc = json.loads((evil / runs.SUMMARY_FILE).read_text())
    doc["optimized_metric"] = "val/acc\x1b[31m"
    doc["device"] = "x" * 100_000
    doc["key\x1b[2J\nwith escapes"] = 1
    (evil / runs.SUMMARY_FILE).write_text(json.dumps(doc))
    broken = make_run(tmp_path / "broken\x1b[2J", summary=False)
    (broken / runs.SUMMARY_FILE).write_text("{\x1b[2J")
    make_run(tmp_path / "plain", objective=0.5, schema=schema)
    md = tmp_path.parent / "t.md"
    code = compare.main([str(tmp_path), "--markdown", str(md), "--columns", "device"])
    out, err = capsys.readouterr()
    assert code == 0, err
    for text in (out, md.read_text()):
        assert "\x1b" not in text and "\x07" not in text
        assert "fake row" not in text.replace("\\x0afake row", "")
        assert max(map(len, text.splitlines())) < 1000
    assert "gru\\x1b]0;owned\\x07" in out
    code = compare.main([str(tmp_path), "--where", "colour=red"])  # lists the keys found
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    """A folder name with bytes that are not UTF-8, on a strict UTF-8 terminal and in exports."""
    odd = make_run(tmp_path / os.fsdecode(b"run\xff"), objective=0.8)
    make_run(tmp_path / "plain", objective=0.5)
    out = tmp_path.parent / f"{tmp_path.name}-out"
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab.compare", str(tmp_path), "--csv", str(out / "t.csv")]
        + ["--json", str(out / "t.json"), "--markdown", str(out / "t.md")],
        capture_output=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"run\\xff" in proc.stdout
    assert os.fsencode(odd) in (out / "t.csv").read_bytes()  # the folder's own bytes
    assert json.loads((out / "t.json").read_text())["rows"][0]["run_dir"] == str(odd)
    assert "run\\xff" in (out / "t.md").read_text()


@pytest.mark.parametrize("option", ["--csv", "--json", "--markdown"])
def test_an_export_that_cannot_be_written_names_the_option_and_its_file(
    tmp_path: Path, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the hidden temp file that atomic_write tried to create next to it."""
    make_run(tmp_path / "run")
    target = Path("/proc/rnnlab-compare.out")  # no file can be created in /proc
    assert compare.main([str(tmp_path / "run"), "--quiet", option, str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: error: {option} {target}: cannot write it: ")
    assert err.count("\n") == 1 and ".tmp" not in err
