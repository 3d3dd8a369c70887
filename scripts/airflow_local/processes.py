"""Background processes the harness owns: started in their own group, recorded, stopped whole.

A pid file records the pid and the process start time, so `down` never signals a process that
merely reuses an old pid. Each component runs in its own session (process group); stopping it
signals the group and then any descendant that left the group.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

STOP_GRACE_SECONDS = 20.0
KILL_WAIT_SECONDS = 10.0
"""How long a SIGKILLed process may take to be gone (it cannot refuse; this only bounds the wait)."""
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "::1"})


@dataclass(frozen=True)
class ComponentProcess:
    """A started component: enough to find it again and to be sure it is still the same process."""

    name: str
    pid: int
    create_time: float
    log_path: Path

    def psutil_process(self) -> psutil.Process | None:
        """The live process, or None if it exited (or the pid now belongs to someone else)."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.create_time) > 0.5:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                _reap(self.pid)
                return None
        except psutil.NoSuchProcess:
            return None
        return process

    def is_running(self) -> bool:
        return self.psutil_process() is not None


def start_component(
    name: str,
    argv: list[str],
    environment: dict[str, str],
    log_path: Path,
    run_dir: Path,
    cwd: Path,
    *,
    die_with_caller: bool = False,
) -> ComponentProcess:
    """Start `argv` detached (own session, stdin closed), output to `log_path`, pid recorded.

    `die_with_caller` (Linux): the component gets SIGTERM when the calling process dies, so a
    test session killed hard leaves no Airflow behind. The command line's `up` outlives itself.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=environment,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_terminate_with_parent if die_with_caller else None,  # noqa: PLW1509  only prctl, async-signal-safe
        )
    component = ComponentProcess(
        name=name, pid=process.pid, create_time=psutil.Process(process.pid).create_time(), log_path=log_path
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    _pid_file(run_dir, name).write_text(
        json.dumps({"pid": component.pid, "create_time": component.create_time, "argv": argv}) + "\n"
    )
    return component


def recorded_component(run_dir: Path, name: str, log_path: Path) -> ComponentProcess | None:
    """The component recorded in `run_dir`, whether or not it still runs; None if never recorded."""
    pid_file = _pid_file(run_dir, name)
    if not pid_file.exists():
        return None
    record = json.loads(pid_file.read_text())
    return ComponentProcess(
        name=name, pid=int(record["pid"]), create_time=float(record["create_time"]), log_path=log_path
    )


def stop_components(
    run_dir: Path, components: Iterable[ComponentProcess], grace: float = STOP_GRACE_SECONDS
) -> list[str]:
    """SIGTERM each component's group, SIGKILL group and descendants still alive after `grace` s.

    Returns the names of the components that were running. Their pid files are removed either way.
    """
    components = list(components)
    running = [(component, component.psutil_process()) for component in components]
    running = [(component, process) for component, process in running if process is not None]
    members = [member for _, process in running for member in (process, *_descendants(process))]
    # Only the groups get SIGTERM: each component shuts its own children down (signalling those
    # directly as well makes shutdowns hang until the SIGKILL).
    for component, _ in running:
        _signal_group(component.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=grace)
    if alive:
        for component, _ in running:
            _signal_group(component.pid, signal.SIGKILL)
        for member in alive:
            _signal(member, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
    for component in components:
        _reap(component.pid)
        _pid_file(run_dir, component.name).unlink(missing_ok=True)
    return [component.name for component, _ in running]


def kill_components(run_dir: Path, components: Iterable[ComponentProcess]) -> list[str]:
    """SIGKILL each component's group and every descendant at once, as a crash ends them.

    No SIGTERM first: nothing gets to shut down, flush, or hand its work back. Returns the names of
    the components that were running; their pid files are removed either way.
    """
    components = list(components)
    running = [(component, component.psutil_process()) for component in components]
    running = [(component, process) for component, process in running if process is not None]
    members = [member for _, process in running for member in (process, *_descendants(process))]
    for component, _ in running:
        _signal_group(component.pid, signal.SIGKILL)
    for member in members:  # those that left the group
        _signal(member, signal.SIGKILL)
    psutil.wait_procs(members, timeout=KILL_WAIT_SECONDS)
    for component in components:
        _reap(component.pid)
        _pid_file(run_dir, component.name).unlink(missing_ok=True)
    return [component.name for component, _ in running]


def listening_sockets(components: Iterable[ComponentProcess]) -> list[tuple[str, int, str, int]]:
    """(component, pid, address, port) of every TCP socket in LISTEN state owned by the components."""
    owners: dict[int, str] = {}
    for component in components:
        process = component.psutil_process()
        if process is None:
            continue
        for member in [process, *_descendants(process)]:
            owners[member.pid] = component.name
    found = []
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in owners:
            found.append((owners[connection.pid], connection.pid, connection.laddr.ip, connection.laddr.port))
    return sorted(found)


def non_loopback(sockets: Iterable[tuple[str, int, str, int]]) -> list[tuple[str, int, str, int]]:
    return [entry for entry in sockets if entry[2] not in LOOPBACK_ADDRESSES]


def _terminate_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) in the child, between fork and exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _signal(process: psutil.Process, signum: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        process.send_signal(signum)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (the test session starts them)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"
