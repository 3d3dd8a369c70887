"""Entry point of ``python -m crm_estate`` (what ``scripts/estate`` runs)."""

import sys

from crm_estate.cli import main

sys.exit(main())
