"""Staging a large release to the three estate hosts vs plain parallel OpenSSH ``scp`` of the same files.

    .venv/bin/python benchmarks/bench_staging.py [--size-mib 1024] [--rounds 2] [--compare-transports]

Builds release ``--version`` (default 99.0.0) with ``--size-mib`` of incompressible payload in the
estate's release repository, then per round: (a) ``scp`` of the release files to each host, the three
in parallel (default OpenSSH settings, host keys checked); (b) :func:`stage_release` with a cold
worker cache (fetch + verify + send + verify on every host); (c) the same with the cache warm. The
order of (a) and (b) alternates between rounds. Prints times, MB/s and the ratio staging/scp (goal
<= 1.0). ``--compare-transports`` also times one 256 MiB file over each transport to a single host.
Everything it creates (remote dirs, cache, the release unless ``--keep-release``) is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("include", "scripts"):
    sys.path.insert(0, str(ROOT / sub))

import crm_estate  # noqa: E402
from managed_upgrade.operations.release_source import DirectoryReleaseSource, fetch_release  # noqa: E402
from managed_upgrade.operations.staging import StagingTarget, stage_release  # noqa: E402
from managed_upgrade.transport.remote import RemoteHost, SshEndpoint, connect  # noqa: E402
from managed_upgrade.transport.transfer import OpenSshSender, ParamikoSender  # noqa: E402

PRODUCT = "aurea-crm"
ENVS = ("dev", "uat", "prod")
WORK = ROOT / "benchmarks" / ".work"


def endpoint(estate: crm_estate.Estate, env: str) -> SshEndpoint:
    host = estate.hosts[env]
    return SshEndpoint(
        "127.0.0.1", host.port, estate.user, key_file=str(estate.client_key_path), host_key=host.host_key
    )


def build_release(version: str, size_mib: int) -> Path:
    estate = crm_estate.Estate.load()
    release = estate.release_dir(version)
    payload = release / "payload.tar.gz"
    if not payload.is_file() or payload.stat().st_size < size_mib * 1024 * 1024:
        subprocess.run(
            [str(ROOT / "scripts" / "estate"), "release", "--version", version, "--size-mib", str(size_mib)],
            check=True,
        )
    return release


def scp_parallel(estate: crm_estate.Estate, files: list[Path], remote_dirs: dict[str, str]) -> float:
    processes = []
    started = time.perf_counter()
    for env in ENVS:
        host = estate.hosts[env]
        argv = ["scp", "-q", "-B", "-i", str(estate.client_key_path), "-P", str(host.port)]
        argv += ["-o", f"UserKnownHostsFile={estate.known_hosts_path}", "-o", "StrictHostKeyChecking=yes"]
        argv += [*map(str, files), f"{estate.user}@127.0.0.1:{remote_dirs[env]}/"]
        processes.append(subprocess.Popen(argv))
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f"scp failed: {process.args}")
    return time.perf_counter() - started


def remote_dirs_for(estate: crm_estate.Estate, tag: str) -> dict[str, str]:
    return {env: str(estate.layout.host_dir(env) / f"bench-{tag}") for env in ENVS}


def clean_remote(dirs: dict[str, str]) -> None:
    for path in dirs.values():
        shutil.rmtree(path, ignore_errors=True)  # the hosts are local directories of the estate


def settle() -> None:
    """Flush dirty pages so one measurement does not pay for the previous one's writeback."""
    os.sync()
    time.sleep(1)


def run_staging(
    estate: crm_estate.Estate, version: str, cache: Path, dirs: dict[str, str]
) -> tuple[float, float]:
    """(seconds for fetch into the cache, seconds for fetch + stage to all hosts)."""
    hosts = {env: RemoteHost(connect(endpoint(estate, env)), env, endpoint(estate, env)) for env in ENVS}
    try:
        started = time.perf_counter()
        source = DirectoryReleaseSource(estate.releases_dir, PRODUCT, version)
        release = fetch_release(source, PRODUCT, version, cache)
        fetched = time.perf_counter() - started
        targets = [StagingTarget(env, hosts[env], dirs[env]) for env in ENVS]
        report = stage_release(release, targets)
        total = time.perf_counter() - started
    finally:
        for host in hosts.values():
            host.close()
    for outcome in report.hosts:
        actions = {item.name: item.action for item in outcome.files}
        if actions.get("payload.tar.gz") != "sent":
            raise SystemExit(f"expected a full send, got {actions}")
    return fetched, total


def compare_transports(estate: crm_estate.Estate, size_mib: int = 256) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    sample = WORK / "transport-sample.bin"
    with sample.open("wb") as handle:
        handle.write(os.urandom(size_mib * 1024 * 1024))
    remote_dir = estate.layout.host_dir("dev") / f"bench-transport-{uuid.uuid4().hex[:8]}"
    remote_dir.mkdir(parents=True)
    ep = endpoint(estate, "dev")
    try:
        with RemoteHost(connect(ep), "dev", ep) as host:
            candidates = {
                "paramiko exec channel -> receive (hashing)": ParamikoSender(host),
                "OpenSSH ssh -> receive (aes128-gcm)": OpenSshSender(ep, "dev"),
                "OpenSSH ssh -> receive (chacha20-poly1305)": OpenSshSender(
                    ep, "dev", ciphers=("chacha20-poly1305@openssh.com",)
                ),
            }
            print(f"\ntransport comparison, {size_mib} MiB to one host:")
            for name, sender in candidates.items():
                settle()
                started = time.perf_counter()
                sender.send(sample, str(remote_dir / "sample.bin"))
                seconds = time.perf_counter() - started
                print(f"  {name:42s} {seconds:6.2f} s  {rate(size_mib, seconds):7.0f} MB/s")
            settle()
            started = time.perf_counter()
            with host.sftp.open(str(remote_dir / "sftp.bin"), "wb") as remote, sample.open("rb") as local:
                remote.set_pipelined(True)
                while chunk := local.read(1024 * 1024):
                    remote.write(chunk)
            seconds = time.perf_counter() - started
            print(
                f"  {'paramiko SFTP (pipelined)':42s} {seconds:6.2f} s  {rate(size_mib, seconds):7.0f} MB/s"
            )
    finally:
        shutil.rmtree(remote_dir, ignore_errors=True)
        sample.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="99.0.0")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep-release", action="store_true")
    parser.add_argument("--compare-transports", action="store_true")
    args = parser.parse_args()

    if not all(component.healthy for component in crm_estate.status()):
        crm_estate.up()
    estate = crm_estate.Estate.load()
    release_dir = build_release(args.version, args.size_mib)
    files = sorted(path for path in release_dir.iterdir() if path.is_file())
    total_bytes = sum(path.stat().st_size for path in files) * len(ENVS)
    WORK.mkdir(parents=True, exist_ok=True)

    scp_times, cold_times, warm_times, fetch_times = [], [], [], []
    try:
        for round_number in range(args.rounds):
            order = ("scp", "stage") if round_number % 2 == 0 else ("stage", "scp")
            for which in order:
                dirs = remote_dirs_for(estate, uuid.uuid4().hex[:8])
                for path in dirs.values():
                    Path(path).mkdir(parents=True)
                settle()
                try:
                    if which == "scp":
                        scp_times.append(scp_parallel(estate, files, dirs))
                    else:
                        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=WORK))
                        try:
                            fetched, total = run_staging(estate, args.version, cache, dirs)
                            fetch_times.append(fetched)
                            cold_times.append(total)
                            clean_remote(dirs)
                            settle()
                            _, warm = run_staging(estate, args.version, cache, dirs)
                            warm_times.append(warm)
                        finally:
                            shutil.rmtree(cache, ignore_errors=True)
                finally:
                    clean_remote(dirs)
        megabytes = total_bytes / 1e6
        scp, cold, warm = (statistics.median(t) for t in (scp_times, cold_times, warm_times))
        print(
            f"\nrelease {args.version}: {len(files)} files, "
            f"{total_bytes / len(ENVS) / 2**20:.0f} MiB, to 3 hosts"
        )
        rows = [
            ("parallel scp (baseline)", scp, scp_times),
            ("stage_release, cold cache", cold, cold_times),
            ("stage_release, warm cache", warm, warm_times),
        ]
        for label, seconds, runs in rows:
            print(f"  {label:30s} {seconds:6.2f} s {megabytes / seconds:6.0f} MB/s  runs {_fmt(runs)}")
        print(f"    (cold: fetch + verify into the cache {statistics.median(fetch_times):.2f} s)")
        print(f"  ratio staging/scp: cold {cold / scp:.2f}x, warm {warm / scp:.2f}x (goal <= 1.0x)")
        if args.compare_transports:
            compare_transports(estate)
    finally:
        if not args.keep_release:
            shutil.rmtree(release_dir, ignore_errors=True)
            (release_dir.parent / f".{args.version}.build.json").unlink(missing_ok=True)
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


def rate(size_mib: float, seconds: float) -> float:
    return size_mib * 1.048576 / seconds


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())
