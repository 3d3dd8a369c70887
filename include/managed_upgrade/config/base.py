"""The base of every config model and the environment names, shared by the config and its test cases."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

EnvironmentName = Literal["dev", "uat", "prod"]
ENVIRONMENT_NAMES: tuple[EnvironmentName, ...] = ("dev", "uat", "prod")

Scalar = StrictStr | StrictBool | StrictInt | StrictFloat | None
"""A YAML scalar as written (no coercion): expected values of SQL test cases."""


class StrictModel(BaseModel):
    """Unknown fields are refused (a misspelt key is an error, not a silent default); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
