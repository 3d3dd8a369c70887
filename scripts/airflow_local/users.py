"""Who can log in to the local Airflow: fixed demo users plus everyone a customer config assigns.

Customer configs name the Airflow users who answer that customer's gates; those users need the
simple auth manager's `user` role, the lowest role allowed to answer a human-in-the-loop task.
A broken customer file must not stop the harness (the DAG shows that error), so it is reported
and skipped here.

With the FAB auth manager the same people log in, but roles differ: the fixed users get FAB's
`Admin`, `Op` and `Viewer` (the manager reads every customer's DAGs), extra users the FAB role of
their simple role, and the people of the customer configs no role of their own: the start-up sync
(`managed_upgrade_airflow.access_control`) gives each the role `customer_<id>` of every customer
whose config names them, so they see those customers' DAGs and nothing else.
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
# The FAB auth manager's built-in role for each simple auth manager role.
FAB_ROLES: dict[str, str] = {"viewer": "Viewer", "user": "User", "op": "Op", "admin": "Admin"}


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


def fab_users(settings: HarnessSettings, passwords: dict[str, str]) -> dict[str, dict[str, object]]:
    """The FAB users to create: password and FAB roles; the configs' people get their customer roles only.

    The format of `python -m managed_upgrade_airflow.access_control sync --users`.
    """
    granted = dict(settings.extra_users) | FIXED_USERS
    people = set(customer_users(settings.customers_folder)) - set(granted)
    return {
        name: {"password": passwords[name], "roles": [] if name in people else [FAB_ROLES[role]]}
        for name, role in sorted(all_users(settings).items())
    }


def write_fab_users(settings: HarnessSettings, passwords: dict[str, str]) -> None:
    """`<home>/fab-users.json` (owner-only: it holds the passwords), read by the start-up sync."""
    write_private(settings.fab_users_file, json.dumps(fab_users(settings, passwords), indent=2) + "\n")


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
