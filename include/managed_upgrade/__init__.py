"""Managed CRM upgrades as data and pure logic, kept free of Airflow so it is fast to import and test.

Modules: ``process`` (the process model), ``config`` (customer configs), ``safe`` (strict patterns for
every value that may reach a shell), plus the calendar, planning, operations and bundle logic.
"""
