"""Staging a release to the three estate hosts for real: sent once, then skipped, resumed, verified there."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from crm_estate import Estate, host_conn_id
from managed_upgrade.errors import ChecksumMismatchError, OperationError
from managed_upgrade.operations.release_source import CachedRelease, DirectoryReleaseSource, fetch_release
from managed_upgrade.operations.staging import StagingTarget, stage_release
from managed_upgrade.transport.remote import RemoteHost, SshEndpoint, connect
from managed_upgrade.transport.transfer import OpenSshSender

pytestmark = pytest.mark.integration

PRODUCT = "aurea-crm"
VERSION = "11.0.0"
ENVS = ("dev", "uat", "prod")
FILES = ("installer.py", "payload.tar.gz", "SHA256SUMS")


@pytest.fixture
def staging_dirs(estate: Estate) -> Iterator[dict[str, Path]]:
    """A fresh staging root on each host (local directories of the estate), removed afterwards."""
    token = uuid.uuid4().hex[:10]
    dirs = {env: estate.layout.host_dir(env) / "isolated" / f"staging-{token}" for env in ENVS}
    yield dirs
    for path in dirs.values():
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def release_copy(estate: Estate, tmp_path: Path) -> Path:
    """A private copy of the estate's release repository for VERSION (safe to tamper with)."""
    estate.ensure_release(VERSION)
    target = tmp_path / "repo" / PRODUCT / VERSION
    shutil.copytree(estate.release_dir(VERSION), target)
    return tmp_path / "repo"


@pytest.fixture
def cached_release(release_copy: Path, tmp_path: Path) -> CachedRelease:
    return fetch_release(
        DirectoryReleaseSource(release_copy, PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "cache"
    )


def targets(remote_host: Callable[..., RemoteHost], dirs: dict[str, Path]) -> list[StagingTarget]:
    return [StagingTarget(env, remote_host(env), str(dirs[env])) for env in ENVS]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_stages_every_file_to_every_host_then_skips_them(
    cached_release: CachedRelease, remote_host, staging_dirs: dict[str, Path], transport: str
) -> None:
    report = stage_release(cached_release, targets(remote_host, staging_dirs), transport=transport)  # type: ignore[arg-type]
    for outcome in report.hosts:
        assert {f.name: f.action for f in outcome.files} == dict.fromkeys(FILES, "sent")
        assert outcome.transport == transport
        release_dir = staging_dirs[outcome.target] / VERSION
        assert sorted(p.name for p in release_dir.iterdir()) == sorted(FILES)
        for cached in cached_release.files:
            assert sha256(release_dir / cached.name) == cached.sha256

    again = stage_release(cached_release, targets(remote_host, staging_dirs), transport=transport)  # type: ignore[arg-type]
    summary = again.summary()["hosts"]
    assert all(host["files"] == dict.fromkeys(FILES, "skipped") for host in summary.values())
    assert all(host["bytes_sent"] == 0 for host in summary.values())


def test_an_interrupted_transfer_resumes_from_the_part_file(
    cached_release: CachedRelease, remote_host, staging_dirs: dict[str, Path]
) -> None:
    payload = cached_release.file("payload.tar.gz")
    release_dir = staging_dirs["dev"] / VERSION
    release_dir.mkdir(parents=True)
    kept = payload.size // 3
    (release_dir / "payload.tar.gz.part").write_bytes(payload.path.read_bytes()[:kept])

    report = stage_release(
        cached_release, [StagingTarget("dev", remote_host("dev"), str(staging_dirs["dev"]))]
    )

    outcome = {f.name: f for f in report.hosts[0].files}["payload.tar.gz"]
    assert outcome.action == "resumed"
    assert outcome.bytes_sent == payload.size - kept
    assert sha256(release_dir / "payload.tar.gz") == payload.sha256
    assert not (release_dir / "payload.tar.gz.part").exists()


def test_a_part_file_with_a_wrong_prefix_is_sent_again_whole(
    cached_release: CachedRelease, remote_host, staging_dirs: dict[str, Path]
) -> None:
    release_dir = staging_dirs["uat"] / VERSION
    release_dir.mkdir(parents=True)
    (release_dir / "payload.tar.gz.part").write_bytes(b"garbage from another build" * 100)

    report = stage_release(
        cached_release, [StagingTarget("uat", remote_host("uat"), str(staging_dirs["uat"]))]
    )

    assert {f.name: f.action for f in report.hosts[0].files}["payload.tar.gz"] == "sent"
    assert sha256(release_dir / "payload.tar.gz") == cached_release.file("payload.tar.gz").sha256


def test_a_wrong_file_under_the_final_name_is_replaced(
    cached_release: CachedRelease, remote_host, staging_dirs: dict[str, Path]
) -> None:
    release_dir = staging_dirs["prod"] / VERSION
    release_dir.mkdir(parents=True)
    (release_dir / "installer.py").write_text("print('not the vendor installer')\n")

    report = stage_release(
        cached_release, [StagingTarget("prod", remote_host("prod"), str(staging_dirs["prod"]))]
    )

    assert {f.name: f.action for f in report.hosts[0].files}["installer.py"] == "sent"
    assert sha256(release_dir / "installer.py") == cached_release.file("installer.py").sha256


@pytest.mark.parametrize("transport", ["openssh", "paramiko"])
def test_a_checksum_mismatch_on_the_host_names_file_host_and_digests_and_keeps_no_bad_file(
    cached_release: CachedRelease, remote_host, staging_dirs: dict[str, Path], transport: str
) -> None:
    payload = cached_release.file("payload.tar.gz")
    corrupt = bytearray(payload.path.read_bytes())
    corrupt[1000] ^= 0xFF  # one flipped bit's worth of damage after the cache verified the file
    payload.path.write_bytes(bytes(corrupt))
    actual = hashlib.sha256(corrupt).hexdigest()

    with pytest.raises(ChecksumMismatchError) as error:
        stage_release(
            cached_release,
            [StagingTarget("dev", remote_host("dev"), str(staging_dirs["dev"]))],
            transport=transport,  # type: ignore[arg-type]
        )

    message = str(error.value)
    assert "payload.tar.gz" in message
    assert "host dev" in message
    assert f"expected sha256 {payload.sha256}" in message
    assert f"got {actual}" in message
    release_dir = staging_dirs["dev"] / VERSION
    assert not (release_dir / "payload.tar.gz").exists()
    assert not (release_dir / "payload.tar.gz.part").exists()


def test_a_failure_on_several_hosts_reports_each(
    cached_release: CachedRelease, remote_host, staging_dirs: dict[str, Path]
) -> None:
    payload = cached_release.file("payload.tar.gz")
    payload.path.write_bytes(b"x" * payload.size)
    with pytest.raises(OperationError) as error:
        stage_release(cached_release, targets(remote_host, staging_dirs))
    assert "staging failed on 3 hosts" in str(error.value)
    for env in ENVS:
        assert f"  {env}: checksum mismatch for payload.tar.gz" in str(error.value)


def test_the_openssh_transport_refuses_a_host_with_another_key(estate: Estate, tmp_path: Path) -> None:
    wrong = SshEndpoint(
        "127.0.0.1",
        estate.hosts["dev"].port,
        estate.user,
        key_file=str(estate.client_key_path),
        host_key=estate.hosts["uat"].host_key,  # uat's key pinned for the dev host
    )
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"data")
    with pytest.raises(OperationError, match="host key verification failed"):
        OpenSshSender(wrong, "dev").send(sample, str(tmp_path / "never-written"))
    assert not (tmp_path / "never-written").exists()
    with pytest.raises(paramiko.BadHostKeyException):
        connect(wrong)


def test_the_operator_stages_from_airflow_connections(
    estate: Estate, airflow_connections, staging_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from managed_upgrade_airflow.operators.stage_release import StageReleaseOperator

    estate.ensure_release(VERSION)
    operator = StageReleaseOperator(
        task_id="stage_upgrade_files",
        release_conn_id="crm_releases",
        product=PRODUCT,
        version=VERSION,
        environments={
            env: {"ssh_conn_id": host_conn_id(env), "staging_path": str(staging_dirs[env])} for env in ENVS
        },
        cache_root=str(tmp_path / "cache"),
    )
    summary = operator.execute({})
    assert summary["version"] == VERSION
    assert set(summary["hosts"]) == set(ENVS)
    for env, host in summary["hosts"].items():
        assert host["files"] == dict.fromkeys(FILES, "sent")
        assert host["transport"] == "openssh"
        assert (staging_dirs[env] / VERSION / "installer.py").is_file()
    assert operator.execute({})["hosts"]["dev"]["files"] == dict.fromkeys(FILES, "skipped")


def test_staged_release_passes_the_vendor_installers_own_check(
    cached_release: CachedRelease, remote_host, staging_dirs: dict[str, Path]
) -> None:
    host = remote_host("dev")
    stage_release(cached_release, [StagingTarget("dev", host, str(staging_dirs["dev"]))])
    release_dir = str(staging_dirs["dev"] / VERSION)
    result = host.run(["sh", "-c", 'cd -- "$1" && sha256sum --check --strict SHA256SUMS', "sh", release_dir])
    assert result.text.count(": OK") == 2


def test_a_connection_cut_mid_transfer_fails_the_try_and_the_next_one_resumes_and_verifies(
    estate: Estate, remote_host, staging_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import threading
    import time

    import psutil

    from crm_estate import releases, sshd

    releases.build_release(tmp_path / "repo", VERSION, releases.PayloadSize.mib(192, 1))
    release = fetch_release(
        DirectoryReleaseSource(tmp_path / "repo", PRODUCT, VERSION), PRODUCT, VERSION, tmp_path / "cache"
    )
    big = max(release.files, key=lambda item: item.size)
    part = staging_dirs["dev"] / VERSION / f"{big.name}.part"
    outcome: dict[str, BaseException] = {}

    def stage() -> None:
        try:
            stage_release(release, [StagingTarget("dev", remote_host("dev"), str(staging_dirs["dev"]))])
        except BaseException as error:  # the cut shows up here
            outcome["error"] = error

    worker = threading.Thread(target=stage)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (part.exists() and part.stat().st_size > 8 * 2**20):
        time.sleep(0.002)
    cut_at = part.stat().st_size
    sshd_pid = sshd.running_pid(estate.layout, "dev")
    assert sshd_pid is not None
    for session in psutil.Process(sshd_pid).children(recursive=True):  # the network drops
        session.kill()
    worker.join(120)

    assert isinstance(outcome.get("error"), Exception), "the cut should fail the transfer"
    assert 0 < cut_at < big.size
    kept = part.stat().st_size if part.exists() else 0

    report = stage_release(release, [StagingTarget("dev", remote_host("dev"), str(staging_dirs["dev"]))])

    result = {f.name: f for f in report.hosts[0].files}[big.name]
    assert result.action == ("resumed" if kept else "sent")
    assert result.bytes_sent == big.size - kept
    assert sha256(staging_dirs["dev"] / VERSION / big.name) == big.sha256
    assert not part.exists()
