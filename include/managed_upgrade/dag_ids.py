"""How a customer's DAGs and access role are named, defined once, so the factory, the registry, the
listener, the deadline callbacks and the access roles agree; importing it costs nothing (the listener
runs in every Airflow component)."""

from __future__ import annotations

DAG_ID_PREFIX = "managed_upgrade__"
"""Every customer DAG id starts with this; nothing else does (review DAG ids neither)."""

REVIEW_DAG_ID_PREFIX = "managed_upgrade_review__"
"""Every review DAG id starts with this: one review DAG per customer, beside its customer DAG."""

CUSTOMER_ROLE_PREFIX = "customer_"
"""Every per-customer access role (FAB auth manager) starts with this."""

MAX_DAG_ID_LENGTH = 250
"""Airflow's limit (``airflow.sdk`` checks ``dag_id`` against ``ID_LEN`` = 250 characters)."""

MAX_ROLE_NAME_LENGTH = 64
"""The FAB auth manager's role names (``ab_role.name``) hold at most 64 characters."""


def dag_id_for(customer_id: str) -> str:
    """The DAG of a customer: ``managed_upgrade__<customer_id>``."""
    return f"{DAG_ID_PREFIX}{customer_id}"


def review_dag_id_for(customer_id: str) -> str:
    """The DAG whose runs are a customer's review questions: ``managed_upgrade_review__<customer_id>``."""
    return f"{REVIEW_DAG_ID_PREFIX}{customer_id}"


def is_review_dag_id(dag_id: str) -> bool:
    """Whether ``dag_id`` is a customer's review DAG."""
    return dag_id.startswith(REVIEW_DAG_ID_PREFIX) and len(dag_id) > len(REVIEW_DAG_ID_PREFIX)


def customer_id_of(dag_id: str) -> str | None:
    """The customer of a customer DAG or a review DAG id; ``None`` for any other DAG."""
    for prefix in (DAG_ID_PREFIX, REVIEW_DAG_ID_PREFIX):
        if dag_id.startswith(prefix) and len(dag_id) > len(prefix):
            return dag_id[len(prefix) :]
    return None


def review_dag_id_of(dag_id: str) -> str | None:
    """The review DAG of the customer whose DAG (or review DAG) is ``dag_id``; ``None`` for other DAGs."""
    customer_id = customer_id_of(dag_id)
    return None if customer_id is None else review_dag_id_for(customer_id)


def customer_role_for(customer_id: str) -> str:
    """The access role of a customer's people: ``customer_<customer_id>`` (read and answer its DAGs)."""
    return f"{CUSTOMER_ROLE_PREFIX}{customer_id}"
