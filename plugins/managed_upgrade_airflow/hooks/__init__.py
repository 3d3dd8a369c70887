"""Hooks: Airflow connections turned into the objects the operations talk to."""
