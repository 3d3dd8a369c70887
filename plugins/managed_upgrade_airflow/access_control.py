"""Each person sees only their customers: one FAB role per customer, granted that customer's DAGs.

With the FAB auth manager (``apache-airflow-providers-fab``), a DAG's ``access_control`` grants roles
access to that one DAG. Every customer DAG ``managed_upgrade__<customer_id>`` and its review DAG
``managed_upgrade_review__<customer_id>`` grant the role ``customer_<customer_id>``
(:func:`managed_upgrade.dag_ids.customer_role_for`) reading and editing them
(:data:`CUSTOMER_DAG_ACCESS`). What a DAG's sub-entities need besides (runs, task instances, logs,
HITL details) is a role-wide permission on that kind of entity, which FAB combines with the DAG's own
permission: a consultant can read the logs of exactly the DAGs their roles may read
(:data:`CUSTOMER_ROLE_PERMISSIONS`). Managers get FAB's ``Viewer`` (every DAG), ops ``Op``.

The roles come from the customer configs: :func:`sync_customer_roles` creates each valid config's role
with those permissions and gives it to the config's ``users`` (consultants and project managers, the
people who answer its gates). Run it before the dag-processor parses a new customer -- FAB refuses a
DAG whose ``access_control`` names a missing role -- and after changing a config's users::

    python -m managed_upgrade_airflow.access_control sync --customers include/customers [--users FILE]

``--users`` names a JSON file ``{"<user>": {"password": "...", "roles": ["Admin"], "email": "..."}}`` of
users to create where they are missing (the local harness and the compose deployment's airflow-init
write it); people a config names who exist nowhere are reported, not invented. The simple auth
manager (the demo's) ignores ``access_control``: there every ``user`` sees every DAG.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from managed_upgrade.dag_ids import customer_role_for

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig

# FAB resource and action names (airflow.providers.fab.www.security.permissions in provider 3.10.2).
DAGS, DAG_RUNS, TASK_INSTANCES, TASK_LOGS, HITL_DETAIL = (
    "DAGs",
    "DAG Runs",
    "Task Instances",
    "Task Logs",
    "HITL Detail",
)
CAN_READ, CAN_EDIT, MENU_ACCESS = "can_read", "can_edit", "menu_access"

CUSTOMER_DAG_ACCESS: Mapping[str, frozenset[str]] = {
    DAGS: frozenset({CAN_READ, CAN_EDIT}),
    DAG_RUNS: frozenset({CAN_READ}),
}
"""What a customer's role may do with that customer's DAGs (the DAGs' ``access_control``): read them
and edit them (answer, clear, mark, pause). Triggering stays with ops, who have ``Op``."""

CUSTOMER_ROLE_PERMISSIONS: tuple[tuple[str, str], ...] = (
    *((CAN_READ, resource) for resource in (DAG_RUNS, TASK_INSTANCES, TASK_LOGS, HITL_DETAIL)),
    *((CAN_READ, resource) for resource in ("XComs", "DAG Code", "DAG Dependencies", "DAG Versions")),
    *((CAN_READ, resource) for resource in ("DAG Warnings", "Audit Logs", "Website")),
    *((CAN_EDIT, resource) for resource in (DAG_RUNS, TASK_INSTANCES, HITL_DETAIL)),
    *((action, resource) for resource in ("My Profile", "My Password") for action in (CAN_READ, CAN_EDIT)),
    *((MENU_ACCESS, resource) for resource in (DAGS, DAG_RUNS, TASK_INSTANCES, HITL_DETAIL)),
    *((MENU_ACCESS, resource) for resource in ("Browse", "Docs", "Documentation")),
)
"""The role-wide permissions of a customer role. None of them names a DAG: FAB grants a sub-entity of a
DAG (``GET .../dagRuns/{run}/taskInstances/{task}/logs/1``) only with the role-wide permission on the
entity *and* the DAG's own (``DAG:<dag_id>``), so these open exactly the DAGs that grant the role.
No ``DAGs`` permission here: that one would open every DAG."""

ACCESS_CONTROL_WARNING = "The airflow.security.permissions module is deprecated"
"""What Airflow 3.3.2's ``DAG`` warns whenever ``access_control`` is set, whatever the auth manager and
although no such module is imported: ``access_control`` is still how the FAB provider grants one DAG."""


def customer_access_control(config: CustomerConfig) -> dict[str, dict[str, set[str]]]:
    """``access_control`` of the customer's DAG and review DAG: its role reads and edits them."""
    role = customer_role_for(config.customer_id)
    return {role: {resource: set(actions) for resource, actions in CUSTOMER_DAG_ACCESS.items()}}


@contextmanager
def access_control_warning_silenced() -> Iterator[None]:
    """Around ``DAG(access_control=...)``: drop :data:`ACCESS_CONTROL_WARNING`, keep every other warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ACCESS_CONTROL_WARNING)
        yield


@dataclass(frozen=True)
class UserSpec:
    """A user to create if missing: password, FAB roles besides their customer roles, e-mail."""

    password: str
    roles: tuple[str, ...] = ()
    email: str | None = None


@dataclass
class RolePlan:
    """What :func:`sync_customer_roles` makes true: customer roles, who holds which, users to create."""

    customer_roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """role -> the users the customer's config names (consultants, project managers)."""
    emails: dict[str, str] = field(default_factory=dict)
    """user -> e-mail from a config's contacts (FAB wants one e-mail per user)."""
    users: dict[str, UserSpec] = field(default_factory=dict)

    def roles_of(self, user: str) -> list[str]:
        """Every role ``user`` should hold: the given FAB roles, then each customer role naming them."""
        given = list(self.users[user].roles) if user in self.users else []
        return given + [role for role, people in sorted(self.customer_roles.items()) if user in people]


def plan_roles(
    configs: Mapping[str, CustomerConfig], users: Mapping[str, UserSpec] | None = None
) -> RolePlan:
    """The customer roles of ``configs`` (customer id -> config) and the users to create."""
    plan = RolePlan(users=dict(users or {}))
    for customer_id, config in sorted(configs.items()):
        people = dict.fromkeys((*config.users.consultant, *config.users.project_manager))
        plan.customer_roles[customer_role_for(customer_id)] = tuple(people)
        for role in ("consultant", "project_manager"):
            for contact in getattr(config.contacts, role):
                if contact.user:
                    plan.emails.setdefault(contact.user, contact.email)
    return plan


def sync_customer_roles(plan: RolePlan, report: Any = print) -> list[str]:
    """Make ``plan`` true in FAB's tables (idempotent); returns warnings about people FAB lacks."""
    from managed_upgrade_airflow.compat import fab_security_manager

    warnings_: list[str] = []
    with fab_security_manager() as manager:
        for role_name in sorted(plan.customer_roles):
            role = manager.find_role(role_name) or manager.add_role(role_name)
            held = {(perm.action.name, perm.resource.name) for perm in role.permissions}
            for action, resource in CUSTOMER_ROLE_PERMISSIONS:
                if (action, resource) not in held:
                    permission = manager.get_permission(action, resource) or manager.create_permission(
                        action, resource
                    )
                    manager.add_permission_to_role(role, permission)
        report(f"access roles: {len(plan.customer_roles)} customer role(s) in place")
        people = sorted({*plan.users, *(user for users in plan.customer_roles.values() for user in users)})
        for name in people:
            wanted = [manager.find_role(role) for role in plan.roles_of(name)]
            missing_roles = [
                role for role, found in zip(plan.roles_of(name), wanted, strict=True) if not found
            ]
            if missing_roles:
                warnings_.append(f"user {name}: role(s) {', '.join(missing_roles)} do not exist; not given")
            roles = [role for role in wanted if role is not None]
            user = manager.find_user(username=name)
            if user is None:
                spec = plan.users.get(name)
                if spec is None:
                    warnings_.append(
                        f"user {name} (named in a customer config) does not exist: create them (or let them "
                        "log in once through your identity provider) and run this again"
                    )
                    continue
                email = spec.email or plan.emails.get(name) or f"{name}@users.invalid"
                created = manager.add_user(name, name, "-", email, roles, spec.password)
                if not created:
                    warnings_.append(f"user {name}: FAB refused to create them (e-mail {email} taken?)")
                continue
            have = {role.name for role in user.roles}
            extra = [role for role in roles if role.name not in have]
            if extra:
                user.roles = [*user.roles, *extra]
                manager.update_user(user)
        report(f"access roles: {len(people)} user(s) checked")
    return warnings_


def read_user_specs(path: Path) -> dict[str, UserSpec]:
    """The ``--users`` file: ``{"<user>": {"password": ..., "roles": [...], "email": ...}}``."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object of users")
    specs = {}
    for name, entry in document.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str) or not entry["password"]:
            raise ValueError(f"{path}: {name}: needs a non-empty 'password'")
        roles = entry.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise ValueError(f"{path}: {name}: 'roles' must be a list of role names")
        specs[str(name)] = UserSpec(entry["password"], tuple(roles), entry.get("email"))
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m managed_upgrade_airflow.access_control", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="create the customer roles and give them to the configs' users")
    sync.add_argument("--customers", type=Path, required=True, help="folder of the customer configs")
    sync.add_argument("--users", type=Path, help="JSON file of users to create where missing")
    arguments = parser.parse_args(argv)

    from managed_upgrade.config import load_customer_configs

    configs, errors = load_customer_configs(arguments.customers)
    for path, error in sorted(errors.items()):
        print(f"access roles: {path.name} is invalid, no role for it: {error.problems[0]}", file=sys.stderr)
    try:
        users = read_user_specs(arguments.users) if arguments.users else {}
    except (OSError, ValueError) as error:
        print(f"access roles: {error}", file=sys.stderr)
        return 2
    by_id = {config.customer_id: config for config in configs.values()}
    for warning in sync_customer_roles(plan_roles(by_id, users)):
        print(f"access roles: warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
