"""What one run of a customer's upgrade uses: the config's defaults overridden by the trigger form.

Every value is checked with the one vocabulary of :mod:`managed_upgrade.vocabulary` -- the very checks the
customer config and the trigger form's JSON schema use (:data:`REHEARSAL_SECONDS` for the rehearsal
speed), so the form, the lint command and the run's first task refuse the same values with the same
words. The cross-field rules and the eligibility rules of the process document need the whole picture,
so :func:`request_case_problems` checks them in the run's first task and the run fails there with
every problem named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from managed_upgrade.vocabulary import NumberRange, describe, parse_version, problem

MAX_REHEARSAL_SECONDS = 86_400.0
"""A rehearsal day longer than a real day would be pointless; it also bounds typos."""

REHEARSAL_SECONDS = NumberRange(0, MAX_REHEARSAL_SECONDS, exclusive_minimum=True)
"""``seconds_per_business_day``: the first task's check and the trigger form's schema."""

TEXT_SETTINGS = {"case_id": "case id", "target_version": "version", "deadline_reason": "line"}
"""Trigger-form text values and their kind in the vocabulary."""
DATE_SETTINGS = ("earliest_start", "ideal_start", "deadline")


@dataclass(frozen=True)
class RunSettings:
    """The values ops may set at trigger time, after merging with the customer config."""

    case_id: str
    earliest_start: date
    ideal_start: date
    deadline: date
    deadline_reason: str
    target_version: str
    seconds_per_business_day: float | None = None
    """Rehearsal mode: one business day lasts this many real seconds. ``None`` means real time."""
    rehearse_windows: bool = False
    """In a rehearsal, honour the upgrade windows and change freezes (compressed like every budget);
    without it a rehearsal ignores them. A real run always honours them."""

    @property
    def rehearsal(self) -> bool:
        return self.seconds_per_business_day is not None

    def to_conf(self) -> dict[str, Any]:
        """JSON-ready form, the shape of the trigger form's values."""
        data = asdict(self)
        for key in ("earliest_start", "ideal_start", "deadline"):
            data[key] = data[key].isoformat()
        return data


def _as_date(field: str, value: Any, problems: list[str]) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    found = problem("date", value)
    if found is not None:
        problems.append(describe(field, value, found))
        return None
    return date.fromisoformat(value)


def settings_from_conf(conf: dict[str, Any]) -> tuple[RunSettings | None, list[str]]:
    """Parse the run's conf (trigger form values); returns the settings or the problems found.

    Each problem reads ``<field>: <problem> (got <value>)``, the value shortened.
    """
    problems: list[str] = []
    texts: dict[str, str] = {}
    for key, kind in TEXT_SETTINGS.items():
        value = conf.get(key)
        found = problem(kind, value)
        if found is not None:
            problems.append(describe(key, value, found))
        texts[key] = value  # type: ignore[assignment]  # only used when there is no problem
    dates = {key: _as_date(key, conf.get(key), problems) for key in DATE_SETTINGS}
    seconds = conf.get("seconds_per_business_day")
    if seconds is not None:
        found = REHEARSAL_SECONDS.problem(seconds)
        if found is not None:
            problems.append(describe("seconds_per_business_day", seconds, found))
        else:
            seconds = float(seconds)
    rehearse_windows = conf.get("rehearse_windows")
    if rehearse_windows is not None and not isinstance(rehearse_windows, bool):
        problems.append(describe("rehearse_windows", rehearse_windows, "must be true or false"))
    if problems:
        return None, problems
    return (
        RunSettings(
            case_id=texts["case_id"],
            earliest_start=dates["earliest_start"],  # type: ignore[arg-type]
            ideal_start=dates["ideal_start"],  # type: ignore[arg-type]
            deadline=dates["deadline"],  # type: ignore[arg-type]
            deadline_reason=texts["deadline_reason"],
            target_version=texts["target_version"],
            seconds_per_business_day=seconds,
            rehearse_windows=bool(rehearse_windows),
        ),
        [],
    )


def request_case_problems(
    settings: RunSettings,
    *,
    current_version: str,
    platinum_support: bool,
    access_acknowledged: bool,
) -> list[str]:
    """Everything that makes the request case unacceptable, each naming the field and the rule."""
    problems = []
    if not platinum_support:
        problems.append(
            "platinum_support: the customer is not a Platinum Support member; "
            "the Managed Upgrade is only available to Platinum Support members"
        )
    if not access_acknowledged:
        problems.append(
            "request_case.access_acknowledged: the customer has not acknowledged that access "
            "to the development/staging system will be provided"
        )
    if not settings.earliest_start <= settings.ideal_start:
        problems.append(
            f"ideal_start: {settings.ideal_start} is before earliest_start {settings.earliest_start}"
        )
    if not settings.ideal_start <= settings.deadline:
        problems.append(f"deadline: {settings.deadline} is before ideal_start {settings.ideal_start}")
    if parse_version(settings.target_version) <= parse_version(current_version):
        problems.append(
            f"target_version: {settings.target_version} is not newer than the installed {current_version}"
        )
    return problems
