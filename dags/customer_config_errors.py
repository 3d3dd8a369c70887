"""Import errors for invalid customer configs (Airflow shows them per file; this file has no DAG).

Kept apart from the DAG factory file on purpose: a DAG file that raises loses all its DAGs.
"""

from managed_upgrade_airflow.dag_registry import raise_for_invalid_configs

raise_for_invalid_configs()
