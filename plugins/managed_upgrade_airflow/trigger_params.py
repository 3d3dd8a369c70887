"""The trigger form: one Param per value ops may set, with a JSON schema the form and API enforce.

Defaults come from the customer config, so triggering with no changes runs the request case as the
customer filed it. Every schema is the one vocabulary of :mod:`managed_upgrade.vocabulary` -- the pattern and
length bound the config and the first task check (``json_schema(kind)``, and
:data:`~managed_upgrade.config.run_settings.REHEARSAL_SECONDS` for the rehearsal speed) -- so the form refuses
exactly what the run would refuse, before any task runs. Cross-field rules (dates in order, target
newer than installed) need several fields at once and are checked by the first task.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from managed_upgrade.config import CustomerConfig
from managed_upgrade.config.run_settings import REHEARSAL_SECONDS
from managed_upgrade.vocabulary import json_schema
from managed_upgrade_airflow.operators.request_case import request_case_defaults

_SECTION = "Request case"


def _param(default: Any, schema: dict[str, Any], title: str, section: str, description: str = "") -> Param:
    """A Param checked by ``schema`` (from the vocabulary); ``description`` precedes what valid values are."""
    described = f"{description} {schema['description']}." if description else schema["description"]
    return Param(default, **{**schema, "description": described}, title=title, section=section)


def trigger_params(config: CustomerConfig) -> dict[str, Param]:
    """Params of ``managed_upgrade__<customer_id>``, defaults from ``config``."""
    defaults = request_case_defaults(config)
    date = {**json_schema("date"), "format": "date"}
    return {
        "case_id": _param(
            defaults["case_id"],
            json_schema("case id"),
            "Request case id",
            _SECTION,
            "The customer's case in the CRM support portal (e.g. ACME-1042):",
        ),
        "earliest_start": _param(
            defaults["earliest_start"], date, "Earliest start date", _SECTION, "From the request case:"
        ),
        "ideal_start": _param(
            defaults["ideal_start"], date, "Ideal start date", _SECTION, "From the request case:"
        ),
        "deadline": _param(
            defaults["deadline"],
            date,
            "Deadline date for completion",
            _SECTION,
            "Run-level deadline alerts count towards it;",
        ),
        "deadline_reason": _param(
            defaults["deadline_reason"], json_schema("line"), "Reason for the deadline date", _SECTION
        ),
        "target_version": _param(
            defaults["target_version"],
            json_schema("version"),
            "Target version",
            "Upgrade",
            f"Installed today: {config.versions.current}; must be newer:",
        ),
        "seconds_per_business_day": _param(
            None,
            REHEARSAL_SECONDS.json_schema(nullable=True),
            "Rehearsal: seconds per business day",
            "Rehearsal",
            "Empty for a real run. A number compresses time: one business day of every budget, SLA and "
            "reminder lasts this many seconds, so the whole upgrade can be rehearsed:",
        ),
        "rehearse_windows": Param(
            False,
            type="boolean",
            title="Rehearsal: honour upgrade windows and change freezes",
            section="Rehearsal",
            description="Off: a rehearsal upgrades each environment at once. On: it waits for the "
            "customer's upgrade windows and change freezes, compressed like every budget (a week of "
            "windows passes in seven rehearsal days). A real run always honours them.",
        ),
    }
