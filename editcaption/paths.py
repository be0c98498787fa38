"""Paths in configs mean what they mean where the user typed them.

Ray workers, Ray Train workers and Serve replicas run in other working directories (Ray Train moves
its workers into the run folder), so a relative path that reached them as written pointed somewhere
else, and a relative model folder turned into a hub-id error deep inside a worker. A config field says
what it holds with its type (`InputPath`, `OutputPath`, `ModelPath`, ...); `resolve_config_paths`
walks a loaded config on the caller's side and makes every such local path absolute against the
caller's working directory before anything is shipped. A model that is neither a folder nor a
plausible hub id is refused there, with the field named.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel

PathRole = Literal["input", "output", "model"]
ConfigT = TypeVar("ConfigT", bound=BaseModel)


class PathError(ValueError):
    """A path field that cannot be used: names the field, the value and where it was looked for."""


@dataclasses.dataclass(frozen=True)
class ConfigPath:
    """Field metadata: the value is a local path or URI with this role.

    `only_suffixes`: the value is a path only when it ends with one of these (e.g. a DeepSpeed field
    that holds a preset name or a `.json` file).
    """

    role: PathRole
    only_suffixes: tuple[str, ...] = ()

    def applies_to(self, value: str) -> bool:
        return not self.only_suffixes or value.endswith(self.only_suffixes)


InputPath = Annotated[str, ConfigPath("input")]
OutputPath = Annotated[str, ConfigPath("output")]
ModelPath = Annotated[str, ConfigPath("model")]
OptionalInputPath = Annotated[str | None, ConfigPath("input")]
OptionalOutputPath = Annotated[str | None, ConfigPath("output")]


def is_uri(value: str) -> bool:
    return "://" in value


def absolute(value: str) -> str:
    """A local path made absolute against the current working directory (`~` expanded); URIs unchanged."""
    if is_uri(value):
        return value
    return os.path.abspath(os.path.expanduser(value))


def is_hub_id(value: str) -> bool:
    """True when `value` is a valid Hugging Face repo id (`name` or `owner/name`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def resolve_model(value: str, field: str = "model") -> str:
    """A model folder made absolute, or a URI or hub id as given; PathError otherwise."""
    if is_uri(value):
        return value
    path = absolute(value)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise PathError(f"{field}: {value!r} is a file ({path}); a model is a folder (config.json, weights)")
    if is_hub_id(value):
        return value
    raise PathError(
        f"{field}: no model folder at {path} (from {value!r}, relative to {os.getcwd()}), and "
        f"{value!r} is not a hub id (`name` or `owner/name`)"
    )


def path_fields(cfg: BaseModel, prefix: str = "") -> list[tuple[str, ConfigPath, str]]:
    """(dotted field, its ConfigPath, value) for every path-typed field set in `cfg`, nested models,
    lists and dicts of models included."""
    found: list[tuple[str, ConfigPath, str]] = []
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        where = f"{prefix}{name}"
        marker = field_role(type(cfg), name)
        if marker is not None and isinstance(value, str) and marker.applies_to(value):
            found.append((where, marker, value))
        for key, item in _children(value):
            found += path_fields(item, f"{where}.{key}." if key != "" else f"{where}.")
    return found


def field_role(cls: type[BaseModel], name: str) -> ConfigPath | None:
    """The ConfigPath of a field; a subclass that redeclares a field (a new default, say) keeps the
    role its base class gave it."""
    for klass in cls.__mro__:
        info = getattr(klass, "model_fields", {}).get(name) if isinstance(klass, type) else None
        marker = next((m for m in info.metadata if isinstance(m, ConfigPath)), None) if info else None
        if marker is not None:
            return marker
    return None


def _children(value: Any) -> list[tuple[str, BaseModel]]:
    if isinstance(value, BaseModel):
        return [("", value)]
    if isinstance(value, list | tuple):
        return [(str(i), v) for i, v in enumerate(value) if isinstance(v, BaseModel)]
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items() if isinstance(v, BaseModel)]
    return []


def resolved_paths(cfg: BaseModel, changed_only: bool = True) -> dict[str, str]:
    """{dotted field: absolute value} for every path field (whose value changes when resolved, with
    `changed_only`); raises PathError naming the field for a model that is neither a folder nor a
    hub id."""
    values = {}
    for where, marker, value in path_fields(cfg):
        new = resolve_model(value, where) if marker.role == "model" else absolute(value)
        if new != value or not changed_only:
            values[where] = new
    return values


def resolve_config_paths(cfg: ConfigT) -> ConfigT:
    """A copy of `cfg` with every local path absolute (see `resolved_paths`)."""
    for where, value in resolved_paths(cfg).items():
        cfg = _replace(cfg, where.split("."), value)
    return cfg


def set_dotted(data: dict[str, Any], where: str, value: Any) -> None:
    """Set `a.b.0.c` in plain nested dicts and lists (a config file's raw data)."""
    keys = where.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[keys[-1]] = value


def _replace(node: Any, keys: list[str], value: str) -> Any:
    head, rest = keys[0], keys[1:]
    if isinstance(node, BaseModel):
        new = value if not rest else _replace(getattr(node, head), rest, value)
        return node.model_copy(update={head: new})
    if isinstance(node, list):
        copy = list(node)
        copy[int(head)] = _replace(copy[int(head)], rest, value)
        return copy
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    raise TypeError(f"cannot set {'.'.join(keys)} in {type(node).__name__}")
