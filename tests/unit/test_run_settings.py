"""Trigger-form values: parsing, and the request-case rules the first task enforces."""

from datetime import date

import pytest

from managed_upgrade.run_settings import RunSettings, request_case_problems, settings_from_conf

GOOD = {
    "case_id": "CS-2026-0042",
    "earliest_start": "2026-12-01",
    "ideal_start": "2026-12-07",
    "deadline": "2027-02-26",
    "deadline_reason": "Licence renewal",
    "target_version": "11.0.0",
    "seconds_per_business_day": 2,
}


def test_good_conf_parses_and_round_trips():
    settings, problems = settings_from_conf(GOOD)
    assert problems == []
    assert settings.deadline == date(2027, 2, 26)
    assert settings.rehearsal
    again, _ = settings_from_conf(settings.to_conf())
    assert again == settings


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("case_id", "cs; rm -rf /", "case_id: 'cs; rm -rf /' must match"),
        ("target_version", "1.0; rm -rf /", "target_version: '1.0; rm -rf /' must match"),
        ("target_version", "$(id)", "target_version: '$(id)' must match"),
        ("deadline", "next week", "deadline: 'next week' is not a date"),
        ("deadline_reason", "  ", "deadline_reason: the request case must give the reason"),
        ("seconds_per_business_day", 0, "seconds_per_business_day: 0 must be > 0"),
        ("seconds_per_business_day", "fast", "seconds_per_business_day: 'fast' is not a number"),
    ],
)
def test_bad_values_are_named(field, value, message):
    settings, problems = settings_from_conf({**GOOD, field: value})
    assert settings is None
    assert any(p.startswith(message) for p in problems), problems


def _settings(**changes) -> RunSettings:
    settings, _ = settings_from_conf({**GOOD, **changes})
    return settings


def test_request_case_rules():
    ok = request_case_problems(
        _settings(), current_version="10.2.0", platinum_support=True, access_acknowledged=True
    )
    assert ok == []
    problems = request_case_problems(
        _settings(ideal_start="2026-11-01", target_version="10.2.0"),
        current_version="10.2.0",
        platinum_support=False,
        access_acknowledged=False,
    )
    joined = "\n".join(problems)
    assert "not a Platinum Support member" in joined
    assert "access_acknowledged" in joined
    assert "ideal_start: 2026-11-01 is before earliest_start 2026-12-01" in joined
    assert "target_version: 10.2.0 is not newer than the installed 10.2.0" in joined


def test_deadline_before_ideal_start_and_numeric_version_order():
    problems = request_case_problems(
        _settings(deadline="2026-12-06", target_version="10.10.0"),
        current_version="10.9.0",
        platinum_support=True,
        access_acknowledged=True,
    )
    assert problems == ["deadline: 2026-12-06 is before ideal_start 2026-12-07"]
