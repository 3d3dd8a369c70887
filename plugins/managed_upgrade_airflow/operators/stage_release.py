"""Preparation > Stage Upgrade Files: the release fetched once, verified, and put on every environment host.

Environments in different network zones get one task instance per zone (each fetches the release
into its own worker's cache): see :mod:`managed_upgrade_airflow.worker_queues`.

The work is :func:`managed_upgrade.operations.release_source.fetch_release` (worker cache, sha256 per
file) and :func:`managed_upgrade.operations.staging.stage_release` (parallel, resumable, idempotent,
verified on each host). XCom gets the compact per-host, per-file outcome (``sent`` / ``skipped`` /
``resumed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from managed_upgrade.operations.release_source import DirectoryReleaseSource, fetch_release
from managed_upgrade.operations.staging import StagingTarget, stage_release
from managed_upgrade.vocabulary import require
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig


class StageReleaseOperator(BaseOperator):
    """Fetch release ``version`` of ``product`` from an ``fs`` connection and stage it on every host.

    :param release_conn_id: Airflow ``fs`` connection; its path is the release repository root
    :param product: product directory in the repository (``<root>/<product>/<version>/``)
    :param version: release to stage (templated, e.g. from the trigger form)
    :param environments: ``{name: {"ssh_conn_id": ..., "staging_path": ..., "allowed_roots": [...]}}``;
        the release goes to ``<staging_path>/<version>/`` on each host, which must lie under the
        environment's ``allowed_roots`` (optional: without them only the always-refused paths are refused)
    :param cache_root: worker-side release cache (default ``$MANAGED_UPGRADE_RELEASE_CACHE`` or the
        user's cache directory)
    :param transport: ``auto`` (OpenSSH when possible), ``openssh`` or ``paramiko``
    """

    template_fields: Sequence[str] = ("version",)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        release_conn_id: str,
        product: str,
        version: str,
        environments: Mapping[str, Mapping[str, Any]],
        cache_root: str | None = None,
        transport: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.release_conn_id = release_conn_id
        self.product = product
        self.version = version
        self.environments = {name: dict(spec) for name, spec in environments.items()}
        self.cache_root = cache_root
        self.transport = transport

    @classmethod
    def for_customer(
        cls, config: CustomerConfig, version: str | None = None, **kwargs: Any
    ) -> StageReleaseOperator:
        """The operator staging ``version`` (default: the config's target) to all three environments."""
        return cls(**release_kwargs(config, version), environments=staging_specs(config), **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.standard.hooks.filesystem import FSHook

        version = require("version", self.version)
        root = FSHook(fs_conn_id=self.release_conn_id).get_path()
        source = DirectoryReleaseSource(root, self.product, version)
        release = fetch_release(
            source, self.product, version, Path(self.cache_root) if self.cache_root else None
        )
        fetched = [item.name for item in release.files if item.fetched]
        self.log.info(
            "release %s %s verified in cache %s (fetched: %s)",
            self.product,
            version,
            release.directory,
            fetched,
        )

        hooks = {
            name: CrmEnvironmentHook(spec["ssh_conn_id"], label=name)
            for name, spec in self.environments.items()
        }
        try:
            targets = [
                StagingTarget(
                    name,
                    hooks[name].get_conn(),
                    require("absolute path", spec["staging_path"]),
                    spec.get("allowed_roots"),
                )
                for name, spec in self.environments.items()
            ]
            report = stage_release(release, targets, transport=self.transport)  # type: ignore[arg-type]
        finally:
            for hook in hooks.values():
                hook.close()
        summary = report.summary()
        for name, host in summary["hosts"].items():
            self.log.info(
                "%s: %s via %s, %d bytes sent", name, host["files"], host["transport"], host["bytes_sent"]
            )
        summary["cache"] = {"directory": str(release.directory), "fetched": fetched}
        return summary


def release_kwargs(config: CustomerConfig, version: str | None = None) -> dict[str, str]:
    """Where the release comes from: connection, product and version (default: the config's target)."""
    return {
        "release_conn_id": config.release_source.conn_id,
        "product": config.release_source.product,
        "version": version or config.versions.target,
    }


def staging_specs(
    config: CustomerConfig, environments: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{environment: {ssh_conn_id, staging_path, allowed_roots}}`` of ``environments`` (default all)."""
    return {
        name: {
            "ssh_conn_id": env.ssh_conn_id,
            "staging_path": env.staging_path,
            "allowed_roots": list(env.allowed_roots),
        }
        for name, env in config.environments.items()
        if environments is None or name in environments
    }
