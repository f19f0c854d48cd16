"""Storage passwords never leave the process that was given them.

Fast: mask_url on every form a libpq / SQLAlchemy URL or connection string carries a secret in,
and real_storage_url finding the real URL again for the masked form, through Hydra's override
grammar. Slow: real sweeps on a real PostgreSQL (tests/pg.py) with each form, then every byte
under the output folder and everything printed is searched for the secret.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from pg import HOST, Server, free_port, postgres_server
from rnnlab import runs, secrets
from rnnlab.secrets import MASK, mask_url, real_storage_url, refuse_unparsable_overrides
from sweeping import TINY_TRIAL, sweep_env

REPO = Path(__file__).resolve().parents[1]

# (text, masked): the password in every place and spelling a URL can carry it.
MASKED = [
    # userinfo: plain, percent-encoded, spaces, raw `:` `/` `?` `#` and `@`, empty user, `@` in user
    ("postgresql://u:Pw9x@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg2://u:p%40ss%3Aw%2F@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
    ("postgresql://u:Kq7v Wz3x@h:5/db", "postgresql://u:***@h:5/db"),
    ("postgresql://u:a:b/c?d#e@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:Mx4r@Tn8@h/db", "postgresql://u:***@h/db"),
    ("postgresql://user@srv:Pw9x@srv.example/db", "postgresql://user@srv:***@srv.example/db"),
    ("redis://:Pw9x@h:6379/0", "redis://:***@h:6379/0"),
    ("mysql+pymysql://u:Pw9x@h/db?charset=utf8", "mysql+pymysql://u:***@h/db?charset=utf8"),
    # the query string: any case, spaces, encoded, several, with other keys kept
    ("postgresql://u@h/db?password=Lw5e", "postgresql://u@h/db?password=***"),
    (
        "postgresql://u@h/db?sslmode=require&password=Lw5e Rt9y&application_name=x",
        "postgresql://u@h/db?sslmode=require&password=***&application_name=x",
    ),
    ("postgresql://u@h/db?PASSWORD=Lw5e%20Rt", "postgresql://u@h/db?PASSWORD=***"),
    (
        "postgresql://u:Pw9x@h/db?sslpassword=Kp2&passwd=Qz3&pwd=Rr4&passfile=/home/u/.pgpass",
        "postgresql://u:***@h/db?sslpassword=***&passwd=***&pwd=***&passfile=/home/u/.pgpass",
    ),
    # a percent-encoded key; a value that holds a secret once decoded
    ("postgresql://u@h/db?pass%77ord=Lw5e", "postgresql://u@h/db?pass%77ord=***"),
    (
        "postgresql+psycopg2:///db?dsn=host%3Dh%20password%3DLw5e&sslmode=disable",
        "postgresql+psycopg2:///db?dsn=***&sslmode=disable",
    ),
    ("sqlite:///a.db?target=redis%3A%2F%2F%3APw9x%40r", "sqlite:///a.db?target=***"),
    # typos SQLAlchemy reports with the URL in the message
    ("postgresql:/u:Pw9x@h/db", "postgresql:/u:***@h/db"),
    ("postgresql:///u:Pw9x@h/db", "postgresql:///u:***@h/db"),
    (
        "storage=postgresql:/u:***@h:1/db: cannot open: Could not parse rfc1738 URL from "
        "string 'postgresql:/u:Kq7v Wz3x@h:1/db'",
        "storage=postgresql:/u:***@h:1/db: cannot open: Could not parse rfc1738 URL from "
        "string 'postgresql:/u:***@h:1/db'",
    ),
    ("postgresql://u:a://b@h/db", "postgresql://u:***@h/db"),
    # a newline in the password
    ("postgresql://u:ab\ncd@h/db", "postgresql://u:***@h/db"),
    # libpq keyword/value connection strings, and PGPASSWORD on a command line
    ("host=h user=u password=Pw9x dbname=db", "host=h user=u password=*** dbname=db"),
    ("host=h password = 'a \\' b c' dbname=db", "host=h password = '***' dbname=db"),
    ("PGPASSWORD=Pw9x psql -h h", "PGPASSWORD=*** psql -h h"),
    # inside text: log lines, YAML, quoted overrides, exception messages
    (
        "Study s in postgresql://u:Pw9x@h/db (0 earlier trials)",
        "Study s in postgresql://u:***@h/db (0 earlier trials)",
    ),
    (
        "  storage: 'postgresql://u:it''s Pw9x@h/db'\n  study_name: s\n",
        "  storage: 'postgresql://u:***@h/db'\n  study_name: s\n",
    ),
    (
        "hydra.sweeper.storage='postgresql://u@h/db?password=Lw5e&x=1' -m",
        "hydra.sweeper.storage='postgresql://u@h/db?password=***&x=1' -m",
    ),
    (
        "Could not parse SQLAlchemy URL from string 'postgresql://u:Kq7v Wz3x@h:x/db'",
        "Could not parse SQLAlchemy URL from string 'postgresql://u:***@h:x/db'",
    ),
    (
        "a: postgresql://u:Pw9x@h/db\nb: redis://:Qz3@r/0\n",
        "a: postgresql://u:***@h/db\nb: redis://:***@r/0\n",
    ),
]

UNCHANGED = [
    "sqlite:////tmp/optuna/a.db",
    "sqlite:///outputs/optuna/rnn_optuna.db",
    "postgresql://u@h:5432/db",
    "postgresql://h:5432/db?sslmode=require&passfile=/p",
    "postgresql://u@h/db?application_name=a%20b&sslmode=require",
    "a: 1\nb: postgresql://u@h/db\n",
    "https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details",
    "epoch 3: train/loss 0.31, val/acc 0.912",
    "trainer.epochs=1 model.hidden_size=8 optimizer.lr=0.001",
]


@pytest.mark.parametrize(("text", "masked"), MASKED)
def test_mask_url_masks_every_form(text: str, masked: str) -> None:
    assert mask_url(text) == masked
    assert mask_url(masked) == masked  # idempotent: a masked URL can go into a message


@pytest.mark.parametrize("text", UNCHANGED)
def test_mask_url_leaves_text_without_secrets_alone(text: str) -> None:
    assert mask_url(text) == text


def test_masked_url_keeps_the_text_after_it() -> None:
    for url in (
        "postgresql://u:Pw9x@h:1/db",
        "postgresql://u@h:1/db?password=Lw5e",
        "host=h port=1 password=Lw5e",
    ):
        line = f"rnnlab: error: hydra.sweeper.storage={mask_url(url)}: cannot open the storage"
        assert mask_url(line) == line
        assert "Pw9x" not in line and "Lw5e" not in line


def test_mask_url_is_linear_in_long_text() -> None:
    # A backtracking regex took minutes on this (0.8 MB of log lines full of URLs).
    import time

    text = ("epoch 1 http://host:5000/x postgresql://u:Pw9x@h/db val/acc 0.9 " * 20 + "\n") * 600
    started = time.monotonic()
    masked = mask_url(text)
    assert "Pw9x" not in masked and masked.count("http://host:5000/x") == 12000
    assert time.monotonic() - started < 20  # ~0.1 s; generous for a loaded machine


def _hydra_value(override: str) -> object:
    return OverridesParser.create().parse_override(override).value()


@pytest.mark.parametrize("url", [text for text, _ in MASKED if "://" in text and "\n" not in text])
def test_real_storage_url_finds_the_url_after_hydra(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweeper hands each job `trial={...,storage:'<masked>'}` (quoted as the sweeper's
    # _quote does) and the real URL in STORAGE_ENV; the job must get the real one back.
    masked = mask_url(url)
    quoted = "'" + masked.replace("\\", "\\\\").replace("'", "\\'") + "'"
    got = _hydra_value(f"trial={{number:0,storage:{quoted}}}")
    assert isinstance(got, dict) and got["storage"] == masked
    monkeypatch.setenv(secrets.STORAGE_ENV, url)
    assert real_storage_url(got["storage"]) == url
    monkeypatch.setenv(secrets.STORAGE_ENV, "postgresql://u:other@elsewhere/db")
    assert real_storage_url(masked) == masked  # another URL's secret is never handed out
    monkeypatch.delenv(secrets.STORAGE_ENV)
    assert real_storage_url(masked) == masked


UNPARSABLE = [
    "hydra.sweeper.storage=postgresql://u:Pw9x#Zr@h/db",  # `#` needs quoting
    "hydra.sweeper.storage=postgresql://u@h/db?password=Pw9x&sslmode=disable",  # so does `=`
]


@pytest.mark.parametrize("arg", UNPARSABLE)
def test_unparsable_override_is_refused_masked(arg: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        refuse_unparsable_overrides(["-m", "trainer.epochs=1", arg])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: error: {mask_url(arg)}: Hydra cannot parse")
    assert len(err.splitlines()) == 1 and "Pw9x" not in err


@pytest.mark.parametrize(
    ("arg", "why"),
    [
        ("model.hidden_size=choice()", "empty choice is not legal"),
        ("optimizer.lr=interval(a,b)", "mismatch type argument start"),
        ("model.hidden_size=interval(1,", "no viable alternative at input"),
        ("data.root='unterminated", "LexerNoViableAltException"),
    ],
)
def test_any_unparsable_override_is_one_line_with_hydras_reason(
    arg: str, why: str, capsys: pytest.CaptureFixture
) -> None:
    """Hydra says it over three lines, without the `rnnlab: error:` a user greps for."""
    with pytest.raises(SystemExit) as e:
        refuse_unparsable_overrides(["-m", "trainer.epochs=1", arg])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnlab: error: {arg}: Hydra cannot parse this override (")
    assert why in err and len(err.splitlines()) == 1


def test_parsable_overrides_pass() -> None:
    refuse_unparsable_overrides(
        [
            "-m",
            "hydra.sweeper.storage='postgresql://u:Pw9x#Zr@h/db'",
            "hydra.sweeper.storage=postgresql://u:Kq7v Wz3x@h/db",
            "trainer.epochs=1",
            "optimizer.lr=tag(log,interval(1e-3,1e-2))",
        ]
    )


# --------------------------------------------------------------------------- end to end

# Four roles on one server, each with a password in a form of its own; the URL is what the
# user types after `hydra.sweeper.storage=`.
FORMS = {
    "space": ("Kq7v Wz3x", lambda pw: pw),
    "at_colon": ("Mx4r@Tn8w:Pj2k", lambda pw: pw.replace("@", "%40")),
    "percent": ("Hy6k/Gd7q?1#Bc%9 Efw", lambda pw: quote(pw, safe="")),
    "query": ("Lw5e Rt9y&Qs", None),
}

SWEEP = [
    *TINY_TRIAL,
    "model=rnn",
    "trainer.save_checkpoints=true",
    "hydra/sweeper=rnnlab_optuna",
    "hydra.sweeper.n_trials=1",
    "optimizer.lr=tag(log,interval(1e-3,1e-2))",
]


def _url(form: str, port: int, user: str) -> str:
    password, encode = FORMS[form]
    if encode is None:
        return f"postgresql://{user}@{HOST}:{port}/{user}?password={quote_plus(password)}"
    return f"postgresql://{user}:{encode(password)}@{HOST}:{port}/{user}"


def _spellings(password: str) -> set[str]:
    """The password as typed, percent-encoded every way, and each of its pieces of 4+ chars."""
    forms = {password, quote(password), quote(password, safe=""), quote_plus(password)}
    forms |= {p for p in re.split(r"[^A-Za-z0-9]", password) if len(p) >= 4}
    return forms


def _leaks(root: Path, text: str, password: str) -> list[str]:
    found = []
    spellings = _spellings(password)
    for s in spellings:
        if s in text:
            found.append(f"console: {s!r}")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        blobs = [path.read_bytes()]
        if zipfile.is_zipfile(path):  # torch checkpoints: look inside too (compressed members)
            with zipfile.ZipFile(path) as z:
                blobs += [z.read(n) for n in z.namelist()]
        for s in spellings:
            if any(s.encode() in b for b in blobs):
                found.append(f"{path.relative_to(root)}: {s!r}")
    return found


def _sweep(out: Path, data_dir: Path, *args: str, timeout: float = 300, **env_vars: str):
    out.mkdir(parents=True, exist_ok=True)
    env = sweep_env(HYDRA_FULL_ERROR="0", **env_vars)
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            f"paths.data_dir={data_dir}",
            f"paths.output_root={out}",
            *SWEEP,
            *args,
        ],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def server() -> Server:
    with postgres_server() as s:
        for form, (password, _) in FORMS.items():
            s.create_role(f"f_{form}", password)
        yield s


@pytest.mark.slow
@pytest.mark.parametrize(
    ("form", "launcher"), [(form, "basic") for form in FORMS] + [("query", "joblib")]
)
def test_sweep_on_postgres_writes_and_prints_no_password(
    form: str, launcher: str, server: Server, data_dir: Path, tmp_path: Path
) -> None:
    import optuna

    url = _url(form, server.port, f"f_{form}")
    study_name = f"{form}_{launcher}"
    # joblib: two trials in worker processes, which get the real URL from the environment
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_trials=2"]
    out = tmp_path / "out"
    proc = _sweep(
        out,
        data_dir,
        f"hydra.sweeper.storage='{url}'",
        f"hydra.sweeper.study_name={study_name}",
        *(extra if launcher == "joblib" else []),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the sweep really used this role and its password: the trials are in its database
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert len(trials) == (2 if launcher == "joblib" else 1)
    # the jobs found the real URL and reported to postgres
    assert all(t.intermediate_values for t in trials)
    sweep_dir = next(out.glob(f"multirun/*/*/{runs.MULTIRUN_FILE}")).parent
    files = {p.name for p in sweep_dir.rglob("*") if p.is_file()}
    # what must have been searched: every file the sweep and its run write
    for name in (
        *runs.SWEEP_FILES,
        runs.SUMMARY_FILE,
        runs.METRICS_FILE,
        runs.LOG_FILE,
        runs.LAST_CHECKPOINT,
        runs.BEST_CHECKPOINT,
        "hydra.yaml",
        "overrides.yaml",
        "config.yaml",
    ):
        assert name in files, (name, sorted(files))
    leaks = _leaks(out, proc.stdout + proc.stderr, FORMS[form][0])
    assert not leaks, "\n".join(leaks)
    assert f"{MASK}@" in (sweep_dir / runs.MULTIRUN_FILE).read_text() or form == "query"


@pytest.mark.slow
def test_storage_from_an_environment_variable(
    server: Server, data_dir: Path, tmp_path: Path
) -> None:
    """`hydra.sweeper.storage=${oc.env:VAR}` keeps the password off the command line too."""
    out = tmp_path / "out"
    url = _url("space", server.port, "f_space")
    proc = _sweep(
        out,
        data_dir,
        "hydra.sweeper.storage=${oc.env:RNNLAB_TEST_DB}",
        "hydra.sweeper.study_name=env",
        RNNLAB_TEST_DB=url,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    leaks = _leaks(out, proc.stdout + proc.stderr, FORMS["space"][0])
    assert not leaks, "\n".join(leaks)
    multirun = next(out.glob(f"multirun/*/*/{runs.MULTIRUN_FILE}")).read_text()
    assert mask_url(url) in multirun


@pytest.mark.slow
@pytest.mark.parametrize("form", ["space", "query"])
def test_wrong_password_error_names_no_password(
    form: str, server: Server, data_dir: Path, tmp_path: Path
) -> None:
    # The server answers: SQLAlchemy's and psycopg2's authentication error, not a refusal.
    url = _url(form, server.port, f"f_{form}").replace("Kq7v", "Kq7V").replace("Lw5e", "Lw5E")
    proc = _sweep(tmp_path / "out", data_dir, f"hydra.sweeper.storage='{url}'", timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rnnlab: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"rnnlab: error: hydra.sweeper.storage={mask_url(url)}: cannot")
    assert "password authentication failed" in lines[0]
    for password in (
        FORMS[form][0],
        FORMS[form][0].replace("Kq7v", "Kq7V").replace("Lw5e", "Lw5E"),
    ):
        leaks = _leaks(tmp_path / "out", proc.stdout + proc.stderr, password)
        assert not leaks, "\n".join(leaks)


@pytest.mark.slow
def test_checkpoints_hold_no_storage_url(server: Server, data_dir: Path, tmp_path: Path) -> None:
    """Not even masked: a checkpoint is copied around, and the URL names the database."""
    url = _url("space", server.port, "f_space")
    out = tmp_path / "out"
    proc = _sweep(out, data_dir, f"hydra.sweeper.storage='{url}'", "hydra.sweeper.study_name=ck")
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoints = list(out.rglob(f"{runs.CHECKPOINT_DIR}/*.pt"))
    assert checkpoints
    for path in checkpoints:
        with zipfile.ZipFile(path) as z:
            blobs = [z.read(n) for n in z.namelist()]
        for needle in (b"postgresql", f"{HOST}:{server.port}".encode(), b"f_space"):
            assert not any(needle in b for b in blobs), (path, needle)


@pytest.mark.slow
@pytest.mark.parametrize("form", [*FORMS, "raw_at"])
def test_unreachable_storage_error_names_no_password(
    form: str, data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    if form == "raw_at":  # a raw `@` in the password: SQLAlchemy splits it at the first one
        password, url = "Mx4r@Tn8w:Pj2k", f"postgresql://u:Mx4r@Tn8w:Pj2k@{HOST}:{port}"
    else:
        password, url = FORMS[form][0], _url(form, port, "u")
    proc = _sweep(tmp_path / "out", data_dir, f"hydra.sweeper.storage='{url}'", timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rnnlab: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"rnnlab: error: hydra.sweeper.storage={mask_url(url)}")
    if form != "raw_at":
        assert "cannot open" in lines[0]
    # else SQLAlchemy reads the rest of the password as host and port and says so, and the
    # mask runs to the last `@` on the line, over the reason: better than a piece of it
    assert "Traceback" not in proc.stderr
    leaks = _leaks(tmp_path / "out", proc.stdout + proc.stderr, password)
    assert not leaks, "\n".join(leaks)


@pytest.mark.slow
@pytest.mark.parametrize("arg", UNPARSABLE)
def test_train_refuses_unparsable_storage_without_printing_it(arg: str, tmp_path: Path) -> None:
    # Hydra itself would print the override, password and all.
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "hydra/sweeper=rnnlab_optuna", arg],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("rnnlab: error: hydra.sweeper.storage=")
    assert "Pw9x" not in proc.stdout + proc.stderr
    assert not list(tmp_path.iterdir())
