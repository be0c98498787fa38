"""Typed configs loaded from YAML: unknown keys are errors, and errors name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from editcaption.images import ImagePolicy

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class JobInputs(BaseModel):
    """What every pair-processing job reads, and where it runs; jobs add their own fields."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="Pairs: a local path or object-store URI in any supported layout.")
    format: str = Field("auto", description="auto, folder, manifest, hqedit, bytemorph or webdataset.")
    output: str = Field(description="Output folder or URI.")
    limit: int | None = Field(None, ge=1, description="Read at most this many pairs.")
    images: ImagePolicy = Field(default_factory=ImagePolicy, description="Which images are accepted.")
    ray_address: str | None = Field(None, description="Join this Ray cluster instead of starting one.")


class ConfigError(ValueError):
    """A config file that is missing, not YAML, or does not match its model."""


def load_config(path: str | Path, model: type[ConfigT], overrides: dict | None = None) -> ConfigT:
    """Read `path` as YAML, apply top-level `overrides` (e.g. from the command line), validate."""
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
        return model.model_validate(data)
    except ValidationError as e:
        from editcaption.redaction import redact_text

        lines = [f"{path}: {len(e.errors())} problem(s) in the config"]
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {redact_text(err['msg'])}")
        raise ConfigError("\n".join(lines)) from e
