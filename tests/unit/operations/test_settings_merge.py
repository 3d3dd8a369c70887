"""The three-way merge of customer settings, the release defaults it merges against, and its review."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from managed_upgrade.markdown import code, md
from managed_upgrade.operations.release_defaults import ReleaseDefaultsError, parse_payload_defaults
from managed_upgrade.operations.settings_snapshot import (
    REMOVED,
    ReapplyReport,
    SettingsError,
    SettingsSnapshot,
    merge_settings,
    reapply_review_markdown,
)

OLD = {"ui.theme": "classic", "session.timeout": "30", "log.level": "INFO", "legacy.flag": "on"}
NEW = {"ui.theme": "horizon", "session.timeout": "30", "log.level": "DEBUG", "search": "opensearch"}


def merged(saved, current, base):
    report = ReapplyReport(base="10.2.0" if base is not None else None)
    changes = merge_settings("system.properties", saved, current, base, report)
    return changes, report


def test_a_value_the_customer_never_changed_takes_the_new_default() -> None:
    changes, report = merged({"ui.theme": "classic"}, {"ui.theme": "horizon"}, OLD)
    assert changes == {}
    assert report.new_defaults == [
        {"source": "system.properties", "key": "ui.theme", "old": "classic", "new": "horizon"}
    ]
    assert report.restored == []
    assert not report.needs_review


def test_a_customer_value_the_installer_reset_is_restored() -> None:
    changes, report = merged({"session.timeout": "90"}, {"session.timeout": "30"}, OLD)
    assert changes == {"session.timeout": "90"}
    assert report.restored == [
        {"source": "system.properties", "key": "session.timeout", "was": "30", "now": "90"}
    ]
    assert report.conflicts == []
    assert not report.needs_review


def test_when_both_changed_the_customer_wins_and_the_conflict_is_flagged() -> None:
    changes, report = merged({"log.level": "WARN"}, {"log.level": "DEBUG"}, OLD)
    assert changes == {"log.level": "WARN"}
    assert report.conflicts == [
        {
            "source": "system.properties",
            "key": "log.level",
            "was": "DEBUG",
            "now": "WARN",
            "old_default": "INFO",
            "new_default": "DEBUG",
        }
    ]
    assert report.needs_review


def test_a_customer_key_the_release_dropped_is_written_back_but_an_old_default_stays_dropped() -> None:
    changes, report = merged({"custom.banner": "Hi", "legacy.flag": "on"}, NEW, OLD)
    assert changes == {"custom.banner": "Hi"}
    assert report.vanished == [{"source": "system.properties", "key": "custom.banner", "value": "Hi"}]
    assert report.new_defaults == [
        {"source": "system.properties", "key": "legacy.flag", "old": "on", "new": REMOVED}
    ]
    assert report.needs_review


def test_keys_the_release_added_are_reported_and_left_alone() -> None:
    changes, report = merged({"session.timeout": "30"}, NEW, OLD)
    assert changes == {}
    assert {item["key"] for item in report.added} == {"ui.theme", "log.level", "search"}
    assert report.unchanged == [{"source": "system.properties", "key": "session.timeout"}]


def test_without_the_old_defaults_every_differing_value_is_restored_and_reviewed() -> None:
    changes, report = merged({"ui.theme": "classic", "legacy.flag": "on"}, NEW, None)
    assert changes == {"ui.theme": "classic", "legacy.flag": "on"}
    assert report.new_defaults == []
    assert report.needs_review  # the ancestor is unknown


def test_merging_twice_changes_nothing_the_second_time() -> None:
    saved = {"ui.theme": "classic", "session.timeout": "90", "log.level": "WARN", "custom": "x"}
    current = dict(NEW)
    changes, _ = merged(saved, current, OLD)
    current.update(changes)
    again, report = merged(saved, current, OLD)
    assert again == {}
    assert report.restored == [] and report.vanished == []


def test_the_summary_masks_secret_looking_keys_in_every_value_field() -> None:
    report = ReapplyReport(base="10.2.0")
    merge_settings(
        "db:crm_settings",
        {"smtp.password": "hunter2"},  # pragma: allowlist secret
        {"smtp.password": "x"},
        {"smtp.password": "y"},
        report,
    )
    summary = report.summary()
    assert "hunter2" not in json.dumps(summary)
    conflict = summary["conflicts"][0]
    assert conflict["now"] == conflict["old_default"] == conflict["new_default"] == "***"
    assert summary["needs_review"] is True
    assert summary["base"] == "10.2.0"


def test_snapshots_keep_their_version_and_old_ones_load_without() -> None:
    snapshot = SettingsSnapshot(
        "2026-11-28T10:00:00+00:00", "/srv/crm", {"a.properties": {"k": "v"}}, {}, "10.2.0"
    )
    data = json.loads(json.dumps(snapshot.to_json()))
    assert data["format"] == 2
    assert SettingsSnapshot.from_json(data, "test").version == "10.2.0"
    del data["version"]
    data["format"] = 1
    assert SettingsSnapshot.from_json(data, "test").version is None
    data["files"] = {"../x.properties": {}}
    with pytest.raises(SettingsError, match=r"\.\./x\.properties"):
        SettingsSnapshot.from_json(data, "host:/backups/b1/settings.snapshot.json")


def test_the_review_shows_conflicts_vanished_keys_and_new_defaults() -> None:
    report = ReapplyReport(base="10.2.0")
    merge_settings(
        "system.properties", {"log.level": "WARN", "ui.theme": "classic", "custom|x": "a`b"}, NEW, OLD, report
    )
    text = reapply_review_markdown(report.summary())
    assert "| Customer values restored | 1 |" in text
    assert "| New release defaults kept | 1 |" in text
    assert "the defaults of 10.2.0" in text
    assert f"{code('INFO')} to {code('DEBUG')}" in text  # the conflict names both defaults
    rendered = MarkdownIt("gfm-like").render(text)  # the vanished key, literally, in a cell of its own
    assert "<td><code>custom|x</code></td>" in rendered and "<code>a`b</code>" in rendered, rendered
    assert f"{code('ui.theme')} {code('classic')} → {code('horizon')}" in text
    assert "Review every restored value" not in text


def test_the_review_warns_when_the_old_defaults_were_unknown() -> None:
    report = ReapplyReport(base_problem="release 10.2.0 is not in the repository")
    merge_settings("system.properties", {"ui.theme": "classic"}, NEW, None, report)
    text = reapply_review_markdown(report.summary())
    assert "Review every restored value" in text
    assert md("release 10.2.0 is not in the repository") in text
    assert "| Compared against | unknown |" in text


def _payload(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_defaults_come_from_the_release_descriptor(tmp_path: Path) -> None:
    descriptor = {
        "version": "10.2.0",
        "settings_defaults": {"system.properties": {"ui.theme": "classic"}},
        "db_settings": {"export.format": "csv"},
    }
    payload = _payload(tmp_path / "payload.tar.gz", [("release.json", json.dumps(descriptor).encode())])
    defaults = parse_payload_defaults(payload, "10.2.0")
    assert defaults.files == {"system.properties": {"ui.theme": "classic"}}
    assert defaults.database == {"export.format": "csv"}


def test_without_a_settings_section_the_shipped_settings_files_are_read(tmp_path: Path) -> None:
    members = [
        ("release.json", json.dumps({"version": "10.2.0", "db_settings": {}}).encode()),
        ("lib/RELEASE", b"10.2.0\n"),
        ("settings/system.properties", b"# defaults\nui.theme=classic\nlog.level=INFO\n"),
        ("settings/README.txt", b"not settings"),
        ("modules/settings/x.properties", b"k=v\n"),
    ]
    defaults = parse_payload_defaults(_payload(tmp_path / "p.tar.gz", members), "10.2.0")
    assert defaults.files == {"system.properties": {"ui.theme": "classic", "log.level": "INFO"}}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("lib/RELEASE", b"x")], "first member is not release.json"),
        ([("release.json", b"[1, 2]")], "is not a JSON object"),
        ([("release.json", b"{not json")], "cannot read the release's defaults"),
        (
            [("release.json", json.dumps({"version": "11.0.0"}).encode())],
            "describes version '11.0.0', not 10.2.0",
        ),
        (
            [("release.json", json.dumps({"version": "10.2.0", "db_settings": {"a": 1}}).encode())],
            "db_settings is not a mapping of text to text",
        ),
    ],
)
def test_a_bad_release_descriptor_is_named(tmp_path: Path, members, message: str) -> None:
    payload = _payload(tmp_path / "payload.tar.gz", members)
    with pytest.raises(ReleaseDefaultsError, match=message) as error:
        parse_payload_defaults(payload, "10.2.0")
    assert str(payload) in str(error.value)


def test_a_payload_that_is_not_an_archive_is_named(tmp_path: Path) -> None:
    payload = tmp_path / "payload.tar.gz"
    payload.write_bytes(b"not gzip")
    with pytest.raises(ReleaseDefaultsError, match="cannot read"):
        parse_payload_defaults(payload, "10.2.0")


def test_markdown_values_are_literal_and_on_one_line() -> None:
    assert md("a|b *c*\nd") == r"a\|b \*c\* d"
    assert code("x ` y") == "``x ` y``"
