"""Reading the project's YAML input files (process model, customer configs) so a bad file is one clear error.

Every reader returns a mapping or raises :class:`InputFileError` with ``"<file>: <field.path>: <message>"``
lines; nothing a file holds may crash or hang the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


class InputFileError(ValueError):
    """An input file (process model, customer config) is unreadable or invalid.

    ``problems`` holds one ``"<file>: <field.path>: <message>"`` line per problem; ``str()`` joins them.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


_BaseSafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser is ~5x faster


class _StrictSafeLoader(_BaseSafeLoader):  # type: ignore[misc,valid-type]
    """A safe YAML loader that rejects duplicate mapping keys instead of silently keeping the last."""


def _construct_mapping_without_duplicates(loader: _StrictSafeLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first defined on line {seen[key].line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=True)


_StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_without_duplicates
)


def read_yaml_mapping(path: Path, error: type[InputFileError] = InputFileError) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping; syntax errors name file, line and column."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(source, [f"{source}: cannot read file: {reason}"]) from exc
    try:
        data = yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506  a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(source, [f"{source}: {_describe_yaml_error(exc)}"]) from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise error(source, [f"{source}: (top level): must be a mapping of fields, the file is {kind}"])
    return data


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({context} that began on line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    return f"{where}invalid YAML: {problem}"
