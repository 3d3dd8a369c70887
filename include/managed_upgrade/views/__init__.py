"""What managers and consultants read about their upgrades: planned vs actual, portfolio, open actions.

Pure: the plugin's web app hands in ledger rows and Airflow facts and renders what these modules
return; no Airflow import, no I/O, and ``now`` is always a parameter.
"""
