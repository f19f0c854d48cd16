"""Command-line plumbing: the `rnnlab` command and train.py's handling of user errors."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rnnlab.errors import UserError, fail

__all__ = [
    "check_env_variables",
    "check_group_choices",
    "fail",
    "main",
    "user_errors_as_one_line",
]


@contextmanager
def user_errors_as_one_line() -> Iterator[None]:
    """Config and data mistakes (exit code 2) and a run the machine could not carry (out of
    memory, a full disk, exit code 1) end a single run with one line.

    In a multirun the error is re-raised so that the sweeper records the job as failed.
    """
    try:
        yield
    except UserError as e:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            logging.getLogger("rnnlab").error("%s", e)
            raise
        fail(str(e), e.exit_code)


def check_group_choices(argv: list[str], conf_dir: Path) -> None:
    """Reject `group=option` overrides naming an option that has no YAML file, in one line.

    Hydra would say so too, but over a dozen lines of search paths; this runs first.
    """
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if "(" in value or value in ("null", ""):
            continue  # sweep syntax like choice(...) is the sweeper's to check
        if key.startswith("hydra/"):
            # hydra/launcher, hydra/sweeper/sampler, ...: options come from plugins too.
            options = _hydra_group_options(key, conf_dir)
            if not options:
                continue  # not a group: Hydra says what is wrong
        elif key in groups:
            options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        else:
            continue
        for option in value.split(","):
            option = option.strip("[] ")  # a list of options: logger=[tensorboard,mlflow]
            if option not in options:
                fail(f"{key}={option}: no such option; choose one of {', '.join(options)}")


# ${oc.env:NAME} with no default: OmegaConf fails when NAME is unset, and where Hydra resolves
# it (hydra.*, paths.output_root) that is a traceback of a hundred lines.
_ENV_NO_DEFAULT = re.compile(r"\$\{oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")


def check_env_variables(argv: list[str]) -> None:
    """Reject an override naming `${oc.env:NAME}` (no default) when NAME is unset, in one line.

    Runs before Hydra, like check_group_choices; the value is not printed (it may be a URL
    whose password the variable was meant to keep off the command line).
    """
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key = arg.partition("=")[0].lstrip("+~")
        for name in _ENV_NO_DEFAULT.findall(arg):
            if name not in os.environ:
                fail(
                    f"{key}=${{oc.env:{name}}}: the environment variable {name} is not set; "
                    f"export it, or give a default: ${{oc.env:{name},<default>}}"
                )


def _hydra_group_options(group: str, conf_dir: Path) -> list[str]:
    """The options of config group `group` as Hydra sees them (conf/ and the plugins' configs)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rnnlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # Imported here, not at the top: train.py uses this module and needs none of it.
    from rnnlab import compare, dashboard

    commands: dict[str, Callable[[argparse.Namespace], int | None]] = {
        "compare": compare.add_parser(sub),
        "dashboard": dashboard.add_parser(sub),
    }
    args = parser.parse_args(argv)
    sys.exit(commands[args.command](args) or 0)


if __name__ == "__main__":
    main()
