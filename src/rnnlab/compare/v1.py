"""Run folders with a schema_version 1 summary.json: the config comes from Hydra's YAML.

v1 summaries do not record the config, so it is read from .hydra/config.yaml (the resolved
config, also after a resume) and the config-group choices from .hydra/hydra.yaml, both
with PyYAML's C loader. The files are untrusted: size-capped (rnnlab.compare.files), and a
document whose aliases expand past MAX_NODES nodes (an "alias bomb") or nest past
MAX_DEPTH is refused before anything is built from it. Unknown tags are refused by the
safe loader; dates, bytes and sets become their text.

A resumed run's hydra.yaml records the default choices that Hydra composed around
`resume=...`, not what ran; its choices come from the original run's hydra.yaml
(`resumed_from`, followed back to the first run), else from the group overrides that
the resume copied into .hydra/overrides.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rnnlab import runs
from rnnlab.compare.files import (
    MAX_DEPTH,
    TooDeep,
    Unreadable,
    as_choice,
    flatten,
    load_json,
    one_line,
    plain,
    read_bytes,
    read_text,
)

try:  # libyaml builds the node tree in C
    _Loader: Any = yaml.CSafeLoader
    _BaseLoader: Any = yaml.CBaseLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader, _BaseLoader = yaml.SafeLoader, yaml.BaseLoader

_TEXT_TAGS = {
    yaml.ScalarNode: "tag:yaml.org,2002:str",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
    yaml.MappingNode: "tag:yaml.org,2002:map",
}


class _TextLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Every scalar is text. The parser calls these three resolver methods, in Python, for
    every node of the file; here they cost next to nothing (hydra.yaml: ~40% faster)."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        return _TEXT_TAGS[kind]

    # Path-based resolvers are not used: nothing to track on the way down and up.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


# rnnlab's hydra.yaml has ~250 YAML nodes, its config.yaml ~90.
MAX_NODES = 20_000
MAX_RESUME_HOPS = 16
_NULLS = ("null", "Null", "NULL", "~", "")
CONFIG_FILE = "config.yaml"
HYDRA_FILE = "hydra.yaml"
OVERRIDES_FILE = "overrides.yaml"
_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)


def load_yaml(text: str) -> Any:
    """The YAML document in `text` as plain data; ValueError or yaml.YAMLError if refused."""
    return _load(text, (), _Loader)


def _load(text: str, path: tuple[str, ...], loader_class: Any) -> Any:
    """The node at `path` (mapping keys from the root) of the document, as plain data.

    Only that node is checked and built: hydra.yaml is mostly Hydra's own settings, and
    its choices are ~10 of its ~250 nodes.
    """
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        for key in path:
            node = _child(node, key)
        if node is None:
            return None
        _check_nodes(node)
        return plain(loader.construct_object(node, deep=True))
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node) -> None:
    """Refuse documents that expand to too many nodes or nest too deep (aliases counted
    as often as they are used: that is what building the data would cost)."""
    stack = [(root, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise TooDeep(f"expands to more than {MAX_NODES:,} YAML nodes (alias bomb?); refused")
        if depth > MAX_DEPTH:
            raise TooDeep(f"is nested deeper than {MAX_DEPTH} levels; refused")
        if isinstance(node, yaml.MappingNode):
            stack.extend((n, depth + 1) for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((n, depth + 1) for n in node.value)


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def read_config(run_dir: Path) -> dict[str, Any]:
    """.hydra/config.yaml, flattened to dotted keys. FileNotFoundError, Unreadable, or
    ValueError/yaml.YAMLError for a file that is not a sane YAML mapping."""
    config = load_yaml(read_text(run_dir / runs.HYDRA_DIR / CONFIG_FILE))
    if not isinstance(config, dict):
        raise ValueError("not a mapping")
    return flatten(config)


def read_choices(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The config-group choices of what ran in `run_dir` (None when unknown)."""
    if not summary.get("resumed_from"):
        return _hydra_choices(run_dir)
    origin = _origin(run_dir, summary)
    if origin is not None:
        choices = _hydra_choices(origin)
        if choices is not None:
            return choices
    choices = _hydra_choices(run_dir)
    return _with_group_overrides(run_dir, choices) if choices is not None else None


def _hydra_choices(run_dir: Path) -> dict[str, Any] | None:
    """hydra.runtime.choices of .hydra/hydra.yaml, without Hydra's own groups."""
    try:
        text = read_text(run_dir / runs.HYDRA_DIR / HYDRA_FILE)
        # Choices are names or null: read as text, without PyYAML's implicit types (whose
        # resolver, in Python, would run for every scalar of the file).
        choices = _load(text, ("hydra", "runtime", "choices"), _TextLoader)
    except (OSError, Unreadable, *_YAML_ERRORS):
        return None
    if not isinstance(choices, dict):
        return None
    return {
        str(k): None if v in _NULLS else as_choice(v)
        for k, v in choices.items()
        if not str(k).startswith("hydra/")
    }


def _origin(run_dir: Path, summary: dict[str, Any]) -> Path | None:
    """The first run of a chain of resumes that ends in `run_dir` (None if it is gone)."""
    seen = {run_dir.resolve()}
    current: Any = summary.get("resumed_from")
    for _ in range(MAX_RESUME_HOPS):
        if not isinstance(current, str):
            return None
        path = Path(current)
        if path.name.endswith(".pt"):  # resume=<a checkpoint file>
            path = path.parent
        if path.name == runs.CHECKPOINT_DIR:
            path = path.parent
        if path in seen:
            return None
        seen.add(path)
        try:
            earlier = load_json(read_bytes(path / runs.SUMMARY_FILE))
        except FileNotFoundError:
            earlier = {}  # killed before its summary: still the run that was resumed
        except (OSError, Unreadable, ValueError):
            return None
        if not isinstance(earlier, dict):
            return None
        current = earlier.get("resumed_from")
        if not current:
            return path
    return None


def _with_group_overrides(run_dir: Path, choices: dict[str, Any]) -> dict[str, Any]:
    """`choices` updated with the `group=option` overrides of .hydra/overrides.yaml (a resume
    copies the original run's overrides there, before its own)."""
    try:
        overrides = load_yaml(read_text(run_dir / runs.HYDRA_DIR / OVERRIDES_FILE))
    except (OSError, Unreadable, *_YAML_ERRORS):
        return choices
    out = dict(choices)
    for override in overrides if isinstance(overrides, list) else []:
        if not isinstance(override, str) or "=" not in override:
            continue
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in out:
            out[key] = None if value in ("null", "") else value
    return out


def problem(e: BaseException) -> str:
    """The one-line reason shown for a .hydra/config.yaml that cannot be used."""
    if isinstance(e, FileNotFoundError):
        return f"no {runs.HYDRA_DIR}/{CONFIG_FILE}"
    return f"{runs.HYDRA_DIR}/{CONFIG_FILE} unreadable: {one_line(e)}"


YAML_ERRORS = _YAML_ERRORS
