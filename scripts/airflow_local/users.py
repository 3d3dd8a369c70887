"""Who can log in to the local Airflow: fixed demo users plus everyone a customer config assigns.

Customer configs name the Airflow users who answer that customer's gates; those users need the
simple auth manager's `user` role, the lowest role allowed to answer a human-in-the-loop task.
A broken customer file must not stop the harness (the DAG shows that error), so it is reported
and skipped here.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import yaml

from airflow_local.private_files import write_private
from airflow_local.settings import ROLES, USERNAME_PATTERN, HarnessSettings

# ops triggers runs, manager watches, admin administers (DESIGN "who does what").
FIXED_USERS: dict[str, str] = {"ops": "op", "manager": "viewer", "admin": "admin"}
# Role given to the people a customer config names (consultants, project managers).
CUSTOMER_USER_ROLE = "user"
PASSWORD_BYTES = 12


def customer_users(customers_folder: Path) -> dict[str, str]:
    """Users named in the `users` section of every `<customers_folder>/*.yaml`, with role `user`."""
    users: dict[str, str] = {}
    for path in sorted(customers_folder.glob("*.yaml")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            _warn(f"{path}: not readable as YAML ({error}); its users are not created")
            continue
        section = document.get("users") if isinstance(document, dict) else None
        if not isinstance(section, dict):
            _warn(f"{path}: no `users` mapping; no users created for it")
            continue
        for role_name, names in section.items():
            if not isinstance(names, list):
                _warn(f"{path}: users.{role_name} is not a list; skipped")
                continue
            for name in names:
                if isinstance(name, str) and USERNAME_PATTERN.match(name):
                    users[name] = CUSTOMER_USER_ROLE
                else:
                    _warn(f"{path}: users.{role_name} entry {name!r} is not a valid user name; skipped")
    return users


def all_users(settings: HarnessSettings) -> dict[str, str]:
    """Every user with its role: customer users, then extra users, fixed users last (they win)."""
    users = customer_users(settings.customers_folder)
    users.update(dict(settings.extra_users))
    users.update(FIXED_USERS)
    unknown = {name: role for name, role in users.items() if role not in ROLES}
    if unknown:
        raise ValueError(f"unknown roles {unknown}; valid roles are {', '.join(ROLES)}")
    return users


def users_config_value(users: dict[str, str]) -> str:
    """The `[core] simple_auth_manager_users` value: `name:role,name:role`."""
    return ",".join(f"{name}:{role}" for name, role in sorted(users.items()))


def ensure_passwords(passwords_file: Path, users: dict[str, str]) -> dict[str, str]:
    """Give every user a password, keeping the ones already in the file; the file stays 0600."""
    existing: dict[str, str] = {}
    if passwords_file.exists():
        try:
            existing = json.loads(passwords_file.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as error:
            raise ValueError(f"{passwords_file}: not valid JSON ({error}); delete it to regenerate") from None
    passwords = {name: existing.get(name) or secrets.token_urlsafe(PASSWORD_BYTES) for name in users}
    passwords = dict(sorted(passwords.items()))
    if passwords != existing:
        write_private(passwords_file, json.dumps(passwords, indent=2) + "\n")
    return passwords


def read_passwords(passwords_file: Path) -> dict[str, str]:
    """The passwords `up` wrote; a clear error if the harness was never started here."""
    if not passwords_file.exists():
        raise FileNotFoundError(f"{passwords_file} does not exist; run `airflow-local up` first")
    return json.loads(passwords_file.read_text(encoding="utf-8"))


def _warn(message: str) -> None:
    print(f"airflow-local: warning: {message}", file=sys.stderr)
