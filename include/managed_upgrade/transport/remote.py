"""A customer host as the operations see it: argv-only commands, files and checksums over one SSH session.

Every command is an argv list joined with :func:`shlex.join` right here, the only place a remote
command line is built, so no value (path, version, file name) can be read as shell syntax by the
remote login shell. Files move through SFTP, not through ``echo``/``cat`` command lines. The
connection is a plain ``paramiko.SSHClient`` created elsewhere (the Airflow hook, with the
connection's pinned host key), or by :func:`connect` for tests and benchmarks.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import posixpath
import shlex
import stat
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from managed_upgrade.errors import OperationError
from managed_upgrade.transport.path_policy import require_under

if TYPE_CHECKING:  # paramiko is imported where a connection is made: DAG parsing never needs it
    import paramiko

log = logging.getLogger(__name__)

_HOST_KEY_TYPES: dict[str, str] = {
    "ssh-ed25519": "Ed25519Key",
    "ssh-rsa": "RSAKey",
    "ecdsa-sha2-nistp256": "ECDSAKey",
    "ecdsa-sha2-nistp384": "ECDSAKey",
    "ecdsa-sha2-nistp521": "ECDSAKey",
}
"""Pinned host key types and their paramiko key class names."""


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach a host: what a paramiko client or the OpenSSH binaries need.

    ``host_key`` is the pinned public key (``"ssh-ed25519 AAAA..."``); without it the system
    known_hosts must know the host. Exactly one of ``key_file`` / ``private_key`` (PEM text) or
    ``password`` authenticates.
    """

    host: str
    port: int = 22
    username: str = "root"
    key_file: str | None = None
    private_key: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    host_key: str | None = None

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts spells it (``[host]:port`` for non-standard ports)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def known_hosts_line(self) -> str:
        """One known_hosts line pinning :attr:`host_key` (raises if none is pinned)."""
        if not self.host_key:
            raise OperationError(
                f"{self.host}:{self.port}: no pinned host key to write a known_hosts line for"
            )
        key_type, key_data = self.host_key.split()[:2]
        return f"{self.known_hosts_name} {key_type} {key_data}\n"

    def paramiko_host_key(self) -> paramiko.PKey:
        import paramiko

        parts = (self.host_key or "").split()
        if len(parts) < 2 or parts[0] not in _HOST_KEY_TYPES:
            raise OperationError(
                f"{self.host}:{self.port}: pinned host key {self.host_key!r} is not "
                f"'<type> <base64>' with a type among {', '.join(_HOST_KEY_TYPES)}"
            )
        key_class: type[paramiko.Ed25519Key | paramiko.RSAKey | paramiko.ECDSAKey] = getattr(
            paramiko, _HOST_KEY_TYPES[parts[0]]
        )
        return key_class(data=base64.b64decode(parts[1]))


def connect(endpoint: SshEndpoint, timeout: float = 15.0) -> paramiko.SSHClient:
    """A connected client that refuses unknown or changed host keys (``RejectPolicy``)."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if endpoint.host_key:
        key = endpoint.paramiko_host_key()
        client.get_host_keys().add(endpoint.known_hosts_name, key.get_name(), key)
    else:
        client.load_system_host_keys()
    pkey = None
    if endpoint.private_key:
        pkey = paramiko.PKey.from_private_key(BytesIO(endpoint.private_key.encode()))  # type: ignore[arg-type]
    client.connect(
        endpoint.host,
        port=endpoint.port,
        username=endpoint.username,
        key_filename=endpoint.key_file,
        pkey=pkey,
        password=endpoint.password,
        look_for_keys=False,
        allow_agent=False,
        compress=False,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )
    return client


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.stdout)


_HOST_AGENT_SOURCE = (Path(__file__).with_name("host_agent.py")).read_text(encoding="utf-8")


def describe_command(argv: Sequence[str]) -> str:
    """``argv`` for logs and messages: the host agent's source shown as ``<host_agent>``, long lines cut."""
    text = shlex.join("<host_agent>" if arg == _HOST_AGENT_SOURCE else arg for arg in argv)
    return text if len(text) <= 400 else text[:400] + " ..."


class RemoteCommandError(OperationError):
    """A command on a host exited non-zero (or could not be started)."""

    def __init__(self, host: str, argv: Sequence[str], exit_code: int, stderr: str) -> None:
        self.host = host
        self.argv = tuple(argv)
        self.exit_code = exit_code
        self.stderr = stderr
        detail = stderr.strip()[-2000:] or "(no error output)"
        super().__init__(f"{host}: `{describe_command(self.argv)}` exited {exit_code}: {detail}")


def agent_argv(*args: str) -> list[str]:
    """argv running :mod:`managed_upgrade.transport.host_agent` with ``args`` under the host's ``python3``."""
    return ["python3", "-c", _HOST_AGENT_SOURCE, *args]


class RemoteHost:
    """Commands and files on one host over one SSH connection; ``label`` names it in messages."""

    def __init__(self, client: paramiko.SSHClient, label: str, endpoint: SshEndpoint | None = None) -> None:
        self.client = client
        self.label = label
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._commands: dict[str, bool] = {}

    def __enter__(self) -> RemoteHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if "sftp" in self.__dict__:
            self.sftp.close()
        self.client.close()

    # --- commands ---------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        stdin: bytes | Iterable[bytes] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` (never a shell string); raise :class:`RemoteCommandError` on failure if ``check``.

        ``stdin`` (bytes, or chunks produced while the command already runs) is sent from a thread,
        so output is read meanwhile. ``timeout`` bounds the wait for output (not the total run
        time); ``None`` waits forever.
        """
        argv = tuple(argv)
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise TypeError(f"argv must be a non-empty sequence of str, got {argv!r}")
        command = shlex.join(argv)
        log.info("%s$ %s", self.label, describe_command(argv))
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise OperationError(f"{self.label}: SSH connection is closed")
        channel = transport.open_session()
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            stderr_chunks: list[bytes] = []
            reader = threading.Thread(target=_drain_stderr, args=(channel, stderr_chunks), daemon=True)
            reader.start()
            send_errors: list[BaseException] = []
            sender = threading.Thread(target=_send_stdin, args=(channel, stdin, send_errors), daemon=True)
            sender.start()
            stdout = bytearray()
            while chunk := channel.recv(1024 * 1024):
                stdout += chunk
            reader.join(timeout)
            sender.join(timeout)
            exit_code = channel.recv_exit_status()
            if send_errors:
                raise send_errors[0]
        finally:
            channel.close()
        result = CommandResult(argv, exit_code, bytes(stdout), b"".join(stderr_chunks))
        if check and exit_code != 0:
            raise RemoteCommandError(self.label, argv, exit_code, result.error_text)
        return result

    def has_command(self, name: str) -> bool:
        """Whether ``name`` is on the host's PATH (cached per connection)."""
        with self._lock:
            if name not in self._commands:
                probe = self.run(["sh", "-c", 'command -v -- "$1" >/dev/null', "sh", name], check=False)
                self._commands[name] = probe.exit_code == 0
            return self._commands[name]

    def run_agent(self, *args: str, timeout: float | None = None) -> Any:
        """Run :mod:`.host_agent` on the host with ``args``; return its JSON answer."""
        return self.run(agent_argv(*args), timeout=timeout).json()

    # --- files ------------------------------------------------------------------------------

    @cached_property
    def sftp(self) -> paramiko.SFTPClient:
        return self.client.open_sftp()

    def stat(self, path: str) -> paramiko.SFTPAttributes | None:
        """``lstat`` of ``path``, or ``None`` if it does not exist."""
        try:
            return self.sftp.lstat(path)
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def is_dir(self, path: str) -> bool:
        attrs = self.stat(path)
        return attrs is not None and stat.S_ISDIR(attrs.st_mode or 0)

    def file_size(self, path: str) -> int | None:
        """Size of a regular file, ``None`` if absent (a directory there is an error)."""
        attrs = self.stat(path)
        if attrs is None:
            return None
        if not stat.S_ISREG(attrs.st_mode or 0):
            raise OperationError(f"{self.label}: {path} exists but is not a regular file")
        return attrs.st_size or 0

    def listdir(self, path: str) -> list[str]:
        return sorted(self.sftp.listdir(path))

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        """``mkdir -p`` through SFTP (no command, so no login shell is started on the host)."""
        missing: list[str] = []
        current = path.rstrip("/") or "/"
        while current != "/" and not self.is_dir(current):
            missing.append(current)
            current = posixpath.dirname(current)
        for directory in reversed(missing):
            try:
                self.sftp.mkdir(directory, mode)
            except OSError:
                if not self.is_dir(directory):  # lost a race with another creator: fine if it exists now
                    raise OperationError(f"{self.label}: cannot create directory {directory}") from None

    def remove_tree(self, path: str, roots: Sequence[str] | None = None) -> bool:
        """``rm -rf`` done by the host agent, which refuses unless ``path`` -- as written and as it really
        is, symlinks resolved on the host -- obeys :mod:`managed_upgrade.transport.path_policy` with ``roots``
        (``None``: the always-refused rules only). A symlink is removed, never followed. Returns whether
        anything was there to remove."""
        require_under(path, roots, action="remove", label=self.label)  # the same rules, asked here first
        return bool(self.run_agent("remove", path, *(roots or ()))["removed"])

    def remove_small_tree(self, path: str) -> None:
        """Remove a directory of a few files through SFTP (cheaper than a command for backup folders)."""
        attrs = self.stat(path)
        if attrs is None:
            return
        if not stat.S_ISDIR(attrs.st_mode or 0):
            self.remove_file(path)
            return
        for entry in self.sftp.listdir_attr(path):
            child = posixpath.join(path, entry.filename)
            if stat.S_ISDIR(entry.st_mode or 0):
                self.remove_small_tree(child)
            else:
                self.remove_file(child)
        self.sftp.rmdir(path)

    def remove_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.sftp.remove(path)

    def rename(self, source: str, target: str) -> None:
        """Atomic rename on the host (replaces ``target`` if it is a file)."""
        self.sftp.posix_rename(source, target)

    def read_bytes(self, path: str) -> bytes:
        with self.sftp.open(path, "rb") as handle:
            handle.prefetch()
            return handle.read()

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` atomically (a temporary sibling renamed over it)."""
        temporary = posixpath.join(
            posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp"
        )
        try:
            with self.sftp.open(temporary, "wb") as handle:
                handle.set_pipelined(True)
                handle.write(data)
            self.sftp.chmod(temporary, mode)
            self.rename(temporary, path)
        except BaseException:
            self.remove_file(temporary)
            raise

    def write_json(self, path: str, value: Any) -> bytes:
        """Write ``value`` as JSON atomically; return the bytes written (to checksum them)."""
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        self.write_bytes(path, data)
        return data

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def download(self, path: str, local: Path) -> None:
        self.sftp.get(path, str(local))

    # --- checksums --------------------------------------------------------------------------

    def sha256(self, path: str, timeout: float | None = None) -> str:
        """sha256 of a file on the host, computed there.

        ``openssl dgst`` when present (it uses the CPU's SHA extensions: ~4x faster than coreutils'
        ``sha256sum`` here), else ``sha256sum``.
        """
        if self.has_command("openssl"):
            output = self.run(["openssl", "dgst", "-sha256", "-r", path], timeout=timeout).text
        else:
            output = self.run(["sha256sum", "--", path], timeout=timeout).text
        digest = output.split(" ", 1)[0].lstrip("\\").strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise OperationError(f"{self.label}: unexpected checksum output for {path}: {output[:200]!r}")
        return digest


def _send_stdin(
    channel: paramiko.Channel, stdin: bytes | Iterable[bytes] | None, errors: list[BaseException]
) -> None:
    try:
        if isinstance(stdin, bytes | bytearray):
            channel.sendall(stdin)
        elif stdin is not None:
            for chunk in stdin:
                channel.sendall(chunk)
    except BaseException as exc:  # re-raised by run() in the calling thread
        errors.append(exc)
    finally:
        channel.shutdown_write()


def _drain_stderr(channel: paramiko.Channel, chunks: list[bytes]) -> None:
    """Read stderr concurrently: unread stderr would stall the channel window and block stdout."""
    try:
        while chunk := channel.recv_stderr(1024 * 1024):
            chunks.append(chunk)
    except OSError:  # the channel was closed under us; stdout's reader reports the failure
        return
