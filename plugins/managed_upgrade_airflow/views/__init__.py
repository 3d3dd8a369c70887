"""The managers' and consultants' pages, served by the api-server as a plugin FastAPI app.

``app`` builds the app (loaded on the first request, see ``lazy_app``), ``access`` authenticates the
caller from the UI's JWT and checks DAG access through the auth manager, ``run_reads`` and
``airflow_reads`` fetch the ledger's and Airflow's facts; the pages' data and HTML come from
``managed_upgrade.views``.
"""
