"""A full verified backup of an environment vs plain ``tar | zstd`` + ``pg_dump -Fc`` of the same data.

    .venv/bin/python benchmarks/bench_backup.py [--size-mib 512] [--rows 200000] [--rounds 3]

Creates an isolated estate installation, grows its install folder by ``--size-mib`` (half
incompressible like jars, half text like logs) and its config DB by ``--rows`` accounts (two
contacts each), then per round: (a) the baseline as an operator would type it on the host:
``tar -C <install> -cf - . | zstd -o x.tar.zst && pg_dump -Fc -f x.dump`` (nothing verified);
(b) :func:`create_backup` over SSH (archive + per-file sha256 manifest on the host, dump checked
with ``pg_restore --list`` and hashed on the host, archive listed back and compared, descriptor,
retention), connection set-up included. The order alternates; medians and the ratio are printed
(goal <= 1.1x). For transparency the baseline with tar and pg_dump run in parallel is printed too.
The installation, its DB and every file made are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("include", "scripts"):
    sys.path.insert(0, str(ROOT / sub))

import crm_estate  # noqa: E402
from managed_upgrade.operations.backup import BackupTarget, create_backup  # noqa: E402
from managed_upgrade.transport.database import DbTarget  # noqa: E402
from managed_upgrade.transport.remote import RemoteHost, SshEndpoint, connect  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"


def grow_install(install: Path, size_mib: int) -> None:
    blobs = install / "lib" / "bench"
    blobs.mkdir(parents=True)
    half = size_mib * 1024 * 1024 // 2
    per_file = 16 * 1024 * 1024
    for index in range(max(1, half // per_file)):
        (blobs / f"component-{index:03d}.jar").write_bytes(os.urandom(per_file))
    logs = install / "logs" / "bench"
    logs.mkdir(parents=True)
    line = b"2026-01-01T00:00:00Z INFO request served account=%07d latency_ms=%03d path=/api/v2/accounts\n"
    written, number = 0, 0
    while written < half:
        chunk = b"".join(line % (number + i, (number + i) % 997) for i in range(20_000))
        (logs / f"access-{number // 20_000:04d}.log").write_bytes(chunk)
        written += len(chunk)
        number += 20_000


def grow_database(db: DbTarget, rows: int) -> None:
    connection = db.connect()
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_accounts (name, country) "
            "SELECT 'bench account ' || n, (ARRAY['DE','US','FR','GB','NL'])[1 + n %% 5]"
            " FROM generate_series(1, %s) n",
            (rows,),
        )
        cursor.execute(
            "INSERT INTO crm_contacts (account_id, email) "
            "SELECT a.id, 'contact' || c || '.' || a.id || '@bench.example.com' "
            "FROM crm_accounts a CROSS JOIN generate_series(1, 2) c WHERE a.name LIKE 'bench account %'"
        )
    connection.close()


def settle() -> None:
    """Flush dirty pages so one measurement does not pay for the previous one's writeback."""
    os.sync()
    time.sleep(1)


def baseline(install: Path, db: DbTarget, out: Path, parallel: bool = False) -> float:
    archive = f"tar -C {install} -cf - . | zstd -q -f -o {out / 'install.tar.zst'}"
    dump = f"pg_dump -Fc -f {out / 'config-db.dump'}"
    script = f"({archive}) & ({dump}) & wait" if parallel else f"{archive} && {dump}"
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", script], env=db.tool_env(), check=True)
    return time.perf_counter() - started


def ours(estate: crm_estate.Estate, installation, db: DbTarget) -> tuple[float, dict]:
    host_state = estate.hosts[installation.env]
    endpoint = SshEndpoint(
        "127.0.0.1",
        host_state.port,
        estate.user,
        key_file=str(estate.client_key_path),
        host_key=host_state.host_key,
    )
    started = time.perf_counter()
    with RemoteHost(connect(endpoint), installation.env, endpoint) as host:
        target = BackupTarget(
            installation.customer_id,
            installation.env,
            host,
            str(installation.install_path),
            str(installation.backup_path),
            db,
            retention=1,
        )
        result = create_backup(target)
    return time.perf_counter() - started, result.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    if not all(component.healthy for component in crm_estate.status()):
        crm_estate.up()
    estate = crm_estate.Estate.load()
    installation = estate.create_isolated_installation("dev", "10.2.0")
    pg = estate.db_connection(installation.db_name)
    db = DbTarget(pg["host"], int(pg["port"]), pg["login"], installation.db_name)
    WORK.mkdir(parents=True, exist_ok=True)
    base_times, ours_times, parallel_times = [], [], []
    try:
        grow_install(installation.install_path, args.size_mib)
        grow_database(db, args.rows)
        install_bytes = sum(p.stat().st_size for p in installation.install_path.rglob("*") if p.is_file())
        for round_number in range(args.rounds):
            order = ("baseline", "ours") if round_number % 2 == 0 else ("ours", "baseline")
            for which in order:
                settle()
                if which == "baseline":
                    out = WORK / f"baseline-{round_number}"
                    out.mkdir()
                    base_times.append(baseline(installation.install_path, db, out))
                    shutil.rmtree(out)
                else:
                    seconds, summary = ours(estate, installation, db)
                    ours_times.append(seconds)
            settle()
            out = WORK / f"parallel-{round_number}"
            out.mkdir()
            parallel_times.append(baseline(installation.install_path, db, out, parallel=True))
            dump_size = (out / "config-db.dump").stat().st_size
            archive_size = (out / "install.tar.zst").stat().st_size
            shutil.rmtree(out)
        base, mine, parallel = (statistics.median(t) for t in (base_times, ours_times, parallel_times))
        print(
            f"\ninstall folder {install_bytes / 2**20:.0f} MiB "
            f"({args.size_mib} MiB added: half random, half text), "
            f"config DB {args.rows} accounts + {2 * args.rows} contacts"
        )
        print(f"  archive {archive_size / 2**20:.0f} MiB zstd, dump {dump_size / 2**20:.1f} MiB")
        print(f"  tar | zstd && pg_dump -Fc (baseline)   {base:6.2f} s   runs {_fmt(base_times)}")
        print(f"  create_backup (verified, over SSH)     {mine:6.2f} s   runs {_fmt(ours_times)}")
        print(f"  ratio backup/baseline: {mine / base:.2f}x (goal <= 1.1x)")
        print(
            f"  (baseline with tar and pg_dump in parallel: {parallel:.2f} s; ratio {mine / parallel:.2f}x)"
        )
        print(f"  last backup: {summary['backup_id']}, files {sorted(summary['files'])}")
    finally:
        estate.remove_installation(installation)
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())
