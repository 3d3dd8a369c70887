"""Lint customer configs before deploying them: ``python -m managed_upgrade.config validate FILE...``.

Prints ``OK <file>`` per valid file and ``<file>: <field>: <problem>`` per problem; exits 0 if all files
are valid, 1 if any is invalid, 2 on a usage error. Any path may be given: a FIFO, device, directory,
huge or hostile file is reported as a problem of that file, never hangs or crashes the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from managed_upgrade.config.loader import CustomerConfigError, load_customer_config
from managed_upgrade.input_files import display_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m managed_upgrade.config", description="Check managed-upgrade customer configs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="validate customer config files")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    args = parser.parse_args(argv)

    invalid = 0
    for path in args.files:
        try:
            load_customer_config(path)
        except CustomerConfigError as exc:
            invalid += 1
            for line in exc.problems:
                print(line)
        else:
            print(f"OK {display_path(path)}")
    return 1 if invalid else 0


if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):  # a terminal that cannot show a character gets an escape
        sys.stdout.reconfigure(errors="backslashreplace")
    sys.exit(main())
