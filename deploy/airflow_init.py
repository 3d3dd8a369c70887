"""Checks and files the compose deployment's airflow-init prepares before any Airflow service starts.

``check-secrets`` refuses to start a deployment whose secrets are missing, still the placeholders of
``.env.example``, or unusable where they end up (URLs, Fernet). ``fab-users FILE`` writes the users of
``AIRFLOW_USERS`` with their ``AIRFLOW_USER_PASSWORDS`` and FAB roles (``admin`` -> Admin, ``op`` -> Op,
``viewer`` -> Viewer; ``user``: only the ``customer_<id>`` roles of the configs naming them, given by
``python -m managed_upgrade_airflow.access_control sync --users FILE``), so no password is generated
and printed to a log; both commands warn about users named in customer configs who could not log in to
answer a gate. ``write-passwords`` writes the simple auth manager's passwords file instead (a
deployment that switches back to it).

Stdlib, PyYAML and cryptography only (all in the Airflow image); runs as
``python /opt/airflow/deploy/airflow_init.py check-secrets|write-passwords``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

PLACEHOLDER_PREFIX = "change-me"
MIN_PASSWORD_LENGTH = 12
MIN_SECRET_LENGTH = 32
# Characters that survive inside a URL's userinfo without percent-encoding (RFC 3986 "unreserved").
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
# The separators of `[core] simple_auth_manager_users` (",", ":", "|") can never be part of a name.
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ROLES = ("viewer", "user", "op", "admin")
# Role the simple auth manager needs to answer a human-in-the-loop task.
GATE_ROLES = ("user", "op", "admin")

USERS_VARIABLE = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"
FAB_USERS_VARIABLE = "AIRFLOW_USERS"
# The FAB auth manager's role of each role of AIRFLOW_USERS; `user`s get their customers' roles only.
FAB_ROLES = {"viewer": ["Viewer"], "user": [], "op": ["Op"], "admin": ["Admin"]}
PASSWORDS_VARIABLE = "AIRFLOW_USER_PASSWORDS"  # pragma: allowlist secret
PASSWORDS_FILE_VARIABLE = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"  # pragma: allowlist secret
# Secrets that go into a URL (database passwords) and secrets that are used as they are.
URL_SECRETS = ("POSTGRES_PASSWORD", "LEDGER_DB_PASSWORD")
PLAIN_SECRETS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY")
FERNET_VARIABLE = "AIRFLOW__CORE__FERNET_KEY"


class DeploymentConfigError(ValueError):
    """A deployment setting in .env is missing or unusable; the message names it and the fix."""


def _is_placeholder(value: str) -> bool:
    return value.strip().lower().startswith(PLACEHOLDER_PREFIX)


def _require(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise DeploymentConfigError(f"{name} is not set; copy .env.example to .env and fill it in")
    if _is_placeholder(value):
        raise DeploymentConfigError(
            f"{name} is still the placeholder of .env.example; replace it in .env (see the comment there)"
        )
    return value


def check_secrets(environ: Mapping[str, str]) -> None:
    """Raise on the first secret that is missing, a placeholder, or unusable where it is used."""
    for name in URL_SECRETS:
        value = _require(environ, name)
        if not URL_SAFE.match(value):
            raise DeploymentConfigError(
                f"{name} is used inside database URLs and may only contain letters, digits and . _ ~ -"
                f" (generate one with: openssl rand -hex 24)"
            )
    for name in PLAIN_SECRETS:
        if len(_require(environ, name)) < MIN_SECRET_LENGTH:
            raise DeploymentConfigError(
                f"{name} must be at least {MIN_SECRET_LENGTH} characters (openssl rand -hex 32)"
            )
    fernet_key = _require(environ, FERNET_VARIABLE)
    try:
        valid_fernet = len(base64.urlsafe_b64decode(fernet_key.encode("ascii"))) == 32
    except (binascii.Error, UnicodeEncodeError):
        valid_fernet = False
    if not valid_fernet:
        raise DeploymentConfigError(
            f"{FERNET_VARIABLE} is not a Fernet key (32 url-safe base64-encoded bytes); generate one with: "
            'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )


def parse_users(value: str) -> dict[str, str]:
    """``name:role,...`` (the simple auth manager's format) as ``{name: role}``."""
    users: dict[str, str] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        name, sep, role = entry.partition(":")
        if not sep or not USERNAME.match(name) or role not in ROLES:
            raise DeploymentConfigError(
                f"AIRFLOW_USERS entry {entry!r} must be name:role with a name of letters, digits, _ . @ - "
                f"and a role of {', '.join(ROLES)}"
            )
        if name in users:
            raise DeploymentConfigError(f"AIRFLOW_USERS names {name!r} twice")
        users[name] = role
    if not users:
        raise DeploymentConfigError("AIRFLOW_USERS lists no user; nobody could log in")
    return users


def parse_passwords(value: str) -> dict[str, str]:
    """``name:password,...`` as ``{name: password}``; passwords cannot contain a comma."""
    passwords: dict[str, str] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        name, sep, password = entry.partition(":")
        if not sep or not name:
            raise DeploymentConfigError(
                f"{PASSWORDS_VARIABLE} has an entry without 'name:' (entries are name:password separated "
                f"by commas; a password cannot contain a comma)"
            )
        if name in passwords:
            raise DeploymentConfigError(f"{PASSWORDS_VARIABLE} gives user {name!r} two passwords")
        if _is_placeholder(password):
            raise DeploymentConfigError(
                f"{PASSWORDS_VARIABLE}: the password of {name!r} is still the placeholder of .env.example"
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise DeploymentConfigError(
                f"{PASSWORDS_VARIABLE}: the password of {name!r} must have at least "
                f"{MIN_PASSWORD_LENGTH} characters"
            )
        passwords[name] = password
    return passwords


def passwords_for(users: Mapping[str, str], passwords: Mapping[str, str]) -> dict[str, str]:
    """Exactly one password per user: a user without one would get a random one printed to a log."""
    missing = sorted(set(users) - set(passwords))
    if missing:
        raise DeploymentConfigError(f"{PASSWORDS_VARIABLE} has no password for {', '.join(missing)}")
    unknown = sorted(set(passwords) - set(users))
    if unknown:
        raise DeploymentConfigError(
            f"{PASSWORDS_VARIABLE} has passwords for {', '.join(unknown)}, who are not in AIRFLOW_USERS"
        )
    return {name: passwords[name] for name in sorted(users)}


def write_passwords_file(path: Path, passwords: Mapping[str, object]) -> None:
    """Replace the file atomically, readable by its owner only (the Airflow user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(dict(passwords), stream, indent=2)
            stream.write("\n")
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fab_users(users: Mapping[str, str], passwords: Mapping[str, str]) -> dict[str, dict[str, object]]:
    """The ``--users`` file of ``managed_upgrade_airflow.access_control sync``: password and FAB roles."""
    return {
        name: {"password": passwords[name], "roles": FAB_ROLES[role]} for name, role in sorted(users.items())
    }


def users_without_gate_login(customers_dir: Path, users: Mapping[str, str]) -> list[str]:
    """Warnings for customer-config users who are missing from AIRFLOW_USERS or cannot answer gates.

    Only warnings: a broken customer file must not stop the deployment (its DAG shows the error).
    """
    warnings = []
    for path in sorted(customers_dir.glob("*.yaml")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            warnings.append(f"{path.name}: not readable ({error}); its users were not checked")
            continue
        section = document.get("users") if isinstance(document, dict) else None
        if not isinstance(section, dict):
            continue
        for role_name, names in section.items():
            for name in names if isinstance(names, list) else []:
                if name not in users:
                    warnings.append(
                        f"{path.name}: users.{role_name} names {name!r}, who is not in AIRFLOW_USERS "
                        f"and cannot log in to answer this customer's gates"
                    )
                elif users[name] not in GATE_ROLES:
                    warnings.append(
                        f"{path.name}: users.{role_name} names {name!r}, whose role {users[name]!r} "
                        f"cannot answer gates (needs one of {', '.join(GATE_ROLES)})"
                    )
    return warnings


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow_init.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check-secrets", "write-passwords", "fab-users"])
    parser.add_argument("file", nargs="?", type=Path, help="fab-users: where to write the users (0600)")
    parser.add_argument(
        "--customers", type=Path, default=Path("/opt/airflow/include/customers"), help="customer configs"
    )
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        if args.command == "check-secrets":
            check_secrets(env)
            print("airflow-init: secrets set")
            return 0
        if args.command == "fab-users":
            if args.file is None:
                raise DeploymentConfigError("fab-users needs the file to write the users to")
            users = parse_users(_require(env, FAB_USERS_VARIABLE))
            passwords = passwords_for(users, parse_passwords(_require(env, PASSWORDS_VARIABLE)))
            write_passwords_file(args.file, fab_users(users, passwords))
            print(f"airflow-init: {len(users)} FAB users to create written to {args.file}")
        else:
            users = parse_users(_require(env, USERS_VARIABLE))
            passwords = passwords_for(users, parse_passwords(_require(env, PASSWORDS_VARIABLE)))
            target = Path(_require(env, PASSWORDS_FILE_VARIABLE))
            write_passwords_file(target, passwords)
            print(f"airflow-init: passwords of {len(passwords)} users written to {target}")
        for warning in users_without_gate_login(args.customers, users):
            print(f"airflow-init: warning: {warning}", file=sys.stderr)
        return 0
    except DeploymentConfigError as error:
        print(f"airflow-init: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
