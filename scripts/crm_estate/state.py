"""The estate's record of what it started and how to reach it (``<root>/state.json``).

``up`` writes it, everything else reads it, so clients (tests, benchmarks, the CLI) find ports,
host keys and the database server without re-deriving them from the environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from crm_estate.layout import ENVIRONMENTS

STATE_FORMAT = 1


@dataclass
class HostState:
    """One simulated host: an sshd on a loopback port with its own host key."""

    env: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA..."


@dataclass
class PgState:
    """The PostgreSQL server holding the config databases."""

    mode: Literal["external", "private"]
    host: str
    port: int
    user: str
    data_dir: str | None = None  # only for a private cluster


@dataclass
class EstateState:
    """Everything a client needs to use a running estate."""

    root: str
    user: str
    base_port: int
    hosts: dict[str, HostState]
    pg: PgState
    format: int = STATE_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> EstateState:
        try:
            raw = json.loads(text)
            if raw.get("format") != STATE_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {STATE_FORMAT}")
            return cls(
                root=raw["root"],
                user=raw["user"],
                base_port=int(raw["base_port"]),
                hosts={env: HostState(**host) for env, host in sorted(raw["hosts"].items(), key=_env_order)},
                pg=PgState(**raw["pg"]),
                format=raw["format"],
                extra=raw.get("extra", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{source}: unreadable estate state ({exc}); run `scripts/estate down --purge` "
                f"and `scripts/estate up`"
            ) from exc


def _env_order(item: tuple[str, Any]) -> int:
    env = item[0]
    return ENVIRONMENTS.index(env) if env in ENVIRONMENTS else len(ENVIRONMENTS)


def read_state(path: Path) -> EstateState | None:
    if not path.exists():
        return None
    return EstateState.from_json(path.read_text(), path)


def write_state(path: Path, state: EstateState) -> None:
    """Atomic replace, so a concurrent reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(state.to_json())
    tmp.replace(path)


_held_locks: dict[Path, int] = {}
_held_guard = threading.Lock()


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Serialise up/down/reset across processes (parallel test sessions may all call up).

    Re-entrant within one process, so ``up`` can call helpers that take the lock themselves."""
    key = lock_file.absolute()
    with _held_guard:
        if _held_locks.get(key):
            _held_locks[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held_locks[key] -= 1
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with _held_guard:
            _held_locks[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                _held_locks[key] = 0
            fcntl.flock(handle, fcntl.LOCK_UN)
