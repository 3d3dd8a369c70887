"""Settings files and snapshots: parsed like the CRM reads them, edited in place, validated on load."""

from __future__ import annotations

import pytest

from managed_upgrade.operations.settings_files import parse_properties, set_properties
from managed_upgrade.operations.settings_snapshot import ReapplyReport, SettingsError, SettingsSnapshot, shown

TEXT = """# aurea-crm 11.0.0 defaults
server.http.port=8080
 session.timeout.minutes = 30
# a comment
ui.theme=horizon
"""


def test_parse_properties_follows_the_crm_rules() -> None:
    assert parse_properties(TEXT + "ui.theme=classic\nnot a setting\n") == {
        "server.http.port": "8080",
        "session.timeout.minutes": "30",
        "ui.theme": "classic",
    }


def test_set_properties_edits_in_place_keeps_comments_and_appends_missing_keys() -> None:
    result = set_properties(TEXT, {"session.timeout.minutes": "90", "custom.flag": "on"})
    lines = result.splitlines()
    assert lines[0] == "# aurea-crm 11.0.0 defaults"
    assert lines[2] == "session.timeout.minutes=90"
    assert "# a comment" in lines
    assert lines[-1] == "custom.flag=on"
    assert parse_properties(result) == {
        "server.http.port": "8080",
        "session.timeout.minutes": "90",
        "ui.theme": "horizon",
        "custom.flag": "on",
    }


def test_values_with_shell_syntax_stay_literal() -> None:
    value = "$(touch /tmp/pwned); `id` 'quoted' \"double\""
    assert parse_properties(set_properties(TEXT, {"ui.theme": value}))["ui.theme"] == value


def snapshot_data(**overrides) -> dict:
    data = {
        "captured_at": "2026-01-01T00:00:00+00:00",
        "install_path": "/srv/crm",
        "files": {"system.properties": {"ui.theme": "classic"}},
        "database": {"report.row_limit": "50000"},
    }
    data.update(overrides)
    return data


def test_snapshot_round_trips_through_json() -> None:
    snapshot = SettingsSnapshot.from_json(snapshot_data(), "test")
    assert SettingsSnapshot.from_json(snapshot.to_json(), "test") == snapshot


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"system.properties": {"ui.theme": "a\nevil.key=1"}}, "would break the key=value format"),
        ({"system.properties": {"bad key": "x"}}, "setting key 'bad key' is not allowed"),
        ({"system.properties": {"#comment": "x"}}, "is not allowed"),
        ({"../etc/passwd.properties": {"a": "b"}}, "settings file name"),
        ({"database.properties": {"password": "x"}}, "settings file name"),
    ],
)
def test_a_tampered_snapshot_is_refused(files: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        SettingsSnapshot.from_json(snapshot_data(files=files), "host:/backup/settings.snapshot.json")


def test_not_a_snapshot_names_the_source() -> None:
    with pytest.raises(SettingsError, match=r"host:/x\.json: not a settings snapshot"):
        SettingsSnapshot.from_json({"files": []}, "host:/x.json")


def test_report_masks_values_of_secret_looking_keys() -> None:
    report = ReapplyReport(
        restored=[
            {"source": "mail.properties", "key": "mail.smtp.password", "was": "default", "now": "hunter2"},
            {"source": "mail.properties", "key": "mail.smtp.host", "was": "localhost", "now": "smtp.acme"},
        ]
    )
    restored = report.summary()["restored"]
    assert restored[0]["now"] == "***"
    assert restored[1]["now"] == "smtp.acme"
    assert shown("api.token", "abc") == "***"
