"""The test network line in front of a real estate sshd: transparent, paced, cut mid-transfer."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_estate import Estate
from crm_estate.network_link import NetworkLink
from managed_upgrade.transport.remote import RemoteHost, SshEndpoint, connect
from managed_upgrade.transport.transfer import ParamikoSender

pytestmark = pytest.mark.integration


@pytest.fixture
def link(estate: Estate) -> Iterator[NetworkLink]:
    with NetworkLink(estate.hosts["dev"].port) as created:
        yield created


@pytest.fixture
def target_dir(estate: Estate) -> Iterator[Path]:
    path = estate.layout.host_dir("dev") / "isolated" / f"link-{uuid.uuid4().hex[:10]}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def through(estate: Estate, link: NetworkLink) -> RemoteHost:
    """Dev's host reached through the link: its pinned key verifies on the link's port too."""
    endpoint = SshEndpoint(
        host="127.0.0.1",
        port=link.port,
        username=estate.user,
        key_file=str(estate.client_key_path),
        host_key=estate.hosts["dev"].host_key,
    )
    return RemoteHost(connect(endpoint), "dev", endpoint)


def payload(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(size))
    return path


def test_the_line_is_transparent_and_paces_what_goes_to_the_host(
    estate: Estate, link: NetworkLink, target_dir: Path, tmp_path: Path
) -> None:
    host = through(estate, link)
    try:
        assert host.file_size(str(target_dir / "absent")) is None
        link.set_rate(256 * 1024)
        source = payload(tmp_path, 512 * 1024)
        started = time.monotonic()
        received = ParamikoSender(host).send(source, str(target_dir / "payload.part"), 0)
        seconds = time.monotonic() - started
    finally:
        host.close()

    assert received.size == source.stat().st_size
    assert (target_dir / "payload.part").read_bytes() == source.read_bytes()
    assert link.stats.connections == 1
    assert link.stats.bytes_to_host > source.stat().st_size  # the file and SSH's own framing
    assert seconds >= 1.5, f"512 KiB at 256 KiB/s took {seconds:.2f} s"


def test_a_cut_when_the_host_holds_part_of_a_file_drops_the_transfer_and_keeps_what_arrived(
    estate: Estate, link: NetworkLink, target_dir: Path, tmp_path: Path
) -> None:
    part = target_dir / "payload.part"
    source = payload(tmp_path, 1024 * 1024)
    host = through(estate, link)
    link.set_rate(256 * 1024)
    link.cut_when(lambda: part.exists() and part.stat().st_size >= 128 * 1024)
    try:
        with pytest.raises(Exception):  # noqa: B017 - whichever error the dropped line raises
            ParamikoSender(host).send(source, str(part), 0)
    finally:
        host.close()

    assert link.stats.cuts == 1
    assert link.stats.connections_since_cut == 0
    time.sleep(0.5)  # the host side notices the dropped line and stops writing
    arrived = part.stat().st_size
    assert 128 * 1024 <= arrived < source.stat().st_size
    assert part.read_bytes() == source.read_bytes()[:arrived]

    again = through(estate, link)  # the line is back: a new connection, and the rest is resumed
    try:
        link.set_rate(None)
        received = ParamikoSender(again).send(source, str(part), arrived)
    finally:
        again.close()
    assert link.stats.connections_since_cut == 1
    assert (received.bytes_sent, received.size) == (source.stat().st_size - arrived, source.stat().st_size)
    assert part.read_bytes() == source.read_bytes()
