"""Airflow's cluster policies for the managed upgrade (Airflow imports this module by name at start-up).

Airflow puts the plugins folder on ``sys.path``, so every component -- above all the scheduler, which
creates task instances -- finds this file as ``airflow_local_settings``. A deployment with cluster
policies of its own keeps them in one ``airflow_local_settings.py`` and calls this hook from its own.
"""

from managed_upgrade_airflow.worker_queues import task_instance_mutation_hook

__all__ = ["task_instance_mutation_hook"]
