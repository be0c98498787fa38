"""Typed configs loaded from YAML: unknown keys are errors, and errors name the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from editcaption.images import ImagePolicy
from editcaption.paths import InputPath, OutputPath, PathError, resolve_config_paths

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class JobInputs(BaseModel):
    """What every pair-processing job reads, and where it runs; jobs add their own fields."""

    model_config = ConfigDict(extra="forbid")

    input: InputPath = Field(description="Pairs: a local path or object-store URI in any supported layout.")
    format: str = Field("auto", description="auto, folder, manifest, hqedit, bytemorph or webdataset.")
    output: OutputPath = Field(description="Output folder or URI.")
    limit: int | None = Field(None, ge=1, description="Read at most this many pairs.")
    images: ImagePolicy = Field(default_factory=ImagePolicy, description="Which images are accepted.")
    ray_address: str | None = Field(None, description="Join this Ray cluster instead of starting one.")


class ConfigError(ValueError):
    """A config file that is missing, not YAML, or does not match its model."""


def load_config(
    path: str | Path, model: type[ConfigT], overrides: dict | None = None, resolve_paths: bool = False
) -> ConfigT:
    """Read `path` as YAML, apply top-level `overrides` (e.g. from the command line), validate.

    `resolve_paths` (what commands that run a job ask for): make every local path absolute against
    the working directory and check model paths (`paths.resolve_config_paths`), before anything is
    shipped to Ray workers, which run elsewhere.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, not {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        config = model.model_validate(data)
    except ValidationError as e:
        from editcaption.redaction import redact_text

        lines = [f"{path}: {len(e.errors())} problem(s) in the config"]
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {redact_text(err['msg'])}")
        raise ConfigError("\n".join(lines)) from e
    if not resolve_paths:
        return config
    try:
        return resolve_config_paths(config)
    except PathError as e:
        raise ConfigError(f"{path}: {e}") from e


def set_overrides(
    base: dict[str, Any], sets: list[str], aliases: dict[str, str] | None = None
) -> dict[str, Any]:
    """Top-level overrides from `--set KEY=VALUE` items (VALUE is YAML). Dotted keys reach nested
    fields and list items (`workers.num_workers=4`, `captioners.0.engine.model=m`), keeping the file's
    other values beside them; `aliases` maps a short key to the dotted one it stands for."""
    data = copy.deepcopy(base)
    touched: list[str] = []
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        keys = (aliases or {}).get(key, key).split(".")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not YAML: {e}") from e
        _set_key(data, keys, value, item)
        touched.append(keys[0])
    return {key: data[key] for key in touched}


def _set_key(node: Any, keys: list[str], value: Any, item: str) -> None:
    head, rest = keys[0], keys[1:]
    if isinstance(node, list):
        if not head.isdigit() or int(head) >= len(node):
            raise ConfigError(f"--set {item!r}: {head} is not an index of a list of {len(node)} item(s)")
        index: Any = int(head)
    else:
        index = head
        if rest and node.get(head) is None:
            node[head] = {}
    if not rest:
        node[index] = value
        return
    if not isinstance(node[index], dict | list):
        raise ConfigError(f"--set {item!r}: {head} holds {node[index]!r}, not a mapping or a list")
    _set_key(node[index], rest, value, item)
