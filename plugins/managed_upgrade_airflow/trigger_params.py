"""The trigger form: one Param per value ops may set, with a JSON schema the form and API enforce.

Defaults come from the customer config, so triggering with no changes runs the request case as the
customer filed it. Patterns are the same strict ones the config uses (``managed_upgrade.safe``), so a
value that could reach a shell is refused by the form before any task runs. Cross-field rules (dates
in order, target newer than installed) need several fields at once and are checked by the first task.
"""

from __future__ import annotations

from airflow.sdk import Param

from managed_upgrade.config import CustomerConfig
from managed_upgrade.run_settings import MAX_REHEARSAL_SECONDS
from managed_upgrade.safe import CASE_ID_PATTERN, VERSION_PATTERN
from managed_upgrade_airflow.operators.request_case import request_case_defaults

_SECTION = "Request case"


def trigger_params(config: CustomerConfig) -> dict[str, Param]:
    """Params of ``managed_upgrade__<customer_id>``, defaults from ``config``."""
    defaults = request_case_defaults(config)

    def date_param(key: str, title: str, description: str) -> Param:
        return Param(defaults[key], type="string", format="date", title=title, description=description,
                     section=_SECTION)  # fmt: skip

    return {
        "case_id": Param(
            defaults["case_id"],
            type="string",
            pattern=CASE_ID_PATTERN,
            title="Request case id",
            description="The customer's case in the CRM support portal (e.g. ACME-1042).",
            section=_SECTION,
        ),
        "earliest_start": date_param("earliest_start", "Earliest start date", "From the request case."),
        "ideal_start": date_param("ideal_start", "Ideal start date", "From the request case."),
        "deadline": date_param(
            "deadline", "Deadline date for completion", "Run-level deadline alerts count towards it."
        ),
        "deadline_reason": Param(
            defaults["deadline_reason"],
            type="string",
            minLength=1,
            maxLength=500,
            title="Reason for the deadline date",
            section=_SECTION,
        ),
        "target_version": Param(
            defaults["target_version"],
            type="string",
            pattern=VERSION_PATTERN,
            title="Target version",
            description=f"Installed today: {config.versions.current}. Must be newer.",
            section="Upgrade",
        ),
        "seconds_per_business_day": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=MAX_REHEARSAL_SECONDS,
            title="Rehearsal: seconds per business day",
            description="Empty for a real run. A number compresses time: one business day of every "
            "budget, SLA and reminder lasts this many seconds, so the whole upgrade can be rehearsed.",
            section="Rehearsal",
        ),
    }
