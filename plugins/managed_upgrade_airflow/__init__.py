"""Airflow glue of the managed upgrade: hooks, operators, gates and notifiers around the pure logic.

Each module is thin: it turns Airflow connections and task context into the plain objects of
:mod:`managed_upgrade` and pushes compact results to XCom. Airflow's plugin loader does not import
this package (``plugins/.airflowignore``); DAG files and ``managed_upgrade_plugin.py`` do.
"""
