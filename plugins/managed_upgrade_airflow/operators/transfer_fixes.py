"""<Environment> > Transfer fixes from Development: the fixes recorded on Dev, applied to UAT or Prod.

Runs after the upgrade and the settings re-apply and before the sanity test, so the test judges
the environment as it will be handed over. Every fix recorded in this run on the source
environments is read from the ledger, verified (each bundle's checksums), merged in round order (a
later round's file wins, every round's SQL runs in order) and applied all or nothing by
:func:`managed_upgrade.operations.fix_bundle.apply_fix_bundle`. A bundle that fails to verify or apply stops
this environment with a message naming the file or SQL line and the environment.

The source environments default to every environment upgraded before this one: Dev for UAT, Dev and
UAT for Production, so a fix a consultant had to make on UAT reaches Production as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.config import ENVIRONMENT_NAMES
from managed_upgrade.operations.fix_bundle import FixBundle, FixBundleError, apply_fix_bundle, merge_bundles
from managed_upgrade.review.review_loop import environment_title
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.ledger_access import open_ledger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig


class TransferFixesOperator(BaseOperator):
    """``uat.transfer_fixes`` / ``prod.transfer_fixes``: apply the merged fix bundle of this run.

    XCom: ``{environment, outcome: "applied" | "nothing_to_transfer", sources: [environments],
    rounds: ["dev#1", ...], bundle: {checksum, rounds, files: [{path, sha256, size}], sql_scripts,
    sql_statements, bytes} | None, applied: {checksum, files: [{path, sha256, replaced}],
    sql_statements, seconds} | None}``.

    :param config: the customer config (the target environment's connections and paths)
    :param environment: ``uat`` or ``prod``
    :param source_environments: whose fixes to transfer, in order (default: every environment
        before ``environment``)
    """

    template_fields: Sequence[str] = ()
    ui_color = "#fef7e0"

    def __init__(
        self,
        *,
        config: CustomerConfig,
        environment: str,
        source_environments: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        config.environment(environment)
        position = ENVIRONMENT_NAMES.index(environment)
        if position == 0:
            raise ValueError(f"fixes are transferred from {environment}, not to it")
        sources = tuple(source_environments or ENVIRONMENT_NAMES[:position])
        for source in sources:
            if source not in ENVIRONMENT_NAMES[:position]:
                raise ValueError(
                    f"{environment} can take fixes from {', '.join(ENVIRONMENT_NAMES[:position])}, "
                    f"not {source!r}"
                )
        super().__init__(**kwargs)
        self.config = config
        self.environment = environment
        self.source_environments = sources

    def load_bundles(self, context: Context) -> list[tuple[str, FixBundle]]:
        """``("dev#1", bundle)`` per recorded fix of the sources, in source then round order, verified."""
        ti = context["ti"]
        with open_ledger() as ledger:
            rows = ledger.fixes(ti.dag_id, ti.run_id)
        rows = sorted(
            (row for row in rows if row["environment"] in self.source_environments),
            key=lambda row: (self.source_environments.index(row["environment"]), row["round"]),
        )
        bundles = []
        for row in rows:
            source = (
                f"the fix of {row['environment']} round {row['round']} (recorded by {row['recorded_by']})"
            )
            try:
                bundles.append(
                    (f"{row['environment']}#{row['round']}", FixBundle.from_dict(row["bundle"], source))
                )
            except FixBundleError as error:
                raise AirflowFailException(
                    f"not transferring fixes to {environment_title(self.environment)}: {error}; "
                    "nothing was applied"
                ) from error
        return bundles

    def execute(self, context: Context) -> dict[str, Any]:
        bundles = self.load_bundles(context)
        rounds = [name for name, _ in bundles]
        result: dict[str, Any] = {
            "environment": self.environment,
            "sources": list(self.source_environments),
            "rounds": rounds,
            "bundle": None,
            "applied": None,
        }
        try:
            merged = merge_bundles(bundle for _, bundle in bundles)
        except FixBundleError as error:
            raise AirflowFailException(f"not transferring fixes to {self.environment}: {error}") from error
        if merged.is_empty:
            self.log.info(
                "Nothing to transfer to %s: %s",
                self.environment,
                f"rounds {rounds} carry no files or SQL" if rounds else "no fixes were recorded",
            )
            return {**result, "outcome": "nothing_to_transfer"}
        env = self.config.environment(self.environment)
        with CrmEnvironmentHook(env.ssh_conn_id, env.db_conn_id, label=self.environment) as hook:
            try:
                applied = apply_fix_bundle(
                    hook.get_conn(),
                    env.install_path,
                    hook.db_target(),
                    merged,
                    label=self.environment,
                    allowed_roots=env.allowed_roots,
                )
            except FixBundleError as error:
                raise AirflowFailException(
                    f"transferring the fixes of {', '.join(rounds)} to {environment_title(self.environment)} "
                    f"failed: {error}"
                ) from error
        self.log.info(
            "Transferred %s to %s: files %s, %d SQL statement(s), bundle %s",
            ", ".join(rounds),
            self.environment,
            [item["path"] for item in applied.files],
            applied.sql_statements,
            merged.checksum,
        )
        return {**result, "outcome": "applied", "bundle": merged.summary(), "applied": applied.summary()}
