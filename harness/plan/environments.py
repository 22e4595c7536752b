"""The environments axis of a config: its entries (`environments:`) and the
`qkbench run --env NAME=PYTHON` items merged into them. What an environment is at run time
(its interpreter asked what it has) is `qkbench.measure.environments`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from qkbench.errors import UsageError


class EnvironmentEntry(BaseModel):
    """One environment of the environments axis (docs/environments.md): an interpreter with its
    own installed qkbench, backends and libraries, run as given (a virtual environment's
    python, a wrapper script, a pyenv shim), plus variables and import paths of its own."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)  # as every section

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    python: str = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)  # set in its workers' environment
    paths: list[str] = Field(default_factory=list)  # put before PYTHONPATH in its workers


def unique_environments(environments: list[EnvironmentEntry]) -> list[EnvironmentEntry]:
    names = [environment.name for environment in environments]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"the name {repeated[0]!r} is used twice")
    if len(environments) == 1:
        # One environment is a run in another interpreter, with nothing to pair it with.
        raise ValueError("name two or more environments (or none)")
    return environments


def with_environments(config: Any, pairs: list[str]) -> list[dict[str, Any]]:
    """The config's environments with `--env NAME=PYTHON` items applied: a name the config
    already has gets that interpreter (its variables and paths kept), a new one is added."""
    merged = {e.name: e.model_dump() for e in config.environments}
    for item in pairs:
        name, sep, python = item.partition("=")
        if not sep or not name or not python:
            raise UsageError(f"--env: {item!r} must look like NAME=PYTHON")
        merged[name] = {**merged.get(name, {"name": name}), "python": python}
    return list(merged.values())
