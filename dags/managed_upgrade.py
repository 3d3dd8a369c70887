"""Managed CRM upgrade DAGs (Airflow): one `managed_upgrade__<customer_id>` per valid customer config.

Ops add `include/customers/<customer_id>.yaml`; the DAG appears at the next parse. An invalid file
shows up in the import errors of `customer_config_errors.py` instead and never hides other customers.
"""

from managed_upgrade_airflow.dag_registry import register_customer_dags

register_customer_dags(globals())
