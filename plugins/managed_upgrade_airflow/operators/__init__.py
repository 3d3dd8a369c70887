"""Operators: one job of the upgrade process each, the logic living in :mod:`managed_upgrade`."""
