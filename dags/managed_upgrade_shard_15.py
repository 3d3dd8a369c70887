"""Managed CRM upgrade DAGs (Airflow), shard 15 of 16: `managed_upgrade__<customer_id>` per valid config.

Ops add `include/customers/<customer_id>.yaml`; its DAG appears in the shard its id hashes to.
"""

from managed_upgrade_airflow.dag_registry import register_customer_dags

register_customer_dags(globals(), shard=15)
