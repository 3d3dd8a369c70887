"""One strict vocabulary: the config (and so the lint command), the trigger form's JSON schema and the
run's first task refuse the same values, with the same words.

The table at the heart of this file pairs a config field with the trigger-form value it feeds
(``request_case.case_id`` / ``case_id``, ...) and throws every hostile value at both: the config must
refuse it naming file, field and problem, the form's JSON schema (validated as Airflow validates it, by
``jsonschema`` with a format checker) must refuse it, and ``settings_from_conf`` must refuse it with the
very problem text the config gives.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from airflow.sdk.definitions.param import ParamsDict, ParamValidationError

from managed_upgrade.config import CustomerConfigError, load_customer_config, parse_customer_config
from managed_upgrade.config.__main__ import main as lint
from managed_upgrade.config.run_settings import REHEARSAL_SECONDS, settings_from_conf
from managed_upgrade.vocabulary import (
    REFUSED_IN_FREE_TEXT,
    SAFE_KINDS,
    NumberRange,
    UnsafeValueError,
    is_safe,
    json_schema,
    problem,
    require,
    shown,
)
from managed_upgrade_airflow.operators.request_case import request_case_defaults
from managed_upgrade_airflow.trigger_params import trigger_params

REPO = Path(__file__).resolve().parents[2]
ACME = REPO / "include" / "customers" / "acme.yaml"
SOURCE = "acme.yaml"


def acme_data() -> dict[str, Any]:
    return yaml.safe_load(ACME.read_text())


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def config_problems(field: str, value: Any) -> tuple[str, ...]:
    """The config's refusal lines for ``field`` set to ``value`` (empty if it loads)."""
    try:
        parse_customer_config(_set(acme_data(), field, value), SOURCE, file_stem="acme")
    except CustomerConfigError as exc:
        return exc.problems
    return ()


CONFIG = load_customer_config(ACME)
PARAMS = trigger_params(CONFIG)


def form_refuses(name: str, value: Any) -> bool:
    """Whether the trigger form refuses ``value`` for Param ``name``, checked twice: the schema with
    ``jsonschema`` (as Airflow's ``Param.resolve`` does) and Airflow's own ``ParamsDict.validate``."""
    try:
        jsonschema.validate(value, PARAMS[name].schema, format_checker=jsonschema.FormatChecker())
        by_schema = False
    except jsonschema.ValidationError:
        by_schema = True
    params = ParamsDict(copy.deepcopy(PARAMS))
    try:
        params[name] = value
        params.validate()
        by_airflow = False
    except (ParamValidationError, ValueError):
        by_airflow = True
    assert by_schema == by_airflow, f"jsonschema and Airflow disagree on {value!r} for {name}"
    return by_schema


def task_problems(name: str, value: Any) -> list[str]:
    settings, problems = settings_from_conf({**request_case_defaults(CONFIG), name: value})
    assert (settings is None) == bool(problems)
    return problems


# --- the table: one check in all places -----------------------------------------------------------

PAIRS = {
    # kind: (config field, trigger param, a valid value)
    "case id": ("request_case.case_id", "case_id", "ACME-1042"),
    "version": ("versions.target", "target_version", "11.0.0"),
    "line": ("request_case.deadline_reason", "deadline_reason", "Change freeze in April"),
    "date": ("request_case.deadline", "deadline", "2027-03-31"),
}

CONTROL_AND_INVISIBLE = {
    "CR": "\r",
    "LF": "\n",
    "TAB": "\t",
    "ESC": "\x1b",
    "NUL": "\x00",
    "DEL": "\x7f",
    "C1 NEL": "\x85",
    "C1 CSI": "\x9b",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "LRE": "\u202a",
    "RLO": "\u202e",
    "LRI": "\u2066",
    "PDI": "\u2069",
    "zero-width space": "\u200b",
    "RLM": "\u200f",
    "BOM": "\ufeff",
    "lone surrogate": "\ud800",
    "private use": "\ue000",
    "unassigned": "\u0378",
}
NON_ASCII_LOOKALIKES = {
    "full-width digit": "\uff11",
    "Arabic-Indic digit": "\u0661",
    "Devanagari digit": "\u0967",
    "superscript two": "\u00b2",
    "Cyrillic A": "\u0410",
}


def _hostile_rows() -> list[tuple[str, str, Any]]:
    rows: list[tuple[str, str, Any]] = []
    for kind, (_, _, valid) in PAIRS.items():
        middle = len(valid) // 2
        for label, char in CONTROL_AND_INVISIBLE.items():
            rows.append((kind, label, valid[:middle] + char + valid[middle:]))
        rows.append((kind, "trailing newline", valid + "\n"))
        rows.append((kind, "too long", valid + "1" * SAFE_KINDS[kind].max_length))
        rows.append((kind, "empty", ""))
        rows.append((kind, "a number", 1042))
        if kind != "line":
            for label, char in NON_ASCII_LOOKALIKES.items():
                rows.append((kind, label, char + valid[1:]))
            rows.append((kind, "shell", valid[:2] + ";id" + valid[2:]))
    rows += [
        ("line", "leading space", " Change freeze"),
        ("line", "blank", "   "),
        ("line", "emoji", "Change freeze \U0001f600"),
        ("version", "full-width version", "\uff11\uff11.\uff11.\uff10"),
        ("version", "Arabic-Indic version", "\u0661\u0661.\u0661.\u0660"),
        ("date", "compact ISO", "20270331"),
        ("date", "ISO week", "2027-W13-3"),
        ("date", "with a time", "2027-03-31T00:00:00"),
        ("date", "no such day", "2027-02-30"),
        ("date", "full-width year", "\uff12\uff10\uff12\uff17-03-31"),
    ]
    return rows


HOSTILE = _hostile_rows()


@pytest.mark.parametrize(("kind", "label", "value"), HOSTILE, ids=[f"{k}-{lbl}" for k, lbl, _ in HOSTILE])
def test_one_check_refuses_a_hostile_value_in_config_form_and_first_task(
    kind: str, label: str, value: Any
) -> None:
    config_field, param, _ = PAIRS[kind]

    lines = config_problems(config_field, value)
    assert lines, f"the config accepted {value!r} for {config_field}"
    mine = [line for line in lines if line.startswith(f"{SOURCE}: {config_field}: ")]
    assert mine, lines  # names file and field

    assert form_refuses(param, value), f"the trigger form accepted {value!r} for {param}"

    problems = task_problems(param, value)
    assert problems, f"settings_from_conf accepted {value!r} for {param}"
    (task_line,) = [line for line in problems if line.startswith(f"{param}: ")]
    if isinstance(value, str):  # a number is refused by the config's type first ("a valid string")
        assert task_line.removeprefix(f"{param}: ") == mine[0].removeprefix(f"{SOURCE}: {config_field}: ")
        assert "(got " in task_line


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_valid_values_pass_everywhere(kind: str) -> None:
    config_field, param, valid = PAIRS[kind]
    assert config_problems(config_field, valid) == ()
    assert not form_refuses(param, valid)
    assert task_problems(param, valid) == []


@pytest.mark.parametrize(
    "reason",
    ["M\u00fcller & S\u00f6hne GmbH; \u682a\u5f0f\u4f1a\u793e", 'O\'Brien "quoted" <b> $(id) `x`', "x" * 500],
)
def test_free_text_in_any_script_passes_everywhere(reason: str) -> None:
    assert config_problems("request_case.deadline_reason", reason) == ()
    assert not form_refuses("deadline_reason", reason)
    assert task_problems("deadline_reason", reason) == []


# --- numbers ----------------------------------------------------------------------------------------

HOSTILE_NUMBERS = {
    "NaN": math.nan,
    "infinity": math.inf,
    "minus infinity": -math.inf,
    "1e400 (inf)": float("1e400"),
    "400-digit int": 10**400,
    "true": True,
    "false": False,
    "numeric text": "12",
    "overflowing text": "1e400",
    "a list": [1],
    "negative": -1,
    "zero": 0,
}

CONFIG_NUMBERS = {
    "environments.prod.backup_retention": 5,
    "fix_loop.max_rounds": 5,
    "customer_wait.reminder_days": 5,
    "duration_overrides.uat": 8,
}


@pytest.mark.parametrize("label", sorted(HOSTILE_NUMBERS))
def test_rehearsal_speed_refuses_hostile_numbers_in_form_and_first_task(label: str) -> None:
    value = HOSTILE_NUMBERS[label]
    assert form_refuses("seconds_per_business_day", value)
    (line,) = task_problems("seconds_per_business_day", value)
    assert line.startswith("seconds_per_business_day: must be a number above 0 to 86400")
    assert "(got " in line and len(line) < 200  # the 400-digit number is cut, never an OverflowError


@pytest.mark.parametrize("field", sorted(CONFIG_NUMBERS))
@pytest.mark.parametrize("label", sorted(HOSTILE_NUMBERS))
def test_config_numbers_refuse_hostile_numbers(field: str, label: str) -> None:
    value = HOSTILE_NUMBERS[label]
    if value == 0 and field == "duration_overrides.uat":
        value = 366  # zero days is a valid override
    data = acme_data()
    data.setdefault("fix_loop", {})
    data.setdefault("customer_wait", {})
    data.setdefault("duration_overrides", {})
    *parents, last = field.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(CustomerConfigError) as caught:
        parse_customer_config(data, SOURCE, file_stem="acme")
    (line,) = caught.value.problems
    assert line.startswith(f"{SOURCE}: {field}: must be a whole number from "), line
    assert len(line) <= 1_000  # the 400-digit number is cut


@pytest.mark.parametrize("value", [0.5, 1, 86_400, 86_400.0, 1e-300])
def test_rehearsal_speed_in_range_passes_form_and_first_task(value: float) -> None:
    assert not form_refuses("seconds_per_business_day", value)
    assert task_problems("seconds_per_business_day", value) == []
    settings, _ = settings_from_conf({**request_case_defaults(CONFIG), "seconds_per_business_day": value})
    assert settings is not None and settings.seconds_per_business_day == float(value)


def test_an_empty_rehearsal_speed_means_a_real_run_in_form_and_first_task() -> None:
    assert not form_refuses("seconds_per_business_day", None)
    settings, problems = settings_from_conf(
        {**request_case_defaults(CONFIG), "seconds_per_business_day": None}
    )
    assert problems == [] and settings is not None and not settings.rehearsal


def test_number_range_schema_is_the_checks_range() -> None:
    assert REHEARSAL_SECONDS.json_schema(nullable=True) == {
        "type": ["null", "number"],
        "exclusiveMinimum": 0,
        "maximum": 86_400.0,
        "not": {"type": "number", "maximum": 0},
        "description": "a number above 0 to 86400",
    }
    retention = NumberRange(1, 100, integer=True)
    assert retention.problem(2.0) == "must be a whole number from 1 to 100, not a fraction"
    assert retention.problem(101) == "must be a whole number from 1 to 100"
    assert retention.problem(1) is None


# --- the vocabulary itself ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SAFE_KINDS))
def test_every_pattern_reads_the_same_in_python_and_javascript(kind: str) -> None:
    pattern = SAFE_KINDS[kind].pattern
    assert pattern.isascii() and pattern.isprintable()
    assert pattern.startswith("^") and pattern.endswith(r"$(?!\n)")
    # no Unicode-dependent classes: \d, \w, \s (and \b) mean other things in Python and JavaScript
    assert not re.search(r"(?<!\\)\\[dDwWsSbB]", pattern)
    assert not re.search(r"\\[UxN]\{|\\U", pattern)  # only \uXXXX escapes, which both understand
    re.compile(pattern)
    assert SAFE_KINDS[kind].max_length > 0


@pytest.mark.parametrize("kind", sorted(SAFE_KINDS))
def test_json_schema_is_the_kinds_pattern_and_bound(kind: str) -> None:
    schema = json_schema(kind)
    assert schema["pattern"] == SAFE_KINDS[kind].pattern
    assert schema["maxLength"] == SAFE_KINDS[kind].max_length


def test_the_config_schema_and_the_trigger_form_carry_the_same_patterns() -> None:
    properties = CONFIG.model_json_schema()["$defs"]
    assert (
        properties["RequestCase"]["properties"]["case_id"]["pattern"] == PARAMS["case_id"].schema["pattern"]
    )
    assert (
        properties["Versions"]["properties"]["target"]["pattern"]
        == PARAMS["target_version"].schema["pattern"]
    )
    assert (
        properties["RequestCase"]["properties"]["deadline_reason"]["pattern"]
        == PARAMS["deadline_reason"].schema["pattern"]
    )


@pytest.mark.parametrize("category", sorted(REFUSED_IN_FREE_TEXT))
def test_free_text_refuses_every_invisible_category(category: str) -> None:
    import unicodedata

    sample = next(chr(code) for code in range(0x10000) if unicodedata.category(chr(code)) == category)
    for kind in ("line", "text"):
        found = problem(kind, f"a{sample}b")
        if kind == "text" and sample in "\t\n":
            continue
        assert found is not None and f"U+{ord(sample):04X}" in found


def test_multi_line_text_allows_newlines_and_tabs_but_no_other_control() -> None:
    assert problem("text", "Sales, Service\n\tand ERP sync\n") is None
    assert problem("text", "") is None
    assert "U+000D CARRIAGE RETURN" in (problem("text", "line one\r\nline two") or "")
    assert "U+001B ESCAPE" in (problem("text", "a\x1b[31mred") or "")
    assert "10001 characters, more than the 10000 allowed" in (problem("text", "x" * 10_001) or "")


def test_questionnaire_answers_are_multi_line_text() -> None:
    answers = {"Integrations": "ERP order sync (nightly)\nSSO via SAML\n", "Users": 120}
    config = parse_customer_config(
        _set(acme_data(), "questionnaire.answers", answers), SOURCE, file_stem="acme"
    )
    assert config.questionnaire.answers["Integrations"].count("\n") == 2
    lines = config_problems("questionnaire.answers", {"Integrations": "sync\x1b]0;pwned\x07"})
    assert lines == (
        f"{SOURCE}: questionnaire.answers.Integrations: not a valid text: use at most 10000 characters; "
        "newlines and tabs are fine, but no control or invisible formatting characters, no emoji; it "
        "contains U+001B ESCAPE, a control character (got 'sync\\x1b]0;pwned\\x07')",
    )
    assert config_problems("questionnaire.answers", {"Users\nBcc: x": "1"})  # keys are one line


def test_messages_name_the_offending_character() -> None:
    assert problem("version", "\uff11\uff11.\uff11.\uff10") == (
        "not a valid version: use major.minor.patch numbers such as 10.2.0; it contains U+FF11 FULLWIDTH "
        "DIGIT ONE, a non-ASCII character"
    )
    assert "U+202E RIGHT-TO-LEFT OVERRIDE, an invisible formatting character" in (
        problem("line", "invoice\u202egpj.exe") or ""
    )
    assert "U+1F600 GRINNING FACE, a character beyond the Basic Multilingual Plane" in (
        problem("line", "ok \U0001f600") or ""
    )


def test_long_values_are_cut_in_messages() -> None:
    assert shown("x" * 1_000_000) == repr("x" * 79 + "\u2026")
    assert shown(10**400).endswith("\u2026") and len(shown(10**400)) == 80
    assert shown(10**10_000) == "<int too large to show>"
    with pytest.raises(UnsafeValueError) as caught:
        require("case id", "A" * 1_000_000)
    assert len(str(caught.value)) < 300


def test_parse_version_takes_ascii_digits_only() -> None:
    assert is_safe("version", "10.10.0")
    assert not is_safe("version", "\u0661\u0660.\u0660.\u0660")  # int() would read these as 10.0.0


def test_the_lint_command_refuses_what_a_run_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _set(acme_data(), "versions.target", "\uff11\uff11.\uff11.\uff10")
    data = _set(data, "request_case.deadline_reason", "freeze\u2028Bcc: thief@evil.example")
    data = _set(data, "name", "ACME \u202eevil")
    data = _set(data, "request_case.deadline", "2027-03-31\n")
    path = tmp_path / "acme.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    assert lint(["validate", str(path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    fields = {line.split(": ", 2)[1] for line in lines}
    assert fields == {"versions.target", "request_case.deadline_reason", "name", "request_case.deadline"}
    for line in lines:
        field = line.split(": ", 2)[1]
        trigger = {"versions.target": "target_version", "request_case.deadline_reason": "deadline_reason",
                   "request_case.deadline": "deadline"}.get(field)  # fmt: skip
        if trigger:  # the first task says the same
            value = data
            for part in field.split("."):
                value = value[part]
            assert f"{trigger}: {line.split(': ', 2)[2]}" in task_problems(trigger, value)
