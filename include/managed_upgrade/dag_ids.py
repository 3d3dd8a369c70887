"""How a customer's DAG is named, defined once, so the factory, the registry, the listener and the
deadline callbacks agree; importing it costs nothing (the listener runs in every Airflow component)."""

from __future__ import annotations

DAG_ID_PREFIX = "managed_upgrade__"
"""Every customer DAG id starts with this; nothing else does."""


def dag_id_for(customer_id: str) -> str:
    """The DAG of a customer: ``managed_upgrade__<customer_id>``."""
    return f"{DAG_ID_PREFIX}{customer_id}"
