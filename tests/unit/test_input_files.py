"""Hostile input files: whatever a customer file is or holds, the loader never crashes and never hangs.

Every kind of file (FIFO, device, directory, symlink, huge, unreadable) and every class of content (deep
nesting, alias bombs, merge keys, tags, non-text keys, several documents, bytes that are not UTF-8, ...)
gives either a valid config or one clear ``<file>: <field.path>: <problem>`` line naming the file, in
bounded time and memory (pytest-timeout catches a hang; ``tracemalloc`` bounds what Python allocates).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from managed_upgrade import input_files
from managed_upgrade.config import (
    CustomerConfig,
    CustomerConfigError,
    load_customer_config,
    load_customer_configs,
    parse_customer_config,
)
from managed_upgrade.config.__main__ import main as lint
from managed_upgrade.config.loader import MAX_LINE, MAX_PROBLEMS
from managed_upgrade.input_files import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_SHOWN,
    MAX_VALUES,
    InputFileError,
    display_path,
    read_yaml_mapping,
)
from managed_upgrade_airflow.dag_registry import describe_errors, shard_of

REPO = Path(__file__).resolve().parents[2]
ACME = REPO / "include" / "customers" / "acme.yaml"
MEMORY_BUDGET = 64 * 1024 * 1024
"""Peak Python allocation allowed while loading one hostile file (a bomb would take gigabytes)."""


def acme_text(customer_id: str = "acme") -> str:
    return ACME.read_text(encoding="utf-8").replace("customer_id: acme\n", f"customer_id: {customer_id}\n")


def problems_of(path: Path) -> tuple[str, ...]:
    """The problem lines of loading ``path``; each names the file and none is long."""
    with pytest.raises(CustomerConfigError) as caught:
        load_customer_config(path)
    problems = caught.value.problems
    assert problems
    for line in problems:
        assert line.startswith(f"{display_path(path)}: "), line
        assert len(line) <= MAX_LINE, len(line)
        assert "\n" not in line
    return problems


def the_problem(path: Path) -> str:
    """The single problem of ``path``, without the leading ``<file>: ``."""
    [line] = problems_of(path)
    return line.removeprefix(f"{display_path(path)}: ")


def within_memory(load: Callable[[], Any]) -> Any:
    """Run ``load`` and check Python never held more than :data:`MEMORY_BUDGET` meanwhile."""
    tracemalloc.start()
    try:
        try:
            return load()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert peak < MEMORY_BUDGET, f"peak {peak} bytes"


# --- kinds of file --------------------------------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inner.yaml").write_text(acme_text())


def _link_to(target: str | Path) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _link_to_fifo(path: Path) -> None:
    os.mkfifo(path.with_suffix(".pipe"))
    path.symlink_to(path.with_suffix(".pipe").name)


def _link_to_directory(path: Path) -> None:
    path.with_suffix(".d").mkdir()
    path.symlink_to(path.with_suffix(".d").name)


def _link_outside(path: Path) -> None:
    outside = path.parent.parent / f"{path.parent.name}-elsewhere-{path.stem}"
    outside.mkdir()
    (outside / "acme.yaml").write_text(acme_text())
    path.symlink_to(outside / "acme.yaml")


def _sparse_huge(path: Path) -> None:
    with path.open("wb") as file:
        file.truncate(4 * 1024**3)  # 4 GiB of holes: reading it would take the memory


def _just_over(path: Path) -> None:
    path.write_bytes(b"#" * (MAX_FILE_BYTES + 1))


FILE_KINDS: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, r"it is a FIFO \(named pipe\), not a regular file"),
    "directory named *.yaml": (_directory, r"it is a directory, not a regular file"),
    "symlink to a fifo": (
        _link_to_fifo,
        r"it is a symlink to .*\.pipe, a FIFO \(named pipe\), not a regular file",
    ),
    "symlink to a directory": (
        _link_to_directory,
        r"it is a symlink to .*\.d, a directory, not a regular file",
    ),
    "symlink to /dev/zero": (
        _link_to("/dev/zero"),
        r"it is a symlink to /dev/zero, a character device, not a regular file",
    ),
    "symlink to /dev/urandom": (
        _link_to("/dev/urandom"),
        r"it is a symlink to /dev/urandom, a character device, not a regular file",
    ),
    "symlink outside the folder": (
        _link_outside,
        r"it is a symlink to .*-elsewhere-\w+/acme\.yaml, outside the folder .*; only links to files "
        r"inside the folder are followed \(copy the file instead\)",
    ),
    "symlink to /etc/passwd": (
        _link_to("/etc/passwd"),
        r"it is a symlink to /etc/passwd, outside the folder .*",
    ),
    "dangling symlink": (_link_to("missing.yaml"), r"it is a symlink to nothing \(dangling\)"),
    "symlink loop": (lambda path: path.symlink_to(path.name), r"it is a symlink loop"),
    "missing": (lambda path: None, r"No such file or directory"),
    "sparse 4 GiB file": (_sparse_huge, r"it is 4294967296 bytes, over the 1 MiB an input file may hold"),
    "one byte over the limit": (_just_over, rf"it is {MAX_FILE_BYTES + 1} bytes, over the 1 MiB .*"),
}


@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
def test_only_regular_files_inside_the_folder_are_read(kind: str, tmp_path: Path) -> None:
    make, expected = FILE_KINDS[kind]
    path = tmp_path / "acme.yaml"
    make(path)
    problem = within_memory(lambda: the_problem(path))
    assert re.fullmatch(f"cannot read file: {expected}", problem), problem


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_given_directly_is_refused_unread(device: str) -> None:
    problem = within_memory(lambda: the_problem(Path(device)))
    assert problem == "cannot read file: it is a character device, not a regular file"


def test_a_socket_is_refused() -> None:
    folder = Path(tempfile.mkdtemp(prefix="mu-"))  # a socket path must be short
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(folder / "acme.yaml"))
            assert the_problem(folder / "acme.yaml") == "cannot read file: it is a socket, not a regular file"
    finally:
        shutil.rmtree(folder)


def test_an_unreadable_file_is_refused() -> None:
    """Root reads files whatever their mode, so as root the check runs in a child that became ``nobody``."""
    folder = Path(tempfile.mkdtemp(prefix="mu-unreadable-"))
    try:
        folder.chmod(0o755)
        path = folder / "acme.yaml"
        path.write_text(acme_text())
        path.chmod(0)
        problem = the_problem(path) if os.geteuid() != 0 else as_nobody(lambda: the_problem(path))
        assert problem == "cannot read file: Permission denied"
    finally:
        shutil.rmtree(folder)


def as_nobody(check: Callable[[], str]) -> str:
    """``check()`` run in a forked child that dropped root for the ``nobody`` user; its result text."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child)
        status = 0
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(writer, check().encode())
        except BaseException as exc:
            os.write(writer, f"child failed: {exc!r}".encode())
            status = 1
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(child, 0)
    return result


def test_symlinks_to_regular_files_inside_the_folder_are_followed(tmp_path: Path) -> None:
    """Like a Kubernetes ConfigMap: ``acme.yaml -> ..data/acme.yaml``, ``..data -> ..2026_01_01/``."""
    (tmp_path / "..2026_01_01").mkdir()
    (tmp_path / "..2026_01_01" / "acme.yaml").write_text(acme_text())
    (tmp_path / "..data").symlink_to("..2026_01_01")
    (tmp_path / "acme.yaml").symlink_to("..data/acme.yaml")
    assert load_customer_config(tmp_path / "acme.yaml").customer_id == "acme"
    configs, errors = load_customer_configs(tmp_path)
    assert (set(configs), errors) == ({"acme"}, {})


def test_a_folder_reached_through_a_symlink_still_counts_as_inside(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "acme.src").write_text(acme_text())
    (tmp_path / "real" / "acme.yaml").symlink_to("acme.src")
    (tmp_path / "customers").symlink_to("real")
    assert load_customer_config(tmp_path / "customers" / "acme.yaml").customer_id == "acme"


def test_a_file_of_exactly_the_size_limit_is_read(tmp_path: Path) -> None:
    text = acme_text()
    path = tmp_path / "acme.yaml"
    path.write_bytes(text.encode() + b"#" * (MAX_FILE_BYTES - len(text.encode())))
    assert path.stat().st_size == MAX_FILE_BYTES
    assert load_customer_config(path).customer_id == "acme"


# --- a file swapped between the check and the open: the open file itself is checked ------------------


@pytest.fixture
def unchecked_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the path had been a regular file at ``lstat`` and was swapped before ``open``."""
    monkeypatch.setattr(input_files, "_regular_target", os.fspath)


def test_a_fifo_swapped_in_is_refused_without_blocking(tmp_path: Path, unchecked_paths: None) -> None:
    _fifo(tmp_path / "acme.yaml")
    problem = the_problem(tmp_path / "acme.yaml")
    assert problem == "cannot read file: it is a FIFO (named pipe), not a regular file"


def test_a_symlink_swapped_in_is_not_followed(tmp_path: Path, unchecked_paths: None) -> None:
    path = tmp_path / "acme.yaml"
    path.symlink_to("/dev/zero")
    assert the_problem(path) == "cannot read file: it became a symlink while being read; try again"


def test_a_directory_swapped_in_is_refused(tmp_path: Path, unchecked_paths: None) -> None:
    _directory(tmp_path / "acme.yaml")
    problem = the_problem(tmp_path / "acme.yaml")
    assert problem == "cannot read file: it is a directory, not a regular file"


def test_a_device_swapped_in_is_refused(unchecked_paths: None) -> None:
    assert the_problem(Path("/dev/zero")) == "cannot read file: it is a character device, not a regular file"


def test_the_read_is_bounded_even_if_the_file_grows_after_fstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "acme.yaml"
    path.write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 5))
    real_fstat = os.fstat

    def fstat_when_it_was_small(fd: int) -> os.stat_result:
        info = list(real_fstat(fd))
        info[stat.ST_SIZE] = 100
        return os.stat_result(info)

    monkeypatch.setattr(input_files.os, "fstat", fstat_when_it_was_small)
    problem = within_memory(lambda: the_problem(path))
    assert (
        problem
        == f"cannot read file: it is more than {MAX_FILE_BYTES} bytes, over the 1 MiB an input file may hold"
    )


# --- what a file holds ------------------------------------------------------------------------------


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    return "\n".join(lines) + "\n"


def _merge_bomb() -> str:
    lines = ["m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{k}: &m{k} {{<<: [*m{k - 1}, *m{k - 1}], k{k}: 1}}" for k in range(1, 60)]
    return "\n".join(lines) + "\n"


CONTENT: dict[str, tuple[bytes | str, str]] = {
    # encodings and characters
    "latin-1 byte": (
        "name: Müller\n".encode("latin-1"),
        r"line 1, column 8: not UTF-8 text \(byte 0xfc\); save the file as UTF-8",
    ),
    "truncated UTF-8": (
        b"name: \xe2\x82\n",
        r"line 1, column 7: not UTF-8 text \(byte 0xe2\); save the file as UTF-8",
    ),
    "random binary": (
        bytes(range(128, 256)) + bytes(range(128)),
        r"line 1, column 1: not UTF-8 text \(byte 0x80\); .*",
    ),
    "UTF-16 with BOM": (
        acme_text().encode("utf-16"),
        r"line 1, column 1: the file is UTF-16 text; save it as UTF-8",
    ),
    "UTF-32 with BOM": (
        acme_text().encode("utf-32"),
        r"line 1, column 1: the file is UTF-32 text; save it as UTF-8",
    ),
    "UTF-16 without BOM": (
        acme_text().encode("utf-16-le"),
        r"line 1, column 2: invalid YAML: control character U\+0000 is not allowed in a YAML file "
        r"\(is it a binary or UTF-16 file\?\)",
    ),
    "NUL byte": (
        b"customer_id: acme\nname: AC\x00ME\n",
        r"line 2, column 9: invalid YAML: control character U\+0000 is not allowed in a YAML file "
        r"\(is it .*\)",
    ),
    "escape character": (
        "name: \x1b[31mred\n",
        r"line 1, column 7: invalid YAML: control character U\+001B is not allowed in a YAML file",
    ),
    # structure
    "empty file": ("", r"\(top level\): must be a mapping of fields, the file is empty"),
    "only comments": ("# nothing\n", r"\(top level\): must be a mapping of fields, the file is empty"),
    "a list": ("- a\n- b\n", r"\(top level\): must be a mapping of fields, the file is a list"),
    "a scalar": ("hello\n", r"\(top level\): must be a mapping of fields, the file is a str"),
    "two documents": (
        "customer_id: acme\n---\ncustomer_id: evil\n",
        r"\(top level\): a second YAML document starts on line 2; an input file holds exactly one .*",
    ),
    "document end then more": (
        "customer_id: acme\n...\n---\nx: 1\n",
        r"\(top level\): a second YAML document starts on line 3; .*",
    ),
    "syntax error": ("a: [unclosed\n", r"line 2, column 1: invalid YAML: .*"),
    "duplicate key": (
        "customer_id: acme\nname: A\nname: B\n",
        r"line 3, column 1: invalid YAML: found duplicate key 'name' \(first defined on line 2\) "
        r"\(while constructing a mapping that began on line 1\)",
    ),
    "duplicate key, one quoted": (
        "a: 1\n'a': 2\n",
        r"line 2, column 1: invalid YAML: found duplicate key 'a' .*",
    ),
    # nesting
    "100k-deep flow lists": (
        _deep(100_000),
        rf"\[0\]\[0\]\[0\]…(\[0\]){{5}}: nested more than {MAX_DEPTH} levels deep \(line 1\); .*",
    ),
    "1M unclosed [": ("[" * 1_000_000, rf".*: nested more than {MAX_DEPTH} levels deep \(line 1\); .*"),
    "100k-deep flow mappings": (
        "a: {" * 100_000 + "}" * 100_000,
        r"a\.a\.a…(\.a){5}: nested more than 64 levels deep .*",
    ),
    "100k-deep block lists": ("- " * 100_000 + "x\n", r".*: nested more than 64 levels deep \(line 1\); .*"),
    "deep block mappings": (
        "".join(f"{' ' * level}k{level}:\n" for level in range(200)),
        r"k0\.k1\.k2…\.k59\.k60\.k61\.k62\.k63: nested more than 64 levels deep \(line 65\); .*",
    ),
    # aliases, anchors, merge keys
    "billion laughs": (
        _billion_laughs(),
        rf"[a-j]\[\d\]: more than {MAX_VALUES} values with aliases expanded .*",
    ),
    "merge-key bomb": (
        _merge_bomb(),
        rf"m\d+\.<<\[\d\]: more than {MAX_VALUES} values with aliases expanded .*",
    ),
    "recursive alias": (
        "a: &a [1, *a]\n",
        r"a\[1\]: alias \*a is inside the value it refers to \(line 1\); recursive .*",
    ),
    "recursive merge": ("a: &a {<<: *a}\n", r"a\.<<: alias \*a is inside the value it refers to .*"),
    "undefined alias": ("a: *nowhere\n", r"a: alias \*nowhere has no anchor &nowhere before it"),
    "anchor defined twice": ("a: &x 1\nb: &x 2\n", r"b: anchor &x defined twice \(lines 1 and 2\)"),
    "merge of a scalar": (
        "a: &a 1\nb: {<<: *a}\n",
        r"line 1, column 4: invalid YAML: expected a mapping or list of mappings for merging, but found "
        r"scalar \(while constructing a mapping that began on line 2\)",
    ),
    # tags
    "python object": (
        "a: !!python/object/apply:os.system [echo hi]\n",
        r"a: unsupported YAML tag !!python/object/apply:os\.system \(line 1\); .*",
    ),
    "python name": (
        "a: !!python/name:os.system ''\n",
        r"a: unsupported YAML tag !!python/name:os\.system .*",
    ),
    "local tag": ("a: !custom 1\n", r"a: unsupported YAML tag !custom .*"),
    "verbatim tag": (
        "a: !<tag:evil.example,2026:x> 1\n",
        r"a: unsupported YAML tag tag:evil\.example,2026:x .*",
    ),
    "binary": ("a: !!binary aGVsbG8=\n", r"a: unsupported YAML tag !!binary .*"),
    "set": ("a: !!set {x, y}\n", r"a: unsupported YAML tag !!set .*"),
    "omap": ("a: !!omap [x: 1]\n", r"a: unsupported YAML tag !!omap .*"),
    "tag on the top level": ("!!python/object:object {}\n", r"\(top level\): unsupported YAML tag .*"),
    "huge tag": (f"a: !{'t' * 500_000} 1\n", r"a: unsupported YAML tag !t{78}… \(line 1\); .*"),
    # keys
    "list as key": (
        "? [a, b]\n: x\n",
        r"\(top level\): a mapping key must be a single value, not a list \(line 1\)",
    ),
    "mapping as key": (
        "? {a: 1}\n: x\n",
        r"\(top level\): a mapping key must be a single value, not a mapping \(line 1\)",
    ),
    "implicit mapping key": (
        "? [a, b] : x\n",
        r"\(top level\): a mapping key must be a single value, not a mapping \(line 1\)",
    ),
    "alias of a list as key": (
        "a: &l [1]\n*l : x\n",
        r"\(top level\): a mapping key must be a single value, not an alias .*",
    ),
    "int key": (
        "environments:\n  1: x\n",
        r"environments: key '1' is read as a number, not as text \(line 2\); "
        r"put a key in quotes to make it text",
    ),
    "float key": ("1.10: x\n", r"\(top level\): key '1\.10' is read as a number, not as text .*"),
    "bool key on": ("on: x\n", r"\(top level\): key 'on' is read as a boolean, not as text .*"),
    "bool key yes": (
        "questionnaire:\n  answers:\n    yes: x\n",
        r"questionnaire\.answers: key 'yes' is read as a boolean, .*",
    ),
    "null key": ("~: x\n", r"\(top level\): key '~' is read as null \(no value\), not as text .*"),
    "empty key": ("? \n: x\n", r"\(top level\): an empty key is read as null \(no value\), not as text .*"),
    "date key": ("2026-01-01: x\n", r"\(top level\): key '2026-01-01' is read as a date, not as text .*"),
    # values that cannot be built
    "5000-digit integer": (
        "a: " + "7" * 5000 + "\n",
        r"line 1, column 4: invalid YAML: invalid number '7{78}…: Exceeds the limit .*",
    ),
    "impossible date": (
        "a: 2026-02-30\n",
        r"line 1, column 4: invalid YAML: invalid date '2026-02-30': day is out of range for month",
    ),
    "tagged non-date": (
        "a: !!timestamp yesterday\n",
        r"line 1, column 4: invalid YAML: invalid date 'yesterday'",
    ),
    "tagged non-number": (
        "a: !!int twelve\n",
        r"line 1, column 4: invalid YAML: invalid number 'twelve': .*",
    ),
}


@pytest.mark.parametrize("case", sorted(CONTENT))
def test_hostile_content_is_one_clear_problem(case: str, tmp_path: Path) -> None:
    content, expected = CONTENT[case]
    path = tmp_path / "acme.yaml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    problem = within_memory(lambda: the_problem(path))
    assert re.fullmatch(expected, problem), problem


def test_without_libyaml_the_same_limits_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML's pure-Python parser (the fallback) feeds the same composer: same refusals."""
    monkeypatch.setattr(input_files, "_parser", input_files._PyEventParser)
    path = tmp_path / "acme.yaml"
    for case in ("100k-deep flow lists", "billion laughs", "merge-key bomb", "list as key", "python object"):
        path.write_text(CONTENT[case][0])
        problem = within_memory(lambda: the_problem(path))
        assert re.fullmatch(CONTENT[case][1], problem), (case, problem)
    path.write_text(acme_text())
    assert load_customer_config(path).customer_id == "acme"


def test_the_process_model_reader_is_as_strict(tmp_path: Path) -> None:
    path = tmp_path / "process.yaml"
    path.write_text(_billion_laughs())
    with pytest.raises(InputFileError) as caught:
        read_yaml_mapping(path)
    [line] = caught.value.problems
    assert line.startswith(f"{path}: ") and "aliases expanded" in line


# --- limits: up to the limit is fine, one more is not -----------------------------------------------


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + _deep(MAX_DEPTH - 1))  # the top-level mapping is the first level
    assert isinstance(read_yaml_mapping(path)["a"], list)
    path.write_text("a: " + _deep(MAX_DEPTH))
    with pytest.raises(InputFileError, match=f"nested more than {MAX_DEPTH} levels deep"):
        read_yaml_mapping(path)


def test_values_up_to_the_limit_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    items = MAX_VALUES - 3  # the top-level mapping, the key "a" and the list count too
    path.write_text("a: [" + ",".join(["1"] * items) + "]\n")
    assert len(read_yaml_mapping(path)["a"]) == items
    path.write_text("a: [" + ",".join(["1"] * (items + 1)) + "]\n")
    with pytest.raises(InputFileError) as caught:
        read_yaml_mapping(path)
    assert caught.value.problems == (
        f"{path}: a[{items}]: more than {MAX_VALUES} values (line 1); an input file holds far fewer",
    )


# --- valid files in unusual shapes still load ------------------------------------------------------


def test_a_utf8_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + acme_text().encode())
    assert load_customer_config(path).model_dump() == load_customer_config(ACME).model_dump()


def replaced(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced (the example config still has it)."""
    assert text.count(old) == 1, f"the example config no longer holds {old!r} exactly once"
    return text.replace(old, new)


def test_anchors_aliases_and_merge_keys_work_as_in_yaml(tmp_path: Path) -> None:
    """``uat: {<<: *dev, <what differs>}``: the config is the one with ``uat`` written out."""
    data = yaml.safe_load(acme_text())
    dev, uat = data["environments"]["dev"], data["environments"]["uat"]
    differs = {key: value for key, value in uat.items() if dev.get(key) != value}
    text = replaced(acme_text(), "\n  dev:\n", "\n  dev: &dev\n")
    overrides = textwrap.indent(yaml.safe_dump(differs, default_flow_style=False, sort_keys=False), "    ")
    text, found = re.subn(r"\n  uat:\n(?:    .*\n)+", f"\n  uat:\n    <<: *dev\n{overrides}", text)
    assert found == 1
    path = tmp_path / "acme.yaml"
    path.write_text(text)
    data["environments"]["uat"] = {**dev, **uat}
    expected = parse_customer_config(data, str(path), file_stem="acme")
    assert load_customer_config(path).model_dump() == expected.model_dump()


def test_a_merged_mapping_may_override_what_it_merges(tmp_path: Path) -> None:
    """The mapping is checked for duplicate keys as written, not after a merge filled it in."""
    path = tmp_path / "merge.yaml"
    path.write_text("x: {y: &m {<<: &b {a: 1}, a: 2}}\nz: {<<: *m}\nw: *b\n")
    assert read_yaml_mapping(path) == {"x": {"y": {"a": 2}}, "z": {"a": 2}, "w": {"a": 1}}


def test_yaml_oddities_are_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text("a: =\nb: <<\n'1': quoted key\n")
    assert read_yaml_mapping(path) == {"a": "=", "b": "<<", "1": "quoted key"}


# --- long values are cut, many problems are capped ---------------------------------------------------


def test_a_megabyte_value_is_not_echoed_back(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(replaced(acme_text(), "name: ACME Corporation", f"name: {'x' * 900_000}"))
    [line] = problems_of(path)
    assert line.startswith(f"{path}: name: ")
    assert "x" * MAX_SHOWN not in line and "x" * (MAX_SHOWN - 10) + "…" in line


def test_a_megabyte_key_is_not_echoed_back(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(acme_text() + f"? {'k' * 900_000}\n: 1\n")
    [line] = problems_of(path)
    assert line == f"{path}: {'k' * (MAX_SHOWN - 1)}…: unknown field; check its spelling or remove it"


def test_a_long_duplicate_key_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    key = "d" * 1_000
    path.write_text(f"? {key}\n: 1\n? {key}\n: 2\n")
    problem = the_problem(path)
    assert problem.startswith(
        f"line 3, column 3: invalid YAML: found duplicate key '{'d' * (MAX_SHOWN - 2)}…"
    )


def test_many_problems_are_capped(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(acme_text() + "".join(f"unknown_{index}: 1\n" for index in range(5_000)))
    problems = problems_of(path)
    assert len(problems) == MAX_PROBLEMS + 1
    assert all(": unknown_" in line for line in problems[:MAX_PROBLEMS])
    assert problems[-1] == f"{path}: (top level): … and {5_000 - MAX_PROBLEMS} more problems"


# --- whatever else goes wrong stays one file's problem ---------------------------------------------


@pytest.mark.parametrize("exception", [RuntimeError("boom"), RecursionError(), MemoryError(), KeyError("x")])
def test_an_unexpected_exception_becomes_that_files_problem(
    exception: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ACME, tmp_path / "acme.yaml")
    (tmp_path / "globex.yaml").write_text(acme_text("globex"))
    real = CustomerConfig.model_validate

    def validate(data: Any, **kwargs: Any) -> CustomerConfig:
        if data["customer_id"] == "globex":
            raise exception
        return real(data, **kwargs)

    monkeypatch.setattr(CustomerConfig, "model_validate", validate)
    configs, errors = load_customer_configs(tmp_path)
    assert set(configs) == {"acme"}
    [error] = errors.values()
    [line] = error.problems
    assert line.startswith(
        f"{tmp_path / 'globex.yaml'}: (top level): could not be checked, {type(exception).__name__}"
    )


def test_an_exception_while_reading_becomes_that_files_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(text: str) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(input_files, "_load_single_document", explode)
    path = tmp_path / "acme.yaml"
    path.write_text(acme_text())
    assert the_problem(path) == (
        "(top level): could not be checked, RecursionError: maximum recursion depth exceeded "
        "(please report this)"
    )


# --- a whole folder of hostile files: the valid customers still load -------------------------------


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "customers"
    folder.mkdir()
    for name in ("acme", "globex", "initech"):
        shutil.copy(REPO / "include" / "customers" / f"{name}.yaml", folder)
    for index, kind in enumerate(sorted(FILE_KINDS)):
        FILE_KINDS[kind][0](folder / f"kind_{index}.yaml")
    for index, case in enumerate(sorted(CONTENT)):
        content = CONTENT[case][0]
        path = folder / f"content_{index}.yaml"
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    yield folder


def test_a_folder_full_of_hostile_files_keeps_every_valid_customer(hostile_folder: Path) -> None:
    configs, errors = within_memory(lambda: load_customer_configs(hostile_folder))
    assert set(configs) == {"acme", "globex", "initech"}
    expected = {path.name for path in hostile_folder.glob("*.yaml")} - {
        "acme.yaml",
        "globex.yaml",
        "initech.yaml",
    }
    assert {path.name for path in errors} == expected
    for path, error in errors.items():
        assert error.problems and all(line.startswith(f"{path}: ") for line in error.problems)


def test_the_lint_command_reports_every_hostile_file_and_exits_1(
    hostile_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(str(path) for path in hostile_folder.glob("*.yaml"))
    assert lint(["validate", *files]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"OK {hostile_folder / 'acme.yaml'}" in out
    for file in files:
        assert any(line.startswith(f"{file}: ") or line == f"OK {file}" for line in out), file


def test_the_lint_command_does_not_hang_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "acme.yaml"
    _fifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "managed_upgrade.config", "validate", str(fifo), "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"{fifo}: cannot read file: it is a FIFO (named pipe), not a regular file",
        "/dev/zero: cannot read file: it is a character device, not a regular file",
    ]


# --- hostile file names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"evil\nname.yaml", "evil\\nname.yaml"),
        (b"caf\xe9.yaml", "caf\\udce9.yaml"),
        (b"esc\x1b[2J.yaml", "esc\\x1b[2J.yaml"),
    ],
)
def test_a_hostile_file_name_is_shown_escaped_and_breaks_nothing(
    name: bytes, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(ACME, tmp_path / "acme.yaml")
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), name)))
    path.write_text(acme_text())
    configs, errors = load_customer_configs(tmp_path)
    assert set(configs) == {"acme"}
    [(bad, error)] = errors.items()
    [line] = error.problems
    assert line.startswith(f"{tmp_path}/{shown}: customer_id: ")
    assert 0 <= shard_of(bad.stem) < 16
    message = describe_errors(errors)
    message.encode("utf-8")  # storable as an import error
    assert f"\n{shown} (DAG managed_upgrade__{shown.removesuffix('.yaml')} not loaded):" in message
    assert lint(["validate", str(path)]) == 1
    assert capsys.readouterr().out == f"{line}\n"
