"""``python -m managed_upgrade.ledger migrate|status``: create or inspect the ledger schema."""

from __future__ import annotations

import argparse
import os
import sys

import psycopg2

from managed_upgrade.ledger.schema import DEFAULT_SCHEMA, ensure_database, migrate, pending_migrations

DSN_VARIABLE = "MANAGED_UPGRADE_LEDGER_DSN"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m managed_upgrade.ledger", description=__doc__)
    parser.add_argument("command", choices=["migrate", "status"])
    parser.add_argument("--dsn", default=os.environ.get(DSN_VARIABLE), help=f"default: ${DSN_VARIABLE}")
    parser.add_argument("--schema", default=DEFAULT_SCHEMA)
    parser.add_argument(
        "--create-database",
        action="store_true",
        help="create the DSN's database first if it does not exist (needs CREATEDB on the server)",
    )
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error(f"no database given: pass --dsn or set {DSN_VARIABLE}")
    if args.create_database and ensure_database(args.dsn):
        print(f"ledger database created: {psycopg2.extensions.parse_dsn(args.dsn).get('dbname')}")
    connection = psycopg2.connect(args.dsn)
    try:
        if args.command == "migrate":
            applied = migrate(connection, args.schema)
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to do"
            print(f"ledger schema {args.schema}: applied {names}")
            return 0
        pending = pending_migrations(connection, args.schema)
        if pending:
            print(f"ledger schema {args.schema}: {len(pending)} migration(s) pending")
            return 1
        print(f"ledger schema {args.schema}: up to date")
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
