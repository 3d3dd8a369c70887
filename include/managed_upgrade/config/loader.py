"""Reading customer config files, so every caller reports a bad file the same way and never crashes others.

Errors come as :class:`CustomerConfigError` with one ``"<file>: <field.path>: <message>"`` line per
problem; :func:`load_customer_configs` loads a whole directory and keeps going past broken files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from managed_upgrade.config.models import CustomerConfig
from managed_upgrade.config.test_cases import TEST_CASE_KINDS
from managed_upgrade.input_files import InputFileError, read_yaml_mapping
from managed_upgrade.process import ProcessModel, ProcessModelError
from managed_upgrade.safe import format_errors

CONFIG_SUFFIX = ".yaml"


class CustomerConfigError(InputFileError):
    """A customer config file is unreadable or invalid; ``problems`` has one line per problem."""


def parse_customer_config(
    data: Mapping[str, Any],
    source: str,
    *,
    file_stem: str | None = None,
    process: ProcessModel | None = None,
) -> CustomerConfig:
    """Validate already-parsed config data; ``file_stem`` (if given) must equal ``customer_id``."""
    try:
        config = CustomerConfig.model_validate(
            data, context={"file_stem": file_stem, "process_model": process}
        )
    except ValidationError as exc:
        raise CustomerConfigError(source, format_errors(exc, source, union_tags=TEST_CASE_KINDS)) from None
    except ProcessModelError as exc:  # the process model itself is broken: say so, per customer
        raise CustomerConfigError(
            source, [f"{source}: duration_overrides: {line}" for line in exc.problems]
        ) from None
    config._source = source
    return config


def load_customer_config(path: Path | str, *, process: ProcessModel | None = None) -> CustomerConfig:
    """Load ``<customer_id>.yaml``; raises :class:`CustomerConfigError` listing every problem."""
    path = Path(path)
    data = read_yaml_mapping(path, CustomerConfigError)
    return parse_customer_config(data, str(path), file_stem=path.stem, process=process)


def customer_config_paths(directory: Path | str) -> list[Path]:
    """The ``*.yaml`` files of a directory, sorted; hidden files are ignored."""
    return sorted(path for path in Path(directory).glob(f"*{CONFIG_SUFFIX}") if not path.name.startswith("."))


def load_customer_configs(
    directory: Path | str, *, process: ProcessModel | None = None
) -> tuple[dict[str, CustomerConfig], dict[Path, CustomerConfigError]]:
    """Every config in ``directory``: ``({customer_id: config}, {path: error})``; never raises per file."""
    configs: dict[str, CustomerConfig] = {}
    errors: dict[Path, CustomerConfigError] = {}
    for path in customer_config_paths(directory):
        try:
            configs[path.stem] = load_customer_config(path, process=process)
        except CustomerConfigError as exc:
            errors[path] = exc
    return configs, errors
