"""No secret is committed: every tracked file passes detect-secrets' default plugins.

Secrets belong in Airflow connections and the deployment's `.env` (git-ignored). A line that only
looks like a secret (a test fixture's throwaway password, a placeholder in `.env.example`) says so
with detect-secrets' own `pragma: allowlist secret` comment, so each exception is visible where it is.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings

REPOSITORY = Path(__file__).resolve().parents[2]


def tracked_files() -> list[str]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:  # an exported tree has no git metadata
        pytest.fail(f"cannot list the repository's files with git: {exc}")
    return [name for name in listing.split("\0") if name and (REPOSITORY / name).is_file()]


def test_the_file_listing_finds_the_project() -> None:
    files = tracked_files()
    assert "README.md" in files
    assert any(name.startswith("include/managed_upgrade/") for name in files)


def test_no_tracked_file_holds_a_secret() -> None:
    found = SecretsCollection(root=str(REPOSITORY))
    with default_settings():
        for name in tracked_files():
            found.scan_file(name)
    findings = [
        f"{name}:{secret.line_number}: {secret.type}"
        for name, secrets in found.data.items()
        for secret in secrets
    ]
    assert findings == [], (
        "possible secrets in tracked files (move real ones to a connection or .env; mark a fixture's "
        "fake value with '# pragma: allowlist secret'):\n" + "\n".join(findings)
    )


def test_the_scan_detects_a_planted_secret(tmp_path: Path) -> None:
    planted = tmp_path / "settings.py"
    planted.write_text(
        'AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'  # pragma: allowlist secret
    )
    found = SecretsCollection(root=str(tmp_path))
    with default_settings():
        found.scan_file("settings.py")
    assert [secret.type for secrets in found.data.values() for secret in secrets]
