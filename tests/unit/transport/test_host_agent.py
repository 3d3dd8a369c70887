"""The host agent, run exactly as on a host (``python3 -c <source> ...``), against local files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from managed_upgrade.transport.remote import agent_argv


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
def test_list_reads_members_and_their_content_hashes_from_the_archive(
    tmp_path: Path, flag: str, suffix: str
) -> None:
    make_tree(tmp_path / "install")
    (tmp_path / "install" / "bin" / "crm").chmod(0o4755)  # setuid survives
    (tmp_path / "install" / ("long-" * 40 + "name")).write_text("a name longer than 100 bytes")
    (tmp_path / "install" / "empty").write_bytes(b"")
    archive = tmp_path / f"install{suffix}"
    subprocess.run(["tar", flag, "-cf", str(archive), "-C", str(tmp_path / "install"), "."], check=True)
    listing = agent("list", str(archive))
    assert listing["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert listing["entries"] == agent("tree", str(tmp_path / "install"))["entries"]  # hashes included


def test_list_reads_pax_archives_too(tmp_path: Path) -> None:
    make_tree(tmp_path / "install")
    archive = tmp_path / "install.tar.gz"
    subprocess.run(
        ["tar", "--format=pax", "-czf", str(archive), "-C", str(tmp_path / "install"), "."], check=True
    )
    assert agent("list", str(archive))["entries"] == agent("tree", str(tmp_path / "install"))["entries"]


def test_a_corrupt_archive_cannot_be_listed(tmp_path: Path) -> None:
    make_tree(tmp_path / "install")
    archive = tmp_path / "install.tar.zst"
    subprocess.run(["tar", "--zstd", "-cf", str(archive), "-C", str(tmp_path / "install"), "."], check=True)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = subprocess.run(agent_argv("list", str(archive)), capture_output=True, check=False)
    assert result.returncode != 0


def without_hashes(entries: list[dict]) -> list[dict]:
    return [{key: value for key, value in entry.items() if key != "sha256"} for entry in entries]


def test_backup_archives_lists_back_and_receives_the_dump_in_one_run(tmp_path: Path) -> None:
    make_tree(tmp_path / "install")
    (tmp_path / "out").mkdir()
    dump = os.urandom(50_000)
    answer = agent(
        "backup", str(tmp_path / "install"), str(tmp_path / "out"), "auto", "config-db.dump", stdin=dump
    )
    assert answer["compression"] == "zstd"
    archive = tmp_path / "out" / answer["archive"]["name"]
    assert answer["archive"]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert answer["manifest"] == agent("tree", str(tmp_path / "install"))["entries"]  # content hashes too
    assert answer["tree"] == agent("tree", str(tmp_path / "install"), "--no-hash")["entries"]
    assert (tmp_path / "out" / "config-db.dump").read_bytes() == dump
    assert answer["dump"]["sha256"] == hashlib.sha256(dump).hexdigest()


def test_backup_falls_back_to_gzip_on_a_host_without_zstd(tmp_path: Path) -> None:
    make_tree(tmp_path / "install")
    (tmp_path / "out").mkdir()
    bin_dir = tmp_path / "bin"  # a PATH with tar and gzip but no zstd
    bin_dir.mkdir()
    for tool in ("tar", "gzip"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    argv = [
        sys.executable,
        *agent_argv("backup", str(tmp_path / "install"), str(tmp_path / "out"), "auto")[1:],
    ]
    result = subprocess.run(argv, capture_output=True, check=True, env={"PATH": str(bin_dir)})
    answer = json.loads(result.stdout)
    assert answer["compression"] == "gzip"
    assert answer["archive"]["name"] == "install.tar.gz"
    assert without_hashes(answer["manifest"]) == without_hashes(answer["tree"])


def test_backup_of_a_missing_folder_fails_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    argv = agent_argv("backup", str(tmp_path / "no-such-install"), str(tmp_path / "out"), "auto")
    result = subprocess.run(argv, capture_output=True, check=False)
    assert result.returncode != 0
    assert b"backup needs an existing install folder" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


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
