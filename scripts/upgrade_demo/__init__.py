"""The demo: estate + local Airflow + one customer's upgrade in rehearsal mode (``make demo``)."""
