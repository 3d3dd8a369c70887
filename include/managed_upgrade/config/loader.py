"""Reading customer config files, so every caller reports a bad file the same way and never crashes others.

Errors come as :class:`CustomerConfigError` with one ``"<file>: <field.path>: <message>"`` line per
problem; :func:`load_customer_configs` loads a whole directory and keeps going past broken files.

Whatever a file holds and whatever kind of file it is, loading it gives a config or a
:class:`CustomerConfigError`, in bounded time and memory: :mod:`managed_upgrade.input_files` reads
regular files only, within size, nesting and alias limits, and any other exception raised while
reading or validating one file becomes a :class:`CustomerConfigError` for that file. Messages quote at
most :data:`~managed_upgrade.input_files.MAX_SHOWN` characters of a value, a file reports at most
:data:`MAX_PROBLEMS` problems and no line is longer than :data:`MAX_LINE` characters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from managed_upgrade.config.models import CustomerConfig
from managed_upgrade.config.test_cases import TEST_CASE_KINDS
from managed_upgrade.input_files import MAX_SHOWN, InputFileError, display_path, read_yaml_mapping, shorten
from managed_upgrade.process.model import ProcessModel, ProcessModelError
from managed_upgrade.vocabulary import format_errors

CONFIG_SUFFIX = ".yaml"
MAX_PROBLEMS = 30
"""Problems reported per file; a file with more gets a last line saying how many were left out."""
MAX_LINE = 1_000
"""Longest problem line (file name included); a longer one loses its middle."""


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
        lines = format_errors(_ShortInputs(exc), source, union_tags=TEST_CASE_KINDS)  # type: ignore[arg-type]
        raise CustomerConfigError(source, _bounded(source, lines)) from None
    except ProcessModelError as exc:  # the process model itself is broken: say so, per customer
        lines = [f"{source}: duration_overrides: {line}" for line in exc.problems]
        raise CustomerConfigError(source, _bounded(source, lines)) from None
    except Exception as exc:  # a bug in a validator must not take the other customers down
        raise CustomerConfigError(source, [_unexpected(source, exc)]) from None
    config._source = source
    return config


def load_customer_config(path: Path | str, *, process: ProcessModel | None = None) -> CustomerConfig:
    """Load ``<customer_id>.yaml``; raises :class:`CustomerConfigError` listing every problem.

    Never raises anything else for what the file holds or is (FIFO, device, directory, symlink, huge,
    deeply nested, alias bomb, not UTF-8, ...): each becomes one clear problem line naming the file.
    """
    path = Path(path)
    source = display_path(path)
    try:
        data = read_yaml_mapping(path, CustomerConfigError)
        return parse_customer_config(data, source, file_stem=display_path(path.stem), process=process)
    except CustomerConfigError:  # reading and validating keep their lines short and few
        raise
    except Exception as exc:  # whatever else goes wrong stays this file's problem
        raise CustomerConfigError(source, [_unexpected(source, exc)]) from None


CUSTOMERS_DIR_VARIABLE = "MANAGED_UPGRADE_CUSTOMERS_DIR"
DEFAULT_CUSTOMERS_DIR = Path(__file__).resolve().parents[2] / "customers"
"""``include/customers`` of this project."""


def customers_dir() -> Path:
    """Where the deployment keeps the customer configs: ``$MANAGED_UPGRADE_CUSTOMERS_DIR`` or
    ``include/customers`` of this project."""
    return Path(os.environ.get(CUSTOMERS_DIR_VARIABLE) or DEFAULT_CUSTOMERS_DIR)


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
        except Exception as exc:  # load_customer_config converts everything; belt and braces
            source = display_path(path)
            errors[path] = CustomerConfigError(source, [_unexpected(source, exc)])
    return configs, errors


# --- keeping messages short ---------------------------------------------------------------------------


def _unexpected(source: str, exc: BaseException) -> str:
    try:
        detail = shorten(" ".join(str(exc).split()), 2 * MAX_SHOWN)
    except Exception:  # an exception that cannot even say what it is
        detail = ""
    return (
        f"{source}: (top level): could not be checked, {type(exc).__name__}"
        f"{': ' + detail if detail else ''} (please report this)"
    )


def _bounded(source: str, lines: Sequence[str]) -> list[str]:
    """At most :data:`MAX_PROBLEMS` lines of at most :data:`MAX_LINE` characters."""
    kept = [_short_line(line) for line in lines[:MAX_PROBLEMS]]
    if len(lines) > MAX_PROBLEMS:
        kept.append(f"{source}: (top level): … and {len(lines) - MAX_PROBLEMS} more problems")
    return kept


def _short_line(line: str) -> str:
    if len(line) <= MAX_LINE:
        return line
    half = (MAX_LINE - 3) // 2
    return f"{line[:half]} … {line[-half:]}"


_LONG_QUOTED = re.compile(rf"'([^'\n]{{{MAX_SHOWN},}})'|\"([^\"\n]{{{MAX_SHOWN},}})\"")


def _short_text(text: str) -> str:
    """``text`` with every quoted value cut to :data:`MAX_SHOWN` characters, and cut itself to 500."""
    text = _LONG_QUOTED.sub(lambda m: f"'{shorten(m.group(1) or m.group(2))}'", text)
    return shorten(text, 500)


class _ShortInputs:
    """A :class:`ValidationError` whose ``errors()`` quote no long value: what ``format_errors`` reads.

    The input shown with a problem (``(got '...')``), keys in the field path, discriminator tags and
    values quoted in messages are cut to :data:`MAX_SHOWN` characters, so a megabyte value comes back
    as 80 characters, not a megabyte.
    """

    def __init__(self, error: ValidationError) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._error, name)

    def errors(self, **kwargs: Any) -> list[Any]:
        return [self._shortened(detail) for detail in self._error.errors(**kwargs)]

    @staticmethod
    def _shortened(detail: Any) -> Any:
        detail = dict(detail)
        detail["loc"] = tuple(shorten(part) if isinstance(part, str) else part for part in detail["loc"])
        value = detail.get("input")
        if isinstance(value, str):
            detail["input"] = shorten(value)
        elif isinstance(value, bytes) and len(value) > MAX_SHOWN:
            detail["input"] = value[: MAX_SHOWN - 1] + b"..."
        if isinstance(detail.get("msg"), str):
            detail["msg"] = _short_text(detail["msg"])
        context = detail.get("ctx")
        if context:
            context = dict(context)
            for name in ("tag", "path"):
                if isinstance(context.get(name), str):
                    context[name] = shorten(context[name], 2 * MAX_SHOWN)
            if isinstance(context.get("problems"), list):
                context["problems"] = [
                    [shorten(str(path), 2 * MAX_SHOWN), _short_text(str(message))]
                    for path, message in context["problems"]
                ]
            detail["ctx"] = context
        return detail
