"""Hostile input: every config field and trigger value is refused cleanly, or confined, never crashes.

The corpus (``hostile_corpus.py``) mutates one field of a valid config per case with a value of one
hostile class; hypothesis then throws arbitrary values at every field. Whatever comes in, the result
is a valid config whose strings hold only what their kind allows, or one ``<file>: <field>: <problem>``
line per problem, naming the field, never echoing a megabyte back.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostile_corpus import (
    EXAMPLE_CONFIG,
    FIELDS,
    MAX_MESSAGE_LINE,
    TRIGGER_FIELDS,
    Case,
    config_cases,
    example_data,
    field_named,
    iter_strings,
    mutated,
    run_config_case,
    run_trigger_case,
    trigger_cases,
    unsafe_characters,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from managed_upgrade.config import CustomerConfigError, load_customer_config, parse_customer_config
from managed_upgrade.config.__main__ import main as lint

SOURCE = "include/customers/acme.yaml"


def grouped(cases: list[Case]) -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        groups[f"{case.field}={case.group}"].append(case)
    return dict(groups)


CONFIG_GROUPS = grouped(config_cases())
TRIGGER_GROUPS = grouped(trigger_cases())


def test_the_corpus_covers_every_class_for_every_field() -> None:
    cases = config_cases()
    assert len(cases) > 1_000
    assert {case.field for case in cases} == set(FIELDS)
    assert {case.group for case in cases} >= {
        "control",
        "line breaks",
        "non-ascii",
        "shell",
        "paths",
        "oversize",
    }
    assert {case.field for case in trigger_cases()} == set(TRIGGER_FIELDS)


def test_the_unmutated_example_is_valid() -> None:
    parse_customer_config(example_data(), SOURCE)


@pytest.mark.parametrize("group", sorted(CONFIG_GROUPS))
def test_config_field_refuses_or_confines_hostile_values(group: str) -> None:
    data = example_data()
    failures = []
    for case in CONFIG_GROUPS[group]:
        outcome = run_config_case(case, data)
        if outcome.crash:
            failures.append(f"{case.label}: crashed with {outcome.crash}")
        elif case.must_refuse and not outcome.refused:
            failures.append(f"{case.label}: accepted, must be refused")
        elif outcome.refused:
            if not any(field_named(line, case.field) for line in outcome.problems):
                failures.append(f"{case.label}: refusal does not name {case.field}: {outcome.problems}")
            if not all(line.startswith(f"{SOURCE}: ") for line in outcome.problems):
                failures.append(f"{case.label}: a line does not name the file: {outcome.problems}")
            if any(len(line) > MAX_MESSAGE_LINE for line in outcome.problems):
                failures.append(f"{case.label}: a refusal line is over {MAX_MESSAGE_LINE} characters")
    assert failures == []


@pytest.mark.parametrize("group", sorted(TRIGGER_GROUPS))
def test_trigger_form_and_first_task_refuse_the_same_hostile_values(group: str) -> None:
    failures = []
    for case in TRIGGER_GROUPS[group]:
        form, task = run_trigger_case(case)
        for where, outcome in (("form", form), ("first task", task)):
            if outcome.crash:
                failures.append(f"{case.label}: {where} crashed with {outcome.crash}")
            elif case.must_refuse and not outcome.refused:
                failures.append(f"{case.label}: {where} accepted it")
        if task.refused and not any(line.startswith(f"{case.field}: ") for line in task.problems):
            failures.append(
                f"{case.label}: the first task's refusal does not name {case.field}: {task.problems}"
            )
        if any(len(line) > MAX_MESSAGE_LINE for line in task.problems):
            failures.append(f"{case.label}: a refusal line is over {MAX_MESSAGE_LINE} characters")
    assert failures == []


def test_free_text_in_any_script_is_kept() -> None:
    """Confinement is not blanket refusal: a customer's own words in their own script are fine."""
    data = example_data()
    for field in ("name", "request_case.deadline_reason", "test_cases[0].title"):
        for text in ("M\u00fcller & S\u00f6hne GmbH", "\u682a\u5f0f\u4f1a\u793e", 'O\'Brien; "quoted" <b>'):
            config = parse_customer_config(mutated(data, field, text), SOURCE)
            assert text in {value for _, value in iter_strings(config.model_dump())}


def test_the_lint_command_refuses_a_hostile_file_naming_field_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = mutated(example_data(), "request_case.deadline_reason", "freeze\u2028Bcc: thief@evil.example")
    data = mutated(data, "versions.target", "\uff11\uff11.\uff11.\uff10")
    data = mutated(data, "environments.dev.install_path", "/etc")
    path = tmp_path / "acme.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    assert lint(["validate", str(path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    named = {line.split(": ", 2)[1] for line in lines}
    assert {"request_case.deadline_reason", "versions.target", "environments.dev.install_path"} <= named
    assert all(line.startswith(f"{path}: ") for line in lines)


# --- property-based: arbitrary values in every field -----------------------------------------------

ANY_VALUE = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.text(alphabet=st.characters(max_codepoint=0x3000), min_size=1, max_size=12),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    st.dates().map(lambda day: day.isoformat()),
)

EXAMPLE = example_data()


def accepted_strings_are_confined(config: Any) -> list[str]:
    """Every stored string holds only what its field's kind allows."""
    problems = []
    for path, text in iter_strings(config.model_dump(mode="json")):
        kind = _kind_of(path)
        bad = unsafe_characters(text, kind)
        if bad:
            problems.append(f"{path} ({kind}) holds {bad[:5]}")
        if len(text) > 20_000:
            problems.append(f"{path} holds {len(text)} characters")
    return problems


def _kind_of(stored_path: str) -> str:
    for field, kind in FIELDS.items():
        if stored_path == field:
            return kind
    free_text = (
        "name",
        "title",
        "deadline_reason",
        "customizations",
        "location",
        "answers",
        "query",
        "expect",
    )
    return "text" if any(part in stored_path for part in free_text) else "line"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(FIELDS)), value=ANY_VALUE)
def test_any_value_in_any_field_is_a_valid_config_or_a_clean_refusal(field: str, value: Any) -> None:
    try:
        config = parse_customer_config(mutated(EXAMPLE, field, value), SOURCE)
    except CustomerConfigError as exc:
        assert exc.problems
        for line in exc.problems:
            assert line.startswith(f"{SOURCE}: ")
            assert len(line) <= MAX_MESSAGE_LINE
        assert any(field_named(line, field) for line in exc.problems), exc.problems
    else:
        assert accepted_strings_are_confined(config) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(TRIGGER_FIELDS)), value=ANY_VALUE)
def test_the_form_and_the_first_task_agree_on_any_value(field: str, value: Any) -> None:
    if isinstance(value, float) and math.isnan(value):
        value = "nan"  # the form's JSON cannot carry NaN; the first task must refuse its text form
    case = Case(field, TRIGGER_FIELDS[field], "any", "hypothesis", copy.deepcopy(value), False)
    form, task = run_trigger_case(case)
    assert form.crash is None and task.crash is None
    if not form.refused:
        assert not task.refused, (
            f"the form accepted {value!r} for {field}, the first task refused: {task.problems}"
        )
    if not task.refused and value is not None and value != "":
        assert not form.refused, f"the first task accepted {value!r} for {field}, the form refused it"


def test_the_example_config_file_still_loads() -> None:
    assert load_customer_config(EXAMPLE_CONFIG).customer_id == "acme"
