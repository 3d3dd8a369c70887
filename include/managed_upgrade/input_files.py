"""Reading the project's YAML input files (process model, customer configs) so a bad file is one clear error.

Every reader returns a mapping or raises :class:`InputFileError` with ``"<file>: <field.path>: <message>"``
lines; nothing a file holds, and no kind of file, may crash or hang the caller. Time and memory stay
bounded whatever the file is:

- only regular files are read: a FIFO, device, socket or directory is refused without reading it
  (``lstat`` first, then ``open`` with ``O_NONBLOCK | O_NOFOLLOW`` and ``fstat`` on the open file, so a
  swap between the checks cannot smuggle one in); a symlink is followed only to a regular file inside
  the file's own folder (its real path), so a config cannot pull in ``/etc/...`` or ``/dev/zero``;
- at most :data:`MAX_FILE_BYTES` are read, with a bounded read (a file growing meanwhile is refused);
- the text must be UTF-8 (a leading byte order mark is allowed) without control characters;
- YAML is parsed into events by libyaml and composed here without recursion, refusing nesting deeper
  than :data:`MAX_DEPTH` and more than :data:`MAX_VALUES` values once aliases are expanded ("billion
  laughs", merge-key bombs) *before* any Python object is built; recursive aliases, collections or
  non-text values as mapping keys, tags beyond plain YAML values, and more than one document are
  refused too;
- values quoted in messages are cut to :data:`MAX_SHOWN` characters.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    Event,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_FILE_BYTES = 1024 * 1024
"""Largest input file read (1 MiB): real configs are 2-4 KB and the process model ~14 KB."""

MAX_DEPTH = 64
"""Deepest nesting of mappings/lists: real files nest 6 levels; far below Python's recursion limit."""

MAX_VALUES = 100_000
"""Most values (scalars, lists, mappings) a file may hold with every alias expanded: real files hold a
few hundred; bounds what validation, DAG building and messages walk however aliases multiply."""

MAX_SHOWN = 80
"""Longest value (key, input, tag) quoted in a message; longer ones end in an ellipsis."""

_TAG = "tag:yaml.org,2002:"
_STR, _MERGE, _VALUE = f"{_TAG}str", f"{_TAG}merge", f"{_TAG}value"
_PLAIN_TAGS = {f"{_TAG}{name}" for name in ("null", "bool", "int", "float", "str", "timestamp", "seq", "map")}
_KEY_KINDS = {
    f"{_TAG}null": "null (no value)",
    f"{_TAG}bool": "a boolean",
    f"{_TAG}int": "a number",
    f"{_TAG}float": "a number",
    f"{_TAG}timestamp": "a date",
}
# Characters YAML refuses in a stream (YAML 1.1 "printable" set, complemented).
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_OTHER_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


class InputFileError(ValueError):
    """An input file (process model, customer config) is unreadable or invalid.

    ``problems`` holds one ``"<file>: <field.path>: <message>"`` line per problem; ``str()`` joins them.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis if anything was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_path(path: Path | str) -> str:
    """A path as messages show it: as is, but control characters and undecodable bytes escaped.

    Keeps a hostile file name (a newline, bytes that are not UTF-8) from splitting a message line or
    breaking whoever prints or stores it.
    """
    text = str(path)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def read_yaml_mapping(path: Path, error: type[InputFileError] = InputFileError) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping; problems name file, field or line and column."""
    source = display_path(path)
    raw = _read_bounded(Path(path), source, error)
    text = _decode(raw, source, error)
    try:
        data = _load_single_document(text)
    except _Refusal as exc:
        raise error(source, [f"{source}: {exc.where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise error(source, [f"{source}: {_describe_yaml_error(exc)}"]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise error(source, [f"{source}: (top level): must be a mapping of fields, the file is {kind}"])
    return data


# --- reading: regular files only, bounded -------------------------------------------------------------


def _read_bounded(path: Path, source: str, error: type[InputFileError]) -> bytes:
    def refuse(reason: str) -> InputFileError:
        return error(source, [f"{source}: cannot read file: {reason}"])

    try:
        target = _regular_target(path)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags)
        try:
            info = os.fstat(fd)  # what was opened, not what the path named a moment ago
            if not stat.S_ISREG(info.st_mode):
                raise _NotReadable(f"it is {_kind_of(info.st_mode)}, not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise _NotReadable(_too_big(info.st_size))
            chunks, size = [], 0
            while chunk := os.read(fd, min(64 * 1024, MAX_FILE_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise _NotReadable(_too_big(MAX_FILE_BYTES, at_least=True))
        finally:
            os.close(fd)
    except _NotReadable as exc:
        raise refuse(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse("it became a symlink while being read; try again") from None
        raise refuse(exc.strerror or type(exc).__name__) from None
    return b"".join(chunks)


class _NotReadable(Exception):
    """The path is not a file this module reads; the message says what it is."""


def _regular_target(path: Path) -> str:
    """The path to open: ``path`` itself, or the target of a symlink to a regular file in its folder."""
    info = os.lstat(path)
    if not stat.S_ISLNK(info.st_mode):
        if not stat.S_ISREG(info.st_mode):
            raise _NotReadable(f"it is {_kind_of(info.st_mode)}, not a regular file")
        return os.fspath(path)
    try:
        target = Path(path).resolve(strict=True)
    except RuntimeError:  # how Python 3.11 reports a symlink loop
        raise _NotReadable("it is a symlink loop") from None
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else "a symlink to nothing (dangling)"
        raise _NotReadable(f"it is {reason}") from None
    folder = Path(path).absolute().parent.resolve()
    shown = shorten(display_path(target), 2 * MAX_SHOWN)
    kind = target.stat().st_mode
    if not stat.S_ISREG(kind):
        raise _NotReadable(f"it is a symlink to {shown}, {_kind_of(kind)}, not a regular file")
    if not target.is_relative_to(folder):
        raise _NotReadable(
            f"it is a symlink to {shown}, outside the folder {shorten(display_path(folder), 2 * MAX_SHOWN)};"
            " only links to files inside the folder are followed (copy the file instead)"
        )
    return os.fspath(target)


def _kind_of(mode: int) -> str:
    kinds: list[tuple[Callable[[int], bool], str]] = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ]
    return next((name for check, name in kinds if check(mode)), "a special file")


def _too_big(size: int, *, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return f"it is {more}{size} bytes, over the {MAX_FILE_BYTES // 1024 // 1024} MiB an input file may hold"


def _decode(raw: bytes, source: str, error: type[InputFileError]) -> str:
    def refuse(offset: int, problem: str, text: str | bytes = raw) -> InputFileError:
        newline: Any = "\n" if isinstance(text, str) else b"\n"
        line = text.count(newline, 0, offset) + 1
        column = offset - (text.rfind(newline, 0, offset) + 1) + 1
        return error(source, [f"{source}: line {line}, column {column}: {problem}"])

    for bom, encoding in _OTHER_BOMS.items():
        if raw.startswith(bom):
            raise refuse(0, f"the file is {encoding} text; save it as UTF-8")
    if raw.startswith(codecs.BOM_UTF8):  # allowed by YAML; dropped so positions stay right
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start : exc.start + 1].hex()
        raise refuse(exc.start, f"not UTF-8 text (byte 0x{byte}); save the file as UTF-8") from None
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        code = f"U+{ord(bad.group()):04X}"
        hint = " (is it a binary or UTF-16 file?)" if bad.group() == "\x00" else ""
        raise refuse(
            bad.start(),
            f"invalid YAML: control character {code} is not allowed in a YAML file{hint}",
            text,
        ) from None
    return text


# --- parsing: events -> nodes (bounded) -> Python objects ----------------------------------------------


def _line(event: Event) -> int:
    """The 1-based line where ``event`` starts (both parsers mark every event)."""
    assert event.start_mark is not None
    return event.start_mark.line + 1


class _Refusal(Exception):
    """A structural limit or rule of the composer broken; ``where`` is a field path."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


class _StrictConstructor(SafeConstructor):
    """Safe construction that names the value it cannot build and refuses duplicate mapping keys."""

    explicit_pairs: dict[int, list[tuple[Node, Node]]]  # set by the composer: pairs before `<<` merges

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # e.g. 2026-02-30, an integer of 5000 digits
            kind = _KEY_KINDS.get(node.tag, "value").removeprefix("a ")
            problem = f"invalid {kind}"
            if isinstance(node, ScalarNode):
                problem += f" {shorten(repr(node.value))}"
            if isinstance(exc, ValueError):  # says what is wrong: "day is out of range for month"
                problem += f": {shorten(str(exc).split(';')[0], 2 * MAX_SHOWN)}"
            raise ConstructorError(None, None, problem, node.start_mark) from None

    def construct_undefined(self, node: Node) -> Any:  # the composer lets no such tag through
        raise ConstructorError(None, None, f"unsupported tag {shorten(repr(node.tag))}", node.start_mark)


def _construct_mapping_without_duplicates(loader: _StrictConstructor, node: MappingNode) -> Any:
    seen: dict[Any, yaml.Mark] = {}
    pairs: list[tuple[Node, Node]] = node.value
    for key_node, _ in loader.explicit_pairs.get(id(node), pairs):
        if key_node.tag == _MERGE:
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {shorten(repr(key))} (first defined on line {seen[key].line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return SafeConstructor.construct_yaml_map(loader, node)


# The stubs accept only yaml's own loader classes here; any constructor class works.
_StrictConstructor.add_constructor(f"{_TAG}map", _construct_mapping_without_duplicates)  # type: ignore[type-var]


class _PyEventParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python parser: the fallback without libyaml (same events, ~5x slower)."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)

    def dispose(self) -> None:
        """Nothing to free (libyaml's parser has C memory to free)."""


class _EventParser(Protocol):
    """What the composer uses of a parser: its events."""

    def get_event(self) -> Event | None: ...

    def check_event(self, *choices: type[Event]) -> bool: ...

    def dispose(self) -> None: ...


_parser: Callable[[str], _EventParser]
"""The event parser: libyaml's if PyYAML has it; only its events are used (its composer recurses in C)."""
try:
    from yaml._yaml import CParser as _LibyamlParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _parser = _PyEventParser
else:
    _parser = _LibyamlParser


class _Loader(_StrictConstructor, Resolver):
    def __init__(self) -> None:
        _StrictConstructor.__init__(self)
        Resolver.__init__(self)
        self.explicit_pairs = {}

    if TYPE_CHECKING:  # untyped in the stubs

        def resolve(self, kind: type[Node], value: str | None, implicit: bool | tuple[bool, bool]) -> str: ...


def _load_single_document(text: str) -> Any:
    """The Python value of the one YAML document in ``text`` (``None`` if there is none)."""
    parser = _parser(text)
    loader = _Loader()
    try:
        parser.get_event()  # stream start
        if parser.check_event(StreamEndEvent):
            return None
        parser.get_event()  # document start
        node = _Composer(parser, loader).compose()
        parser.get_event()  # document end
        if not parser.check_event(StreamEndEvent):
            second = parser.get_event()
            assert second is not None  # check_event saw it
            raise _Refusal(
                "(top level)",
                f"a second YAML document starts on line {_line(second)}; "
                "an input file holds exactly one (remove the '---' or '...' line)",
            )
        return loader.construct_document(node)
    finally:
        parser.dispose()


@dataclass
class _Frame:
    node: Node
    label: str | None = None  # for a mapping: the current key's text while its value is composed
    key: Node | None = None  # for a mapping: the key whose value comes next
    anchor: str | None = None
    expanded: int = 1  # values inside, aliases expanded, this collection included


class _Composer:
    """Builds the node graph of one document from parser events, iteratively and within the limits."""

    def __init__(self, parser: _EventParser, loader: _Loader) -> None:
        self.parser, self.loader = parser, loader
        self.anchors: dict[str, Node] = {}
        self.expanded: dict[str, int] = {}  # anchor -> values under it, once its node is complete
        self.total = 0
        self.stack: list[_Frame] = []

    def compose(self) -> Node:
        while True:
            event = self.parser.get_event()
            if isinstance(event, MappingEndEvent | SequenceEndEvent):
                frame = self.stack.pop()
                frame.node.end_mark = event.end_mark
                if isinstance(frame.node, MappingNode):
                    self.loader.explicit_pairs[id(frame.node)] = list(frame.node.value)
                if frame.anchor is not None:
                    self.expanded[frame.anchor] = frame.expanded
                node, size = frame.node, frame.expanded
            elif isinstance(event, AliasEvent):
                node, size = self._alias(event)
            elif isinstance(event, ScalarEvent):
                node, size = self._scalar(event), 1
            elif isinstance(event, CollectionStartEvent):
                self._start_collection(event)
                continue
            else:  # pragma: no cover - the parser emits nothing else inside a document
                raise _Refusal(self._where(), f"unexpected YAML event {type(event).__name__}")
            if not self.stack:
                if not self.parser.check_event(DocumentEndEvent):  # pragma: no cover - parser guarantees
                    raise _Refusal("(top level)", "unexpected content after the document")
                return node
            self._attach(node, size, event)

    def _count(self, size: int, event: Event) -> None:
        self.total += size
        if self.total > MAX_VALUES:
            expanded = " with aliases expanded" if self.anchors else ""
            raise _Refusal(
                self._where(),
                f"more than {MAX_VALUES} values{expanded} (line {_line(event)}); "
                "an input file holds far fewer",
            )

    def _register(self, anchor: str | None, node: Node, event: Event) -> None:
        if anchor is None:
            return
        if anchor in self.anchors:
            first = self.anchors[anchor].start_mark.line + 1
            raise _Refusal(
                self._where(),
                f"anchor &{shorten(anchor)} defined twice (lines {first} and {_line(event)})",
            )
        self.anchors[anchor] = node

    def _scalar(self, event: ScalarEvent) -> ScalarNode:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
            if tag == _VALUE or (tag == _MERGE and not self._is_key_position()):
                tag = _STR  # "=" and a "<<" that is not a key are plain text, not YAML oddities
        self._check_tag(tag, event)
        # The stubs type node marks as yaml.Mark; libyaml's events carry its own, equivalent Mark.
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)  # type: ignore[arg-type]
        self._register(event.anchor, node, event)
        if event.anchor is not None:
            self.expanded[event.anchor] = 1
        self._count(1, event)
        return node

    def _alias(self, event: AliasEvent) -> tuple[Node, int]:
        anchor = event.anchor
        assert anchor is not None  # an alias always names its anchor
        if anchor not in self.anchors:
            raise _Refusal(
                self._where(), f"alias *{shorten(anchor)} has no anchor &{shorten(anchor)} before it"
            )
        if anchor not in self.expanded:
            raise _Refusal(
                self._where(),
                f"alias *{shorten(anchor)} is inside the value it refers to (line "
                f"{_line(event)}); recursive structures are not allowed",
            )
        size = self.expanded[anchor]
        self._count(size, event)
        return self.anchors[anchor], size

    def _start_collection(self, event: CollectionStartEvent) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise _Refusal(
                self._where(),
                f"nested more than {MAX_DEPTH} levels deep (line {_line(event)}); "
                "an input file needs far fewer",
            )
        if self._is_key_position():
            raise _Refusal(
                self._where(),
                f"a mapping key must be a single value, not a "
                f"{'list' if isinstance(event, SequenceStartEvent) else 'mapping'} "
                f"(line {_line(event)})",
            )
        kind: type[CollectionNode] = SequenceNode if isinstance(event, SequenceStartEvent) else MappingNode
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(kind, None, event.implicit)
        self._check_tag(tag, event)
        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)  # type: ignore[arg-type]  # as above
        self._register(event.anchor, node, event)
        self._count(1, event)
        self.stack.append(_Frame(node, anchor=event.anchor))

    def _attach(self, node: Node, size: int, event: Event) -> None:
        parent = self.stack[-1]
        parent.expanded += size
        if isinstance(parent.node, SequenceNode):
            parent.node.value.append(node)
        elif parent.key is None:
            if not isinstance(node, ScalarNode):
                raise _Refusal(
                    self._where(),
                    f"a mapping key must be a single value, not an alias of a list or mapping "
                    f"(line {_line(event)})",
                )
            if node.tag not in (_STR, _MERGE):
                text = "an empty key" if node.value == "" else f"key {shorten(repr(node.value))}"
                raise _Refusal(
                    self._where(),
                    f"{text} is read as {_KEY_KINDS.get(node.tag, node.tag)}, not as text "
                    f"(line {node.start_mark.line + 1}); put a key in quotes to make it text",
                )
            parent.key, parent.label = node, node.value
        else:
            parent.node.value.append((parent.key, node))
            parent.key, parent.label = None, None

    def _is_key_position(self) -> bool:
        return (
            bool(self.stack) and isinstance(self.stack[-1].node, MappingNode) and self.stack[-1].key is None
        )

    def _check_tag(self, tag: str, event: Event) -> None:
        if tag in _PLAIN_TAGS or (tag == _MERGE and self._is_key_position()):
            return
        shown = shorten(tag.replace(_TAG, "!!", 1) if tag.startswith(_TAG) else tag)
        raise _Refusal(
            self._where(),
            f"unsupported YAML tag {shown} (line {_line(event)}); values are plain "
            "text, numbers, booleans, dates, lists and mappings",
        )

    def _where(self) -> str:
        """The field path being composed, e.g. ``environments.dev.install_path`` or ``test_cases[2]``."""
        steps = []
        for frame in self.stack:
            if isinstance(frame.node, SequenceNode):
                steps.append(f"[{len(frame.node.value)}]")
            elif frame.label is not None:
                steps.append(f".{shorten(display_path(frame.label), 40)}")
        if len(steps) > 8:  # deep nesting: the first and the last steps tell where
            steps = [*steps[:3], "…", *steps[-5:]]
        text = "".join(steps).removeprefix(".")
        return text or "(top level)"


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({context} that began on line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    return f"{where}invalid YAML: {shorten(' '.join(problem.split()), 4 * MAX_SHOWN)}"
