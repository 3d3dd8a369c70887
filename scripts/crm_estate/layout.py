"""Where every piece of the simulated estate lives, derived from one root directory.

Keeping all paths in one place lets the CLI, the Python API and the tests agree on them without
passing paths around, and lets several estates (different roots and ports) coexist on one machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/tmp/crm-estate")
DEFAULT_BASE_PORT = 2221
ENVIRONMENTS: tuple[str, ...] = ("dev", "uat", "prod")
PRODUCT = "aurea-crm"
LOOPBACK = "127.0.0.1"


def root_from_env(root: str | os.PathLike[str] | None = None) -> Path:
    """The estate root: the argument, else $ESTATE_ROOT, else the contract's default."""
    chosen = root if root is not None else os.environ.get("ESTATE_ROOT") or DEFAULT_ROOT
    return Path(chosen).absolute()


def base_port_from_env() -> int:
    """First sshd port ($ESTATE_BASE_PORT); dev, uat and prod take it and the next two."""
    raw = os.environ.get("ESTATE_BASE_PORT", str(DEFAULT_BASE_PORT))
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"ESTATE_BASE_PORT must be an integer port number, got {raw!r}") from None
    if not 1024 <= port <= 65533:
        raise ValueError(f"ESTATE_BASE_PORT must be between 1024 and 65533, got {port}")
    return port


@dataclass(frozen=True)
class EstateLayout:
    """Paths under one estate root."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def client_key(self) -> Path:
        return self.keys_dir / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.keys_dir / "known_hosts"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    @property
    def pg_dir(self) -> Path:
        return self.root / "pg"

    @property
    def connections_env(self) -> Path:
        return self.root / "connections.env"

    @property
    def connections_json(self) -> Path:
        return self.root / "connections.json"

    def host_dir(self, env: str) -> Path:
        return self.root / "hosts" / env

    def host_key(self, env: str) -> Path:
        return self.keys_dir / f"host_{env}_ed25519"

    def authorized_keys(self, env: str) -> Path:
        return self.host_dir(env) / "authorized_keys"

    def sshd_config(self, env: str) -> Path:
        return self.run_dir / f"sshd_{env}.conf"

    def sshd_pid(self, env: str) -> Path:
        return self.run_dir / f"sshd_{env}.pid"

    def sshd_log(self, env: str) -> Path:
        return self.log_dir / f"sshd_{env}.log"

    def release_dir(self, version: str, product: str = PRODUCT) -> Path:
        return self.releases_dir / product / version

    def default_install_path(self, env: str, customer_id: str) -> Path:
        return self.host_dir(env) / "crm" / customer_id

    def require_inside(self, path: Path, what: str) -> Path:
        """Refuse paths outside the root: the estate must never write anywhere else."""
        resolved = Path(os.path.normpath(path.absolute()))
        root = Path(os.path.normpath(self.root))
        if resolved == root or root not in resolved.parents:
            raise ValueError(
                f"{what} {str(path)!r} is outside the estate root {str(root)!r}; the simulated estate "
                f"only provisions under its root (set ESTATE_ROOT or change the path)"
            )
        return resolved
