"""Managed CRM upgrades as data and pure logic, kept free of Airflow so it is fast to import and test.

Subpackages by domain, each importing only those listed after it (``lint-imports`` checks the order):

- ``review`` (the review loops), ``messages`` (the customer's e-mails);
- ``verification`` (customer test cases run and judged), ``sla`` (calendar, plan, SLA clock, deadlines,
  alerts), ``operations`` (stage, back up, upgrade, restore, settings, fixes);
- ``config`` (customer configs, run settings);
- ``process`` (the process model), ``sandbox`` (what a test case may touch), ``transport`` (reaching a
  host), ``ledger`` (the project's own database);
- shared by all: ``errors``, ``vocabulary`` (strict patterns for every value that may reach a shell),
  ``input_files``, ``markdown``, ``dag_ids``.
"""
