"""Ed25519 key material for the estate, generated at ``up`` so nothing secret is ever committed.

Uses ``cryptography`` (already a paramiko dependency) rather than shelling out to ssh-keygen.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ensure_ed25519_key(private_path: Path, comment: str) -> str:
    """Create the key pair if missing; return the public key line ``ssh-ed25519 AAAA... comment``."""
    public_path = private_path.with_name(private_path.name + ".pub")
    if private_path.exists() and public_path.exists():
        return public_path.read_text().strip()
    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public_line = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_bytes)
    public_path.write_text(f"{public_line} {comment}\n")
    return f"{public_line} {comment}"


def key_type_and_data(public_line: str) -> str:
    """``ssh-ed25519 AAAA...`` without the comment (the form known_hosts and host_key extras use)."""
    parts = public_line.split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {public_line!r}")
    return f"{parts[0]} {parts[1]}"
