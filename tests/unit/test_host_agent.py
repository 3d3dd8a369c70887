"""The host agent, run exactly as on a host (``python3 -c <source> ...``), against local files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from managed_upgrade.remote import agent_argv


def agent(*args: str, stdin: bytes | None = None) -> dict:
    result = subprocess.run(agent_argv(*args), input=stdin, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def make_tree(root: Path) -> None:
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "core.jar").write_bytes(os.urandom(10_000))
    (root / "bin").mkdir()
    (root / "bin" / "crm").write_text("#!/usr/bin/env python3\n")
    (root / "bin" / "crm").chmod(0o755)
    (root / "odd name\nwith newline $(id)").write_text("literal")
    (root / "link").symlink_to("lib/core.jar")


def test_tree_describes_every_entry_exactly(tmp_path: Path) -> None:
    make_tree(tmp_path / "install")
    entries = {e["path"]: e for e in agent("tree", str(tmp_path / "install"))["entries"]}
    assert set(entries) == {"bin", "bin/crm", "lib", "lib/core.jar", "odd name\nwith newline $(id)", "link"}
    jar = entries["lib/core.jar"]
    assert jar["type"] == "file"
    assert jar["size"] == 10_000
    assert (
        jar["sha256"] == hashlib.sha256((tmp_path / "install" / "lib" / "core.jar").read_bytes()).hexdigest()
    )
    assert entries["bin/crm"]["mode"] == 0o755
    assert entries["link"] == {**entries["link"], "type": "symlink", "target": "lib/core.jar"}


def test_tree_of_a_missing_directory_fails(tmp_path: Path) -> None:
    result = subprocess.run(agent_argv("tree", str(tmp_path / "nope")), capture_output=True, check=False)
    assert result.returncode != 0
    assert b"not a directory" in result.stderr


@pytest.mark.parametrize(("flag", "suffix"), [("--zstd", ".tar.zst"), ("--gzip", ".tar.gz")])
def test_archive_listing_matches_tree_and_hashes_the_archive(tmp_path: Path, flag: str, suffix: str) -> None:
    make_tree(tmp_path / "install")
    archive = tmp_path / f"install{suffix}"
    subprocess.run(["tar", flag, "-cf", str(archive), "-C", str(tmp_path / "install"), "."], check=True)
    listing = agent("archive", str(archive))
    assert listing["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    tree = agent("tree", str(tmp_path / "install"))["entries"]
    strip = lambda entries: [{k: v for k, v in e.items() if k != "sha256"} for e in entries]  # noqa: E731
    assert strip(listing["entries"]) == strip(tree)


def test_receive_writes_stdin_and_reports_the_whole_files_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    target = tmp_path / "payload.part"
    answer = agent("receive", str(target), "0", stdin=data)
    assert target.read_bytes() == data
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    assert answer["size"] == len(data)


def test_receive_resumes_after_the_kept_prefix(tmp_path: Path) -> None:
    data = os.urandom(2_000_000)
    target = tmp_path / "payload.part"
    target.write_bytes(data[:700_000])
    answer = agent("receive", str(target), "700000", stdin=data[700_000:])
    assert target.read_bytes() == data
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()


def test_receive_refuses_to_resume_a_file_of_another_length(tmp_path: Path) -> None:
    target = tmp_path / "payload.part"
    target.write_bytes(b"12345")
    result = subprocess.run(
        agent_argv("receive", str(target), "3"), input=b"x", capture_output=True, check=False
    )
    assert result.returncode != 0
    assert b"does not hold exactly 3 bytes" in result.stderr
    assert target.read_bytes() == b"12345"
