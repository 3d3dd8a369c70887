"""Customer configs: valid examples load, every bad input is rejected with file, field and problem named."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from managed_upgrade.config import (
    CommandTestCase,
    CustomerConfig,
    CustomerConfigError,
    load_customer_config,
    load_customer_configs,
    parse_customer_config,
)
from managed_upgrade.process.model import load_process_model, parse_process_model

REPO = Path(__file__).resolve().parents[3]
CUSTOMERS = REPO / "include" / "customers"
FIXTURES = REPO / "tests" / "fixtures" / "configs"
EXAMPLES = ("acme", "globex", "initech")
SHELL_METACHARACTERS = [";", "$(", "`", "'", '"', "\n", "|", "&", ">"]


def acme_data() -> dict:
    return yaml.safe_load((CUSTOMERS / "acme.yaml").read_text())


def problems_of(data: dict, source: str = "acme.yaml") -> tuple[str, ...]:
    with pytest.raises(CustomerConfigError) as caught:
        parse_customer_config(data, source, file_stem="acme")
    return caught.value.problems


def _set(data: dict, path: tuple, value: object) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


# --- the example customers ---------------------------------------------------------------------


@pytest.mark.parametrize("customer_id", EXAMPLES)
def test_example_customer_loads_and_follows_the_estate_contract(customer_id: str) -> None:
    config = load_customer_config(CUSTOMERS / f"{customer_id}.yaml")
    assert config.customer_id == customer_id
    assert config.dag_id == f"managed_upgrade__{customer_id}"
    assert config.source == str(CUSTOMERS / f"{customer_id}.yaml")
    assert (config.release_source.conn_id, config.release_source.product) == ("crm_releases", "aurea-crm")
    for env_name, env in config.environments.items():
        assert env is config.environment(env_name)
        assert env.ssh_conn_id == f"crm_{customer_id}_{env_name}_ssh"
        assert env.db_conn_id == f"crm_{customer_id}_{env_name}_db"
        assert env.install_path == f"/tmp/crm-estate/hosts/{env_name}/crm/{customer_id}"
        assert env.staging_path == f"/tmp/crm-estate/hosts/{env_name}/staging/{customer_id}"
        assert env.backup_path == f"/tmp/crm-estate/hosts/{env_name}/backups/{customer_id}"
    assert "carla" in config.users.consultant and config.users.project_manager == ("pete",)
    assert config.versions.target in ("11.0.0", "11.1.0")


def test_acme_is_the_demo_customer() -> None:
    acme = load_customer_config(CUSTOMERS / "acme.yaml")
    assert (acme.versions.current, acme.versions.target) == ("10.2.0", "11.0.0")
    assert (acme.calendar.timezone, acme.calendar.weekend, acme.calendar.holiday_country) == (
        "UTC",
        ("sat", "sun"),
        None,
    )
    status = acme.test_cases[0]
    assert isinstance(status, CommandTestCase)
    assert status.argv == ("bin/crm", "status") and status.expect.exit_code == 0
    assert {case.kind for case in acme.test_cases} == {"command", "sql"}
    assert any("crm_schema_version" in case.query for case in acme.test_cases if case.kind == "sql")
    assert acme.release_dir == "aurea-crm/11.0.0"
    assert acme.contact_emails("customer") == ("alice.admin@acme.example",)
    assert acme.request_case.earliest_start == date(2027, 1, 4)
    assert acme.process_model() == load_process_model()  # no overrides


def test_globex_calendar_and_overrides() -> None:
    globex = load_customer_config(CUSTOMERS / "globex.yaml")
    calendar = globex.calendar
    assert (calendar.timezone, calendar.holiday_country, calendar.holiday_subdivision) == (
        "Europe/Berlin",
        "DE",
        "BY",
    )
    assert date(2027, 12, 24) in globex.calendar.holidays
    assert globex.process_model().budget_unit("development").days == 15
    assert globex.process_model().budget_unit("uat").days == 8
    assert [case.id for case in globex.test_cases_for("dev")] == [
        "crm_status", "installed_version_shape", "system_settings_present", "single_schema_version",
    ]  # fmt: skip
    assert "approval_levels" in [case.id for case in globex.test_cases_for("prod")]


def test_initech_uses_us_holidays() -> None:
    initech = load_customer_config(CUSTOMERS / "initech.yaml")
    assert (initech.calendar.timezone, initech.calendar.holiday_country) == ("America/New_York", "US")
    assert initech.process_model().budget_unit("uat").days == 10


def test_unknown_environment_name_is_a_clear_key_error() -> None:
    acme = load_customer_config(CUSTOMERS / "acme.yaml")
    with pytest.raises(KeyError, match="unknown environment 'qa'; use one of dev, uat, prod"):
        acme.environment("qa")


def test_config_is_immutable() -> None:
    acme = load_customer_config(CUSTOMERS / "acme.yaml")
    with pytest.raises(ValueError, match="frozen"):
        acme.customer_id = "other"  # type: ignore[misc]


# --- invalid fixtures: each file names the exact lines it must produce --------------------------


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.yaml")), ids=lambda path: path.stem)
def test_invalid_fixture_reports_exactly_its_problems(fixture: Path) -> None:
    expected = [
        f"{fixture}: {line.removeprefix('# expect: ')}"
        for line in fixture.read_text().splitlines()
        if line.startswith("# expect: ")
    ]
    assert expected, f"{fixture.name} must say what it expects"
    with pytest.raises(CustomerConfigError) as caught:
        load_customer_config(fixture)
    assert sorted(caught.value.problems) == sorted(expected)
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_fixture_directory_is_not_empty() -> None:
    assert len(list(FIXTURES.glob("*.yaml"))) >= 10


# --- shell metacharacters in every field that can reach a shell, a file name or a mail header ----

SHELL_REACHABLE_FIELDS = {
    # field path (as reported) -> (location in the data, a valid value to corrupt)
    "customer_id": (("customer_id",), "acme"),
    "request_case.case_id": (("request_case", "case_id"), "ACME-1042"),
    "versions.current": (("versions", "current"), "10.2.0"),
    "versions.target": (("versions", "target"), "11.0.0"),
    "release_source.conn_id": (("release_source", "conn_id"), "crm_releases"),
    "release_source.product": (("release_source", "product"), "aurea-crm"),
    **{
        f"environments.{env}.{field}": (("environments", env, field), value)
        for env in ("dev", "uat", "prod")
        for field, value in (
            ("ssh_conn_id", f"crm_acme_{env}_ssh"),
            ("db_conn_id", f"crm_acme_{env}_db"),
            ("install_path", f"/tmp/crm-estate/hosts/{env}/crm/acme"),
            ("staging_path", f"/tmp/crm-estate/hosts/{env}/staging/acme"),
            ("backup_path", f"/tmp/crm-estate/hosts/{env}/backups/acme"),
        )
    },
    "test_cases[0].id": (("test_cases", 0, "id"), "crm_status"),
    "test_cases[0].argv[0]": (("test_cases", 0, "argv", 0), "bin/crm"),
    "test_cases[0].argv[1]": (("test_cases", 0, "argv", 1), "status"),
    "users.consultant[0]": (("users", "consultant", 0), "carla"),
    "users.project_manager[0]": (("users", "project_manager", 0), "pete"),
    "calendar.timezone": (("calendar", "timezone"), "UTC"),
    "contacts.customer[0].email": (("contacts", "customer", 0, "email"), "alice.admin@acme.example"),
    "alerts.webhook_conn_id": (("alerts", "webhook_conn_id"), "slack_alerts"),
}


# Inner spaces are allowed in arguments only (argv always goes through shlex.join as well).
SHELL_CASES = [
    (field, character)
    for field in SHELL_REACHABLE_FIELDS
    for character in [*SHELL_METACHARACTERS, " "]
    if not (character == " " and field == "test_cases[0].argv[1]")
]


@pytest.mark.parametrize(("field", "metacharacter"), SHELL_CASES, ids=[f"{f}-{c!r}" for f, c in SHELL_CASES])
def test_shell_metacharacters_are_rejected(field: str, metacharacter: str) -> None:
    location, valid = SHELL_REACHABLE_FIELDS[field]
    data = acme_data()
    data.setdefault("alerts", {})["webhook_conn_id"] = "slack_alerts"
    bad = valid[:2] + metacharacter + valid[2:] + "x"
    _set(data, location, bad)
    problems = problems_of(data)
    assert any(
        line.startswith(f"acme.yaml: {field}: not a valid ") and repr(bad) in line for line in problems
    ), problems


def test_free_text_lines_reject_newlines_only() -> None:
    data = acme_data()
    data["contacts"]["customer"][0]["name"] = 'Alice O\'Brien "IT"; ops'
    assert (
        parse_customer_config(data, "acme.yaml", file_stem="acme")
        .contacts.customer[0]
        .name.startswith("Alice")
    )
    data["contacts"]["customer"][0]["name"] = "Alice\nBcc: everyone@example.com"
    assert problems_of(data) == (
        "acme.yaml: contacts.customer[0].name: not a valid line: use 1-500 characters on one line, not "
        "starting with a space (no newlines, control or invisible formatting characters, no emoji); it "
        "contains U+000A LINE FEED, a control character (got 'Alice\\nBcc: everyone@example.com')",
    )


def test_argument_with_inner_space_is_allowed() -> None:
    data = acme_data()
    data["test_cases"][0]["argv"] = ["grep", "-c", "log level", "settings/system.properties"]
    config = parse_customer_config(data, "acme.yaml", file_stem="acme")
    assert config.test_cases[0].argv[2] == "log level"


# --- single rules ------------------------------------------------------------------------------


def test_versions_compare_numerically() -> None:
    data = acme_data()
    data["versions"] = {"current": "10.9.0", "target": "10.10.0"}
    assert parse_customer_config(data, "acme.yaml", file_stem="acme").versions.target == "10.10.0"
    data["versions"] = {"current": "10.10.0", "target": "10.9.0"}
    assert problems_of(data) == (
        "acme.yaml: versions.target: 10.9.0 must be newer than the current version 10.10.0",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (11, "acme.yaml: versions.target: Input should be a valid string (got 11)"),
        (11.0, "acme.yaml: versions.target: Input should be a valid string (got 11.0)"),
        ("11.0", "acme.yaml: versions.target: not a valid version: use major.minor.patch numbers such as "
                 "10.2.0 (got '11.0')"),
        ("11.0.0\n", "acme.yaml: versions.target: not a valid version: use major.minor.patch numbers such as "
                     "10.2.0; it contains U+000A LINE FEED, a control character (got '11.0.0\\n')"),
        ("\uff11\uff11.\uff11.\uff10", "acme.yaml: versions.target: not a valid version: use "
         "major.minor.patch numbers such as 10.2.0; it contains U+FF11 FULLWIDTH DIGIT ONE, a non-ASCII "
         "character (got '\uff11\uff11.\uff11.\uff10')"),
    ],
)  # fmt: skip
def test_version_must_be_a_dotted_triple(value: object, message: str) -> None:
    data = acme_data()
    data["versions"]["target"] = value
    assert problems_of(data) == (message,)


def test_dates_must_be_iso_dates_not_numbers() -> None:
    data = acme_data()
    data["request_case"]["deadline"] = 20270331
    assert problems_of(data) == (
        "acme.yaml: request_case.deadline: not a valid date: use a date written YYYY-MM-DD (got 20270331)",
    )
    data["request_case"]["deadline"] = "2027-03-31"
    assert parse_customer_config(data, "acme.yaml", file_stem="acme").request_case.deadline == date(
        2027, 3, 31
    )


def test_email_addresses_are_checked() -> None:
    data = acme_data()
    data["contacts"]["consultant"][0]["email"] = "carla at platinum"
    assert problems_of(data) == (
        "acme.yaml: contacts.consultant[0].email: not a valid e-mail address: use name@domain.tld without "
        "spaces, quotes or angle brackets (got 'carla at platinum')",
    )


@pytest.mark.parametrize("role", ["customer", "consultant", "project_manager"])
def test_every_role_needs_a_contact(role: str) -> None:
    data = acme_data()
    data["contacts"][role] = []
    assert problems_of(data) == (f"acme.yaml: contacts.{role}: must not be empty",)


@pytest.mark.parametrize("role", ["consultant", "project_manager"])
def test_every_gate_role_needs_users(role: str) -> None:
    data = acme_data()
    data["users"][role] = []
    assert problems_of(data) == (f"acme.yaml: users.{role}: must not be empty",)


def test_every_gate_user_has_a_contact_address_for_sla_alerts() -> None:
    data = acme_data()
    data["users"]["consultant"] = ["carla", "vic"]
    del data["contacts"]["project_manager"][0]["user"]
    assert problems_of(data) == (
        "acme.yaml: users.consultant[1]: 'vic' has no e-mail address for SLA alerts; add 'user: vic' to "
        "that person's entry under contacts.consultant",
        "acme.yaml: users.project_manager[0]: 'pete' has no e-mail address for SLA alerts; add 'user: pete' "
        "to that person's entry under contacts.project_manager",
    )


def test_gate_users_map_to_their_contacts_addresses() -> None:
    config = load_customer_config(CUSTOMERS / "globex.yaml")
    assert config.user_emails(["gina", "pete"]) == ("gina@platinum.example", "pete@platinum.example")
    with pytest.raises(LookupError, match="no contact of customer globex has user vic; add 'user: <name>'"):
        config.user_emails(["carla", "vic"])


def test_holiday_country_must_be_known_to_the_holidays_library() -> None:
    data = acme_data()
    data["calendar"]["holiday_country"] = "XX"
    assert problems_of(data) == (
        "acme.yaml: calendar.holiday_country: 'XX' is not a country the holidays library knows; use an ISO "
        "3166-1 alpha-2 code such as DE, US or GB",
    )
    data["calendar"]["holiday_country"] = None
    data["calendar"]["holiday_subdivision"] = "BY"
    assert problems_of(data) == (
        "acme.yaml: calendar.holiday_subdivision: is given without holiday_country; set the country too",
    )


def test_weekend_days_are_named_and_unique() -> None:
    data = acme_data()
    data["calendar"]["weekend"] = ["sat", "sunday"]
    assert problems_of(data) == (
        "acme.yaml: calendar.weekend[1]: Input should be 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun' "
        "(got 'sunday')",
    )
    data["calendar"]["weekend"] = ["fri", "fri"]
    assert problems_of(data) == ("acme.yaml: calendar.weekend: lists a day twice: ['fri', 'fri']",)


@pytest.mark.parametrize(
    ("query", "accepted"),
    [
        ("SELECT count(*) FROM crm_schema_version", True),
        ("select 1;", True),
        ("  WITH v AS (SELECT version FROM crm_schema_version) SELECT * FROM v", True),
        ("SELECT 1; SELECT 2", False),
        ("SELECT 1;\nDELETE FROM crm_settings", False),
        ("DELETE FROM crm_settings", False),
        ("selection", False),
    ],
)
def test_sql_test_case_is_one_select(query: str, accepted: bool) -> None:
    data = acme_data()
    data["test_cases"][1]["query"] = query
    if accepted:
        assert parse_customer_config(data, "acme.yaml", file_stem="acme").test_cases[1].query == query
    else:
        (problem,) = problems_of(data)
        assert problem.startswith("acme.yaml: test_cases[1].query: must be a single ")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:8080/health", None),
        ("https://crm.acme.example/status?full=1", None),
        ("file:///etc/passwd", "must be an http:// or https:// URL with a host"),
        (
            "http://user:secret@127.0.0.1/",  # pragma: allowlist secret
            "must not carry credentials; use an Airflow connection",
        ),
        (
            "http://127.0.0.1/a b",
            "contains characters not allowed in a URL (spaces, quotes, control characters)",
        ),
        (
            "http://127.0.0.1/$(id)`x`'",
            "contains characters not allowed in a URL (spaces, quotes, control characters)",
        ),
    ],
)
def test_http_test_case_url(url: str, problem: str | None) -> None:
    data = acme_data()
    data["test_cases"].append({"id": "web", "title": "Web answers", "kind": "http", "url": url})
    if problem is None:
        case = parse_customer_config(data, "acme.yaml", file_stem="acme").test_cases[-1]
        assert (case.url, case.expect.status, case.environments) == (url, 200, ("dev", "uat", "prod"))
    else:
        assert problems_of(data) == (f"acme.yaml: test_cases[3].url: {problem} (got {url!r})",)


def test_sql_expectation_is_rows_or_scalar_not_both() -> None:
    data = acme_data()
    data["test_cases"][1]["expect"] = {"rows": [[1]], "scalar": 1}
    assert problems_of(data) == ("acme.yaml: test_cases[1].expect: give either rows or scalar, not both",)


def test_command_program_has_no_spaces() -> None:
    data = acme_data()
    data["test_cases"][0]["argv"] = ["bin/crm status"]
    (problem,) = problems_of(data)
    assert problem.startswith(
        "acme.yaml: test_cases[0].argv[0]: not a valid program: use a program name or path"
    )


def test_test_cases_are_required() -> None:
    data = acme_data()
    data["test_cases"] = []
    assert problems_of(data) == ("acme.yaml: test_cases: must not be empty",)


def test_environments_subset_must_be_known_and_unique() -> None:
    data = acme_data()
    data["test_cases"][0]["environments"] = ["dev", "dev"]
    assert problems_of(data) == (
        "acme.yaml: test_cases[0].environments: lists an environment twice: ['dev', 'dev']",
    )


def test_missing_environment_is_named() -> None:
    data = acme_data()
    del data["environments"]["prod"]
    assert problems_of(data) == ("acme.yaml: environments.prod: required field is missing",)


def test_overrides_are_checked_against_the_given_process_model() -> None:
    process_data = yaml.safe_load((REPO / "include" / "process.yaml").read_text())
    process_data["budget_groups"][3]["id"] = "dev_work"
    for activity in process_data["stages"][2]["activities"]:
        activity["budget_group"] = "dev_work"
    custom = parse_process_model(process_data)
    data = acme_data()
    data["duration_overrides"] = {"dev_work": 20}
    config = parse_customer_config(data, "acme.yaml", file_stem="acme", process=custom)
    assert config.process_model(custom).budget_unit("dev_work").days == 20
    (problem,) = problems_of(data)
    assert problem.startswith(
        "acme.yaml: duration_overrides.dev_work: unknown budget; use one of respond_to_request,"
    )


def test_every_problem_is_listed_one_per_line() -> None:
    data = acme_data()
    data["customer_id"] = "Acme"
    data["versions"]["target"] = "9.0.0"
    data["environments"]["uat"]["install_path"] = "relative/path"
    data["colour"] = "red"
    assert problems_of(data) == (
        "acme.yaml: customer_id: not a valid customer id: use 2-40 lower-case letters, digits or '_', "
        "starting with a letter (got 'Acme')",
        "acme.yaml: versions.target: 9.0.0 must be newer than the current version 10.2.0",
        "acme.yaml: environments.uat.install_path: not a valid absolute path: use an absolute path of "
        "letters, digits, '.', '_', '-' and '/' (got 'relative/path')",
        "acme.yaml: colour: unknown field; check its spelling or remove it",
    )


def test_parse_without_file_skips_only_the_stem_rule() -> None:
    data = acme_data()
    data["customer_id"] = "other"
    assert parse_customer_config(data, "inline").customer_id == "other"


def test_config_schema_is_available_for_tooling() -> None:
    schema = CustomerConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["customer_id"]["pattern"] == "^[a-z][a-z0-9_]{1,39}$(?!\\n)"
    assert schema["properties"]["customer_id"]["maxLength"] == 40


# --- loading a directory -------------------------------------------------------------------------


def test_directory_with_a_broken_file_loads_the_others(tmp_path: Path) -> None:
    for customer_id in EXAMPLES:
        shutil.copy(CUSTOMERS / f"{customer_id}.yaml", tmp_path)
    broken = tmp_path / "broken.yaml"
    data = copy.deepcopy(acme_data())
    data["customer_id"] = "broken"
    data["versions"]["target"] = "1.0.0"
    broken.write_text(yaml.safe_dump(data))
    (tmp_path / "notes.txt").write_text("not a config")
    (tmp_path / ".hidden.yaml").write_text(": not even yaml")

    configs, errors = load_customer_configs(tmp_path)

    assert sorted(configs) == sorted(EXAMPLES)
    assert list(errors) == [broken]
    assert errors[broken].problems == (
        f"{broken}: versions.target: 1.0.0 must be newer than the current version 10.2.0",
    )


def test_empty_or_missing_directory_loads_nothing(tmp_path: Path) -> None:
    assert load_customer_configs(tmp_path) == ({}, {})
    assert load_customer_configs(tmp_path / "absent") == ({}, {})


# --- the lint command ------------------------------------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "managed_upgrade.config", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_cli_accepts_valid_files() -> None:
    result = run_cli("validate", *(f"include/customers/{c}.yaml" for c in EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"OK include/customers/{c}.yaml" for c in EXAMPLES]


def test_cli_reports_problems_and_fails() -> None:
    bad = FIXTURES / "version_not_newer.yaml"
    result = run_cli("validate", "include/customers/acme.yaml", bad)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "OK include/customers/acme.yaml",
        f"{bad}: versions.target: 10.2.0 must be newer than the current version 10.10.0",
    ]


def test_cli_reports_unreadable_files() -> None:
    result = run_cli("validate", "include/customers/nobody.yaml")
    assert result.returncode == 1
    assert result.stdout == "include/customers/nobody.yaml: cannot read file: No such file or directory\n"


@pytest.mark.parametrize("args", [(), ("validate",), ("lint", "include/customers/acme.yaml")])
def test_cli_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage: python -m managed_upgrade.config" in result.stderr


def test_questionnaire_answers_read_as_text() -> None:
    data = acme_data()
    data["questionnaire"]["answers"] = {"Number of users": 120, "Uses SSO": True, "Go-live": date(2027, 4, 1)}
    config = parse_customer_config(data, "acme.yaml", file_stem="acme")
    assert config.questionnaire.answers == {
        "Number of users": "120",
        "Uses SSO": "yes",
        "Go-live": "2027-04-01",
    }
    data["questionnaire"]["answers"] = {"Modules": ["sales", "service"]}
    assert problems_of(data) == ("acme.yaml: questionnaire.answers.Modules: Input should be a valid string",)


# --- upgrade windows and change freezes ------------------------------------------------------------------


def test_windows_and_freezes_load_per_environment_and_for_the_customer() -> None:
    data = acme_data()
    data["environments"]["prod"]["upgrade_windows"] = [{"days": ["sat"], "start": "22:00", "end": "04:00"}]
    data["environments"]["prod"]["change_freezes"] = [
        {"start": "2027-03-29", "end": "2027-04-09", "reason": "Quarter-end closing"}
    ]
    data["change_freezes"] = [{"start": date(2027, 12, 20), "end": date(2027, 12, 31), "reason": "Year end"}]
    config = parse_customer_config(data, "acme.yaml", file_stem="acme")
    (window,) = config.environment("prod").upgrade_windows
    assert (window.days, window.start, window.end) == (("sat",), "22:00", "04:00")
    assert config.environment("dev").upgrade_windows == () and config.change_freezes[0].reason == "Year end"


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        (
            {"days": ["sat"], "start": 1320, "end": "04:00"},
            "environments.prod.upgrade_windows[0].start: write the time in quotes ('22:00'): YAML reads an "
            "unquoted HH:MM as a number (got 1320)",
        ),
        (
            {"days": ["sat"], "start": "25:00", "end": "04:00"},
            "environments.prod.upgrade_windows[0].start: not a valid time of day: use a time of day written "
            "HH:MM, 00:00 to 24:00 (got '25:00')",
        ),
        (
            {"days": ["sat"], "start": "22:00", "end": "22:00"},
            "environments.prod.upgrade_windows[0].end: equals start 22:00; for a whole day use start '00:00' "
            "and end '24:00'",
        ),
        (
            {"days": ["sat"], "start": "24:00", "end": "02:00"},
            "environments.prod.upgrade_windows[0].start: 24:00 is the end of a day; start the window at "
            "00:00 of the next day",
        ),
        (
            {"days": ["sat", "sat"], "start": "22:00", "end": "02:00"},
            "environments.prod.upgrade_windows[0].days: lists a day twice: ['sat', 'sat']",
        ),
        (
            {"days": [], "start": "22:00", "end": "02:00"},
            "environments.prod.upgrade_windows[0].days: must not be empty",
        ),
        (
            {"days": ["sat"], "start": "22:00", "end": "02:00", "timezone": "UTC"},
            "environments.prod.upgrade_windows[0].timezone: unknown field; check its spelling or remove it",
        ),
    ],
)
def test_malformed_windows_are_refused_naming_the_field(window: dict, problem: str) -> None:
    data = acme_data()
    data["environments"]["prod"]["upgrade_windows"] = [window]
    assert problems_of(data) == (f"acme.yaml: {problem}",)


@pytest.mark.parametrize(
    ("freeze", "problem"),
    [
        (
            {"start": "2027-04-09", "end": "2027-03-29", "reason": "Backwards"},
            "change_freezes[0].end: 2027-03-29 is before start 2027-04-09; need start <= end",
        ),
        (
            {"start": "2027-01-01", "end": "2028-06-30", "reason": "Too long"},
            "change_freezes[0].end: the freeze lasts 547 days, more than the 366 allowed; split it or "
            "shorten it",
        ),
        (
            {"start": "2027-01-01", "end": "2027-01-02", "reason": "Two\nlines"},
            "change_freezes[0].reason: not a valid line: use 1-500 characters on one line, not starting "
            "with a space (no newlines, control or invisible formatting characters, no emoji); it contains "
            "U+000A LINE FEED, a control character (got 'Two\\nlines')",
        ),
        (
            {"start": "2027-01-01", "end": "2027-01-02"},
            "change_freezes[0].reason: required field is missing",
        ),
    ],
)
def test_malformed_freezes_are_refused_naming_the_field(freeze: dict, problem: str) -> None:
    data = acme_data()
    data["change_freezes"] = [freeze]
    assert problems_of(data) == (f"acme.yaml: {problem}",)


def test_window_and_freeze_lists_are_bounded() -> None:
    data = acme_data()
    window = {"days": ["sat"], "start": "22:00", "end": "04:00"}
    data["environments"]["uat"]["upgrade_windows"] = [window] * 21
    data["environments"]["uat"]["change_freezes"] = [
        {"start": "2027-01-01", "end": "2027-01-01", "reason": "x"}
    ] * 51
    problems = problems_of(data)
    assert any("environments.uat.upgrade_windows: " in line and "at most 20" in line for line in problems)
    assert any("environments.uat.change_freezes: " in line and "at most 50" in line for line in problems)
