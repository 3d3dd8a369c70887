"""The project's own PostgreSQL ledger: run facts that must outlive XComs and serve managers.

Never Airflow's metadata database. Schema changes are numbered SQL files in ``migrations/``,
applied in order by :func:`migrate` (``python -m managed_upgrade.ledger migrate``).
"""

from managed_upgrade.ledger.schema import DEFAULT_SCHEMA, ensure_database, migrate, pending_migrations
from managed_upgrade.ledger.store import Ledger

__all__ = ["DEFAULT_SCHEMA", "Ledger", "ensure_database", "migrate", "pending_migrations"]
