"""Isolation in a real Airflow DagBag: hostile customer files never take the other customers down.

One DagBag parses a copy of ``dags/`` over a customers folder holding the example customers, valid files in
unusual shapes (byte order mark, anchors and merge keys, a symlink inside the folder) and one hostile
file of each class (FIFO, device, directory, huge, deeply nested, alias bomb, not UTF-8, ...). Every DAG
file imports, except ``customer_config_errors.py``, whose single import error names each bad file, its
missing DAG and its problem; every valid customer has its DAG. No estate is needed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from managed_upgrade.config import CUSTOMERS_DIR_VARIABLE
from managed_upgrade.dag_ids import review_dag_id_for
from managed_upgrade_airflow.dag_registry import SHARDS

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "include" / "customers"
ERRORS_FILE = "customer_config_errors.py"


def customer_text(customer_id: str, source: str = "acme") -> str:
    text = (EXAMPLES / f"{source}.yaml").read_text(encoding="utf-8")
    return replaced(text, f"customer_id: {source}\n", f"customer_id: {customer_id}\n")


def replaced(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced (the example config still has it)."""
    assert text.count(old) == 1, f"the example config no longer holds {old!r} exactly once"
    return text.replace(old, new)


def _write(content: str | bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return make


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _sparse(path: Path) -> None:
    with path.open("wb") as file:
        file.truncate(4 * 1024**3)


def _merge_bomb() -> str:
    lines = ["m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{k}: &m{k} {{<<: [*m{k - 1}, *m{k - 1}], k{k}: 1}}" for k in range(1, 60)]
    return "\n".join(lines) + "\n"


def _billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    return "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    # kinds of file
    "fifo": (os.mkfifo, "cannot read file: it is a FIFO (named pipe), not a regular file"),
    "dev_zero": (
        _symlink("/dev/zero"),
        "it is a symlink to /dev/zero, a character device, not a regular file",
    ),
    "dev_urandom": (_symlink("/dev/urandom"), "it is a symlink to /dev/urandom, a character device"),
    "etc_passwd": (_symlink("/etc/passwd"), "it is a symlink to /etc/passwd, outside the folder"),
    "dangling": (_symlink("nowhere.yaml"), "it is a symlink to nothing (dangling)"),
    "directory": (lambda path: path.mkdir(), "cannot read file: it is a directory, not a regular file"),
    "sparse_4gib": (_sparse, "cannot read file: it is 4294967296 bytes, over the 1 MiB"),
    # what a file holds
    "deep_100k": (_write("[" * 100_000 + "]" * 100_000), "nested more than 64 levels deep (line 1)"),
    "not_utf8": (
        _write(replaced(customer_text("not_utf8"), "ACME Corp", "M\xfcller Corp").encode("latin-1")),
        "not UTF-8 text",
    ),
    "utf16": (_write(customer_text("utf16").encode("utf-16")), "the file is UTF-16 text; save it as UTF-8"),
    "nul_bytes": (_write(b"customer_id: nul_bytes\x00\n"), "control character U+0000 is not allowed"),
    "duplicate_key": (_write(customer_text("duplicate_key") + "name: again\n"), "found duplicate key 'name'"),
    "billion_laughs": (_write(_billion_laughs()), "more than 100000 values with aliases expanded"),
    "merge_bomb": (_write(_merge_bomb()), "more than 100000 values with aliases expanded"),
    "recursive_alias": (_write("a: &a [*a]\n"), "alias *a is inside the value it refers to"),
    "python_tag": (
        _write("a: !!python/object/apply:os.system [id]\n"),
        "unsupported YAML tag !!python/object/apply",
    ),
    "list_key": (_write("? [a, b]\n: x\n"), "a mapping key must be a single value, not a list"),
    "bool_key": (
        _write(customer_text("bool_key") + "on: true\n"),
        "key 'on' is read as a boolean, not as text",
    ),
    "two_documents": (
        _write(customer_text("two_documents") + "---\n{}\n"),
        "a second YAML document starts on line",
    ),
    "huge_integer": (_write("a: " + "9" * 5_000 + "\n"), "invalid number '9999"),
    "impossible_date": (
        _write("a: 2026-02-30\n"),
        "invalid date '2026-02-30': day is out of range for month",
    ),
    "megabyte_value": (
        _write(replaced(customer_text("megabyte_value"), "name: ACME Corporation", f"name: {'x' * 900_000}")),
        "name: ",
    ),
    "schema_error": (
        _write(replaced(customer_text("schema_error"), "target: 11.0.0", "target: 1.0; rm -rf / #")),
        "versions.target: ",
    ),
}
"""Hostile customer files by stem: how to make each and a piece of its expected problem line."""


def _bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + customer_text(path.stem).encode())


def _merged(path: Path) -> None:
    text = replaced(customer_text(path.stem), "\n  dev:\n", "\n  dev: &dev\n")
    text = replaced(text, "\n  uat:\n", "\n  uat:\n    <<: *dev\n")  # uat's own keys override dev's
    path.write_text(text)


def _linked(path: Path) -> None:
    (path.parent / "store").mkdir(exist_ok=True)
    (path.parent / "store" / f"{path.stem}.src").write_text(customer_text(path.stem))
    path.symlink_to(f"store/{path.stem}.src")


VALID: dict[str, Callable[[Path], None]] = {
    "acme": lambda path: shutil.copy(EXAMPLES / "acme.yaml", path),
    "globex": lambda path: shutil.copy(EXAMPLES / "globex.yaml", path),
    "initech": lambda path: shutil.copy(EXAMPLES / "initech.yaml", path),
    "with_bom": _bom,
    "with_merge_keys": _merged,
    "linked_inside": _linked,
}
"""Valid customer files by stem, some in unusual but allowed shapes."""


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagBag]:
    root = tmp_path_factory.mktemp("isolation")
    dags = root / "dags"
    shutil.copytree(REPO / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    customers = root / "customers"
    customers.mkdir()
    for stem, make in {**VALID, **{name: make for name, (make, _) in HOSTILE.items()}}.items():
        make(customers / f"{stem}.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CUSTOMERS_DIR_VARIABLE, str(customers))
        yield DagBag(dag_folder=str(dags), safe_mode=True)


@pytest.fixture(scope="module")
def error_text(bag: DagBag) -> str:
    [(path, message)] = bag.import_errors.items()
    assert Path(path).name == ERRORS_FILE
    return message


def test_every_valid_customer_has_its_dag(bag: DagBag) -> None:
    reviews = {review_dag_id_for(stem) for stem in VALID}
    assert set(bag.dag_ids) == {f"managed_upgrade__{stem}" for stem in VALID} | reviews


def test_only_the_errors_file_fails_to_import(bag: DagBag) -> None:
    assert [Path(path).name for path in bag.import_errors] == [ERRORS_FILE]
    parsed = {Path(stat.file).name for stat in bag.dagbag_stats}
    shards = {f"managed_upgrade_shard_{k:02d}.py" for k in range(SHARDS)}
    assert parsed >= shards | {ERRORS_FILE}
    # each valid customer: its DAG and its review DAG
    assert sum(stat.dag_num for stat in bag.dagbag_stats if Path(stat.file).name in shards) == 2 * len(VALID)


def test_the_error_lists_exactly_the_hostile_files(error_text: str) -> None:
    listed = set(re.findall(r"^(\S+)\.yaml \(DAG managed_upgrade__(\S+) not loaded\):$", error_text, re.M))
    assert listed == {(stem, stem) for stem in HOSTILE}
    assert f"{len(HOSTILE)} customer config file(s) are invalid" in error_text


def test_the_error_stays_short(error_text: str) -> None:
    assert max(len(line) for line in error_text.splitlines()) <= 1_000
    assert len(error_text) < 40_000
    assert "x" * 100 not in error_text and "9" * 100 not in error_text


@pytest.mark.parametrize("stem", sorted(HOSTILE))
def test_each_hostile_file_is_named_with_its_problem(stem: str, error_text: str) -> None:
    block = error_text.split(f"\n{stem}.yaml (DAG managed_upgrade__{stem} not loaded):\n", 1)[1]
    first = block.split("\n\n", 1)[0].splitlines()[0]
    assert re.match(rf"  \S*/customers/{stem}\.yaml: ", first), first
    assert HOSTILE[stem][1] in block.split("\n\n", 1)[0], block[:500]
