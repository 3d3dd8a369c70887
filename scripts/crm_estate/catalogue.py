"""What each fake aurea-crm release contains: modules, default settings and schema migrations.

One declarative table, so the release builder, the installation provisioner and the tests agree
on what "version X" means (e.g. which settings the installer resets and which tables exist).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")
KNOWN_VERSIONS: tuple[str, ...] = ("10.2.0", "11.0.0", "11.1.0")
MIN_UPGRADABLE_FROM = "10.0.0"
LIB_COMPONENTS: tuple[str, ...] = ("core", "web", "db", "api")
LIB_FILE_BYTES = 64 * 1024  # four of them: a few hundred KB per release by default


def parse_version(version: str) -> tuple[int, int, int]:
    if not VERSION_PATTERN.match(version):
        raise ValueError(f"version must look like X.Y.Z (digits), got {version!r}")
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


BASELINE_SQL = """\
-- aurea-crm baseline schema
CREATE TABLE IF NOT EXISTS crm_schema_version (
    version text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS crm_schema_version_one_row ON crm_schema_version ((true));
CREATE TABLE IF NOT EXISTS crm_migration_history (
    id serial PRIMARY KEY,
    version text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS crm_settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS crm_accounts (
    id serial PRIMARY KEY,
    name text NOT NULL,
    country char(2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS crm_contacts (
    id serial PRIMARY KEY,
    account_id integer NOT NULL REFERENCES crm_accounts (id),
    email text NOT NULL
);
"""

_MIGRATIONS: dict[str, str] = {
    "10.2.0": BASELINE_SQL,
    "11.0.0": """\
-- aurea-crm 11.0.0: account segments and the activity stream
ALTER TABLE crm_accounts ADD COLUMN IF NOT EXISTS segment text NOT NULL DEFAULT 'standard';
CREATE TABLE IF NOT EXISTS crm_activities (
    id serial PRIMARY KEY,
    account_id integer NOT NULL REFERENCES crm_accounts (id),
    kind text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS crm_activities_account ON crm_activities (account_id);
""",
    "11.1.0": """\
-- aurea-crm 11.1.0: marketing consent and the self-service portal
ALTER TABLE crm_contacts ADD COLUMN IF NOT EXISTS marketing_consent boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS crm_portal_users (
    id serial PRIMARY KEY,
    contact_id integer NOT NULL REFERENCES crm_contacts (id),
    login text NOT NULL UNIQUE
);
""",
}

_MODULES_ADDED: dict[str, tuple[str, ...]] = {
    "10.2.0": ("core", "sales", "marketing", "service"),
    "11.0.0": ("analytics",),
    "11.1.0": ("portal",),
}

# settings file -> key -> default value, as changed by each known release (cumulative).
_SETTINGS_FILE_CHANGES: dict[str, dict[str, dict[str, str]]] = {
    "10.2.0": {
        "system.properties": {
            "server.http.port": "8080",
            "session.timeout.minutes": "30",
            "ui.theme": "classic",
            "locale.default": "en_US",
            "log.level": "INFO",
            "search.engine": "lucene",
        },
        "mail.properties": {
            "mail.smtp.host": "localhost",
            "mail.smtp.port": "25",
            "mail.sender": "crm@example.invalid",
        },
        "integration.properties": {
            "integration.erp.enabled": "false",
            "integration.erp.endpoint": "",
            "integration.erp.timeout.seconds": "30",
        },
    },
    "11.0.0": {
        "system.properties": {"search.engine": "opensearch", "ui.theme": "horizon"},
        "analytics.properties": {"analytics.enabled": "true", "analytics.sampling.percent": "100"},
    },
    "11.1.0": {
        "system.properties": {"ai.assistant.enabled": "false"},
        "portal.properties": {"portal.enabled": "false", "portal.base.url": ""},
    },
}

# crm_settings key -> default value, as changed by each known release (cumulative).
_DB_SETTINGS_CHANGES: dict[str, dict[str, str]] = {
    "10.2.0": {
        "currency.default": "EUR",
        "password.min_length": "8",
        "report.row_limit": "10000",
        "workflow.approval.levels": "1",
        "export.format": "csv",
    },
    "11.0.0": {"analytics.retention_days": "365"},
    "11.1.0": {"portal.self_registration": "false", "password.min_length": "10"},
}


@dataclass(frozen=True)
class ReleaseContent:
    """Everything version-specific in one release's payload."""

    version: str
    modules: tuple[str, ...]
    settings_files: dict[str, dict[str, str]]
    db_settings: dict[str, str]
    migrations: dict[str, str]  # every migration up to this version, oldest first

    @property
    def lib_files(self) -> tuple[str, ...]:
        return tuple(f"crm-{component}-{self.version}.jar" for component in LIB_COMPONENTS)


def release_content(version: str) -> ReleaseContent:
    """Content of ``version``; versions outside the catalogue inherit the newest older one's content
    and carry an empty migration (so benchmarks can build e.g. 12.0.0)."""
    target = parse_version(version)
    chain = [known for known in KNOWN_VERSIONS if parse_version(known) <= target]
    if not chain:
        chain = [KNOWN_VERSIONS[0]]  # below the catalogue: the baseline is all there is
    modules: list[str] = []
    files: dict[str, dict[str, str]] = {}
    db: dict[str, str] = {}
    migrations: dict[str, str] = {}
    for known in chain:
        modules.extend(m for m in _MODULES_ADDED[known] if m not in modules)
        for name, changes in _SETTINGS_FILE_CHANGES[known].items():
            files.setdefault(name, {}).update(changes)
        db.update(_DB_SETTINGS_CHANGES[known])
        migrations[known] = _MIGRATIONS[known]
    if version not in KNOWN_VERSIONS:
        if parse_version(version) < parse_version(KNOWN_VERSIONS[0]):
            migrations = {version: BASELINE_SQL}
        else:
            migrations[version] = f"-- aurea-crm {version}: no schema changes\nSELECT 1;\n"
    return ReleaseContent(
        version=version,
        modules=tuple(modules),
        settings_files=files,
        db_settings=db,
        migrations=migrations,
    )


def render_properties(values: dict[str, str], header: str) -> str:
    body = "".join(f"{key}={value}\n" for key, value in values.items())
    return f"# {header}\n{body}"
