"""A local mail sink for the demo: every e-mail the DAG sends lands in a maildir you can read.

The demo must not need a real mail relay, and the customer e-mails are part of what it shows, so it
runs aiosmtpd's Mailbox handler on 127.0.0.1 in the background (stopped by ``make demo-down``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 28025


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            return conn.recv(3) == b"220"
    except OSError:
        return False


def start(maildir: Path, port: int = DEFAULT_PORT) -> Path:
    """Run the sink unless it already answers on ``port``; returns the maildir."""
    for part in ("tmp", "new", "cur"):  # a maildir; the handler only makes them for a new folder
        (maildir / part).mkdir(parents=True, exist_ok=True)
    if _answers(port):
        return maildir
    log = (maildir.parent / "mail-sink.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Mailbox",
         str(maildir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    (maildir.parent / "mail-sink.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 15
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mail sink did not start on 127.0.0.1:{port}; see {log.name}")
        time.sleep(0.2)
    return maildir


def stop(maildir: Path) -> None:
    """Stop a sink started by :func:`start` (no-op if none runs)."""
    pid_file = maildir.parent / "mail-sink.pid"
    if not pid_file.exists():
        return
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    stop(Path(sys.argv[1]))
