"""Secrets in storage URLs: masking them wherever the sweep writes or prints a URL.

The storage URL may hold a password. It never travels in a config or an override, because
Hydra writes those into every run dir: the sweeper keeps a masked copy in the config and puts
the real URL in the environment variable STORAGE_ENV, which the jobs inherit.

What counts as a secret, in any text (a URL alone, a log line, YAML, JSON, a command line):

- the password in a URL's userinfo, `scheme://user:PASSWORD@host`, whatever characters it
  holds (spaces, `:`, `/`, `?`, `#`, `@`, a newline), percent-encoded or not. SQLAlchemy reads
  everything up to the first `@` as the password, so a raw `@` splits it and errors quote the
  rest as host and port; the mask runs to the last `@` before the next URL on the line, so no
  piece of it survives;
- the value of `password`, `passwd`, `pwd` or `sslpassword` (libpq's pass phrase for the client
  key) in a query string, `?password=...&`, any case, the key percent-encoded or not, up to the
  next `&` or the end of the line (a value may hold spaces); and any other query value that,
  percent-decoded, holds a secret itself (`?dsn=host%3Dh%20password%3D...`);
- the same keys, and `PGPASSWORD`, as libpq keyword/value pairs, `host=h password=... `, quoted
  (`password='a b'`) or up to the next space.

Not secrets: `passfile`, `sslkey`, `sslcert` and other settings name files, whose contents stay
where they are; user, host, port and database names stay readable.

Masking may hide more than the secret on a line (e.g. an `@` later on the line after a URL
with a password), never less; it is idempotent, so a masked URL can be masked again (into an
error message, say) and stays the same.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from urllib.parse import unquote_plus

STORAGE_ENV = "RNNLAB_OPTUNA_STORAGE"
MASK = "***"

# Keys whose value is a secret: psycopg2/libpq and pymysql/ODBC spellings of a password, and
# libpq's pass phrase for an encrypted client key.
SECRET_KEYS = ("password", "passwd", "pwd", "sslpassword")
_KEYS = "|".join(SECRET_KEYS)

# scheme://user: — the head of a URL with a password. The user may hold `@` or spaces
# (SQLAlchemy reads it up to the first `:` or `/`). One slash or three instead of two (a typo
# SQLAlchemy reports with the whole URL) count too. Where the password ends: _mask_userinfo.
_SCHEME = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*:/"
_USERINFO_HEAD = re.compile(rf"{_SCHEME}/*[^:/\n]*:")
_URL_START = re.compile(_SCHEME)
_SPACE = re.compile(r"\s")
# A password may hold a newline: up to this many more lines are searched for its `@`.
_MAX_PASSWORD_LINES = 3
# A query parameter's key, after `?`, `&` or `;`; keys are percent-decoded as SQLAlchemy does.
_QUERY_KEY = re.compile(r"[?&;]([^=&?;#\s'\"]+)=")
# A secret value that is already the mask, ended: left alone, so that the text after a masked
# URL survives masking it again (say, in an error message).
_MASKED = re.compile(rf"{re.escape(MASK)}(?=[&\s'\",;:.)\]}}]|$)")
_PLAIN_VALUE = re.compile(r"[^&\s]*")
# libpq keyword/value: password=VALUE, password = 'quoted \' value', PGPASSWORD=VALUE; not
# inside a longer name, and not after `?` or `&` (a query string's `?password=` is above).
_KEYWORD = re.compile(
    rf"((?<![\w?&;.\-])(?:pg)?(?:{_KEYS})\s*=\s*)('(?:[^'\\\n]|\\.)*'?|[^\s']\S*)",
    re.IGNORECASE,
)


def mask_url(text: str) -> str:
    """`text` with every secret a storage URL or connection string in it holds replaced by ***.

    `text` may be a URL, or any text holding URLs (a log line, an exception message, YAML).
    """
    text = _mask_userinfo(text)
    text = _mask_query(text)
    return _KEYWORD.sub(_mask_keyword, text)


def _mask_userinfo(text: str) -> str:
    # The password runs to the last `@` before the next URL on the line (an error message may
    # quote the URL again); else, if no space comes first (that is `host:port/db more text`),
    # to the last `@` on the line (a password may hold `://`) or to the first `@` on the next
    # few lines (or a newline). Found with str methods and short regex searches: the text may
    # be long, and one backtracking regex is quadratic in it.
    out, pos = [], 0
    line_end = last_at = last_space = later_at = -1  # of the current line, found once a line
    for m in _USERINFO_HEAD.finditer(text):
        start = m.end()
        if m.start() < pos:
            continue  # inside a password masked already
        if start > line_end:
            line_end = text.find("\n", start)
            line_end = len(text) if line_end < 0 else line_end
            last_at = text.rfind("@", start, line_end)
            last_space = max(text.rfind(c, start, line_end) for c in " \t\r\f\v")
            later_at = text.find("@", line_end, _nth_line_end(text, line_end, _MAX_PASSWORD_LINES))
        if last_at >= start:
            next_url = _URL_START.search(text, start, last_at)
            end = next_url.start() if next_url else last_at + 1
            at = text.rfind("@", start, end)
            if at < 0 and not _SPACE.search(text, start, end):
                at = last_at
        elif last_space < start:
            at = later_at
        else:
            at = -1  # host:port, not user:password
        if at < 0:
            continue
        out += [text[pos:start], MASK]
        pos = at
    return "".join([*out, text[pos:]])


def _nth_line_end(text: str, pos: int, n: int) -> int:
    for _ in range(n):
        pos = text.find("\n", pos + 1)
        if pos < 0:
            return len(text)
    return pos


def _mask_query(text: str) -> str:
    out, pos = [], 0
    for m in _QUERY_KEY.finditer(text):
        start = m.end()
        if m.start() < pos:
            continue  # inside a value masked already
        if unquote_plus(m.group(1)).strip().lower() in SECRET_KEYS:
            if _MASKED.match(text, start):
                continue
            # The value may hold spaces: it runs to the next parameter or the end of the line.
            end = min(
                (i for i in (text.find("&", start), text.find("\n", start)) if i >= 0),
                default=len(text),
            )
        else:
            # Any other value is a secret if it carries one once decoded (a URL, a libpq string).
            end = _PLAIN_VALUE.match(text, start).end()  # type: ignore[union-attr]
            value = unquote_plus(text[start:end])
            if mask_url(value) == value:
                continue
        out += [text[pos:start], MASK]
        pos = end
    return "".join([*out, text[pos:]])


def _mask_keyword(m: re.Match[str]) -> str:
    value = m.group(2)
    if _MASKED.match(value) or value == f"'{MASK}'":
        return m.group(0)
    return m.group(1) + (f"'{MASK}'" if value.startswith("'") else MASK)


def real_storage_url(configured: str) -> str:
    """The URL to connect to: the one in STORAGE_ENV when `configured` is its masked form."""
    real = os.environ.get(STORAGE_ENV)
    if real and mask_url(real) == configured:
        return real
    return configured


def refuse_unparsable_overrides(argv: Sequence[str]) -> None:
    """Exit with one masked line if an override is one Hydra cannot parse.

    Hydra would print the whole override, password included (e.g. for a `#` in it, which
    needs quoting), over three lines; for any other override (`choice()`, an unclosed quote)
    its reason is kept. Runs before Hydra, like cli.check_group_choices.
    """
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        try:
            OverridesParser.create().parse_overrides([arg])
        except HydraException as e:
            key = arg.partition("=")[0]
            if mask_url(arg) != arg:
                why = (
                    f"Hydra cannot parse this value; quote it, "
                    f"e.g. \"{key}='postgresql://user:pw@host/db'\" (a ' in it as \\')"
                )
            else:
                why = f"Hydra cannot parse this override ({_parse_reason(str(e))})"
            print(f"rnnlab: error: {mask_url(arg)}: {why}", file=sys.stderr)
            raise SystemExit(2) from None


def _parse_reason(message: str) -> str:
    """The line of Hydra's parse error that says what is wrong (not its heading or link)."""
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(("Error parsing override", "See https://", "^")):
            return line
    return "see https://hydra.cc/docs/advanced/override_grammar/basic"
