"""Trigger-form values: parsing, and the request-case rules the first task enforces."""

from datetime import date

import pytest

from managed_upgrade.config.run_settings import RunSettings, request_case_problems, settings_from_conf

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
        ("case_id", "cs; rm -rf /", "case_id: not a valid case id: use 3-32 upper-case letters, digits or "
         "'-', starting with a letter (got 'cs; rm -rf /')"),
        ("target_version", "1.0; rm -rf /", "target_version: not a valid version: use major.minor.patch "
         "numbers such as 10.2.0 (got '1.0; rm -rf /')"),
        ("target_version", "$(id)", "target_version: not a valid version: use major.minor.patch numbers "
         "such as 10.2.0 (got '$(id)')"),
        ("target_version", "\uff11\uff11.\uff11.\uff10", "target_version: not a valid version: use "
         "major.minor.patch numbers such as 10.2.0; it contains U+FF11 FULLWIDTH DIGIT ONE, a non-ASCII "
         "character (got '\uff11\uff11.\uff11.\uff10')"),
        ("deadline", "next week", "deadline: not a valid date: use a date written YYYY-MM-DD "
         "(got 'next week')"),
        ("deadline", "20270226", "deadline: not a valid date: use a date written YYYY-MM-DD "
         "(got '20270226')"),
        ("deadline", "2027-02-30", "deadline: not a valid date: no such day in the calendar "
         "(got '2027-02-30')"),
        ("deadline_reason", "  ", "deadline_reason: not a valid line: use 1-500 characters on one line, not "
         "starting with a space"),
        ("deadline_reason", "freeze\x1b[2J", "deadline_reason: not a valid line: use 1-500 characters"),
        ("seconds_per_business_day", 0, "seconds_per_business_day: must be a number above 0 to 86400 "
         "(got 0)"),
        ("seconds_per_business_day", "fast", "seconds_per_business_day: must be a number above 0 to 86400, "
         "not text (got 'fast')"),
        ("seconds_per_business_day", "12", "seconds_per_business_day: must be a number above 0 to 86400, "
         "not text (got '12')"),
        ("seconds_per_business_day", True, "seconds_per_business_day: must be a number above 0 to 86400, "
         "not true/false (got True)"),
        ("seconds_per_business_day", float("nan"), "seconds_per_business_day: must be a number above 0 to "
         "86400, not nan (got nan)"),
        ("seconds_per_business_day", 1e400, "seconds_per_business_day: must be a number above 0 to 86400, "
         "not inf (got inf)"),
        ("seconds_per_business_day", 10**400, "seconds_per_business_day: must be a number above 0 to 86400 "
         "(got 1000000000"),
    ],
)  # fmt: skip
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


def test_rehearse_windows_is_off_unless_the_run_asks_and_must_be_a_boolean():
    settings, _ = settings_from_conf(GOOD)
    assert settings.rehearse_windows is False
    asked, _ = settings_from_conf({**GOOD, "rehearse_windows": True})
    assert asked.rehearse_windows is True
    assert settings_from_conf(asked.to_conf())[0] == asked
    _, problems = settings_from_conf({**GOOD, "rehearse_windows": "yes"})
    assert problems == ["rehearse_windows: must be true or false (got 'yes')"]
