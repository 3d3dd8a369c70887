"""Run a real local Airflow (all components, loopback only) for the demo and end-to-end tests.

`scripts/airflow-local up|down|status|token USER|env` from a shell; `harness.up()` / `harness.down()`
and `client.AirflowClient` from Python.
"""
