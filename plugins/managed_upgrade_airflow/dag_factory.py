"""Builds one customer's managed-upgrade DAG from the process model and the customer config.

The process model decides which tasks exist, their groups, titles and order; this module only knows
which operator does each activity. So a new activity in ``process.yaml`` without an operator here
fails loudly at build time (and in the DAG-integrity tests), never as a silent gap in the DAG.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, BaseOperator, TaskGroup

from managed_upgrade.config import CustomerConfig
from managed_upgrade.process.model import Activity, ProcessModel
from managed_upgrade_airflow.access_control import access_control_warning_silenced, customer_access_control
from managed_upgrade_airflow.crash_retries import crash_retries
from managed_upgrade_airflow.gates.initiation import (
    AcknowledgeRequestGate,
    RespondToRequestGate,
    ReviewTestCaseVerificationGate,
)
from managed_upgrade_airflow.notifiers.failure_notifier import ActivityFailureNotifier
from managed_upgrade_airflow.operators.backup_environment import (
    BackupEnvironmentOperator,
    backup_id_template,
)
from managed_upgrade_airflow.operators.closure import (
    SendCompletionOperator,
    VerifyTargetVersionsOperator,
    host_specs,
)
from managed_upgrade_airflow.operators.customer_sign_off import CustomerSignOffOperator
from managed_upgrade_airflow.operators.fix_and_retest import FixAndRetestOperator
from managed_upgrade_airflow.operators.hand_over import HandOverEnvironmentOperator
from managed_upgrade_airflow.operators.inventory import InventoryDevSystemOperator
from managed_upgrade_airflow.operators.questionnaire_analysis import QuestionnaireAnalysisOperator
from managed_upgrade_airflow.operators.reapply_settings import ReapplySettingsOperator
from managed_upgrade_airflow.operators.request_case import CreateRequestCaseOperator
from managed_upgrade_airflow.operators.sanity_test import SanityTestOperator
from managed_upgrade_airflow.operators.sla_watch import SLA_WATCH_TASK_ID, SlaWatchOperator
from managed_upgrade_airflow.operators.stage_release import (
    StageReleaseOperator,
    release_kwargs,
    staging_specs,
)
from managed_upgrade_airflow.operators.transfer_fixes import TransferFixesOperator
from managed_upgrade_airflow.operators.upgrade_environment import UpgradeEnvironmentOperator
from managed_upgrade_airflow.run_config import adopt_run_config
from managed_upgrade_airflow.run_deadlines import run_deadlines
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID
from managed_upgrade_airflow.trigger_params import trigger_params
from managed_upgrade_airflow.worker_queues import (
    check_worker_queue,
    environment_queue,
    per_instance_queues,
    queue_kwargs,
    zones,
)

TARGET_VERSION = "{{ ti.xcom_pull(task_ids='" + REQUEST_CASE_TASK_ID + "')['target_version'] }}"
"""The run's target version as the request-case task accepted it (ops may change it in the form)."""

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
"""Only manual runs exist (``schedule=None``); a fixed past date keeps the DAG definition stable."""

Builder = Callable[..., BaseOperator]
"""``(config, activity, **task_kwargs)``: task_kwargs carry task_id, display name and doc from the model."""


def _env_backup(config: CustomerConfig, activity: Activity, **kw: Any) -> BaseOperator:
    return BackupEnvironmentOperator.for_environment(config, activity.stage, **kw)


def _env_upgrade(config: CustomerConfig, activity: Activity, **kw: Any) -> BaseOperator:
    return UpgradeEnvironmentOperator.for_environment(
        config,
        activity.stage,
        backup_id=backup_id_template(f"{activity.stage}.backup_environment"),
        target_version=TARGET_VERSION,
        # a crashed worker or triggerer is survived: a retry follows the installer already started
        retries=2,
        retry_delay=timedelta(seconds=30),
        **kw,
    )


def _env_reapply(config: CustomerConfig, activity: Activity, **kw: Any) -> BaseOperator:
    return ReapplySettingsOperator.for_environment(
        config, activity.stage, backup_id=backup_id_template(f"{activity.stage}.backup_environment"), **kw
    )


def _preparation_backups(config: CustomerConfig, activity: Activity, **kw: Any) -> Any:
    """ "Backup Configuration Files" of all environments: one mapped task, one instance per environment."""
    queues = [environment_queue(config, name) for name, _ in config.environments.items()]
    return BackupEnvironmentOperator.partial(**per_instance_queues(queues), **kw).expand_kwargs(
        [
            {
                "customer_id": config.customer_id,
                "environment": name,
                "ssh_conn_id": env.ssh_conn_id,
                "db_conn_id": env.db_conn_id,
                "install_path": env.install_path,
                "backup_path": env.backup_path,
                "retention": env.backup_retention,
                "allowed_roots": list(env.allowed_roots),
            }
            for name, env in config.environments.items()
        ]
    )


def _stage_release(config: CustomerConfig, activity: Activity, **kw: Any) -> Any:
    """Stage the release: one task, or one instance per network zone (:mod:`.worker_queues`).

    A dropped connection fails the try; the retry skips what arrived and resumes the rest.
    """
    kw = {"retries": 3, "retry_delay": timedelta(seconds=20), **kw}
    (*several, last) = zones(config)
    if not several:
        return StageReleaseOperator.for_customer(
            config, version=TARGET_VERSION, **queue_kwargs(last.queue), **kw
        )
    return StageReleaseOperator.partial(
        **release_kwargs(config, TARGET_VERSION),
        **per_instance_queues([z.queue for z in (*several, last)]),
        **kw,
    ).expand(environments=[staging_specs(config, zone.environments) for zone in (*several, last)])


def _verify_versions(config: CustomerConfig, activity: Activity, **kw: Any) -> Any:
    """Check every environment's version: one task, or one instance per network zone."""
    (*several, last) = zones(config)
    if not several:
        return VerifyTargetVersionsOperator.for_customer(config, **queue_kwargs(last.queue), **kw)
    return VerifyTargetVersionsOperator.partial(
        **per_instance_queues([z.queue for z in (*several, last)]), **kw
    ).expand(hosts=[host_specs(config, zone.environments) for zone in (*several, last)])


ENVIRONMENT_OF: dict[str, str] = {
    "initiation.inventory_dev_system": "dev",
    "preparation.verify_test_cases_dev": "dev",
}
"""Activities outside the environment stages that touch one environment (those in a stage touch its own)."""


def placement(config: CustomerConfig, activity: Activity) -> dict[str, Any]:
    """The queue of an activity that touches one environment: that environment's workers."""
    environment = ENVIRONMENT_OF.get(activity.key)
    if environment is None and activity.stage in {name for name, _ in config.environments.items()}:
        environment = activity.stage
    return {} if environment is None else queue_kwargs(environment_queue(config, environment))


def before_execute(context: Any) -> None:
    """Every task's ``pre_execute``: on its zone's worker, with the config its run started with."""
    check_worker_queue(context)
    adopt_run_config(context)


# Keys are activity keys; an ``*.`` entry serves that activity id in every environment stage.
BUILDERS: dict[str, Builder] = {
    "initiation.create_request_case": lambda c, a, **kw: CreateRequestCaseOperator(config=c, **kw),
    "initiation.respond_to_request": lambda c, a, **kw: RespondToRequestGate(config=c, **kw),
    "initiation.acknowledge_request_formally": lambda c, a, **kw: AcknowledgeRequestGate(config=c, **kw),
    "initiation.inventory_dev_system": lambda c, a, **kw: InventoryDevSystemOperator(config=c, **kw),
    "initiation.analyse_questionnaire_and_system": lambda c, a, **kw: QuestionnaireAnalysisOperator(
        config=c, **kw
    ),
    "preparation.verify_test_cases_dev": lambda c, a, **kw: SanityTestOperator(
        config=c, environment="dev", baseline=True, **kw
    ),
    "preparation.review_test_case_verification": lambda c, a, **kw: ReviewTestCaseVerificationGate(
        config=c, **kw
    ),
    "preparation.stage_upgrade_files": _stage_release,
    "preparation.backup_configuration_files": _preparation_backups,
    "*.backup_environment": _env_backup,
    "*.upgrade_environment": _env_upgrade,
    "*.reapply_settings": _env_reapply,
    "*.transfer_fixes": lambda c, a, **kw: TransferFixesOperator(config=c, environment=a.stage, **kw),
    "*.sanity_test": lambda c, a, **kw: SanityTestOperator(config=c, environment=a.stage, **kw),
    "*.fix_and_retest": lambda c, a, **kw: FixAndRetestOperator(config=c, environment=a.stage, **kw),
    "*.hand_over_environment": lambda c, a, **kw: HandOverEnvironmentOperator(
        config=c, environment=a.stage, **kw
    ),
    "*.customer_sign_off": lambda c, a, **kw: CustomerSignOffOperator(config=c, environment=a.stage, **kw),
    "closure.verify_target_versions": _verify_versions,
    "closure.send_completion": lambda c, a, **kw: SendCompletionOperator(config=c, **kw),
}


def builder_for(activity: Activity) -> Builder:
    """The operator builder of ``activity``; ``KeyError`` names an activity nobody implements."""
    builder = BUILDERS.get(activity.key) or BUILDERS.get(f"*.{activity.id}")
    if builder is None:
        raise KeyError(f"process activity {activity.key!r} has no operator in {__name__}.BUILDERS")
    return builder


def _activity_doc(activity: Activity, model: ProcessModel) -> str:
    unit = model.budget_unit_of(activity.key)
    budget = f"{unit.days} business days ({unit.title}, shared)" if unit and unit.is_group else None
    if unit and not unit.is_group:
        budget = f"{unit.days} business day{'s' if unit.days != 1 else ''}"
    lines = [f"**{activity.title}** — owner: {activity.owner.replace('_', ' ')}"]
    lines.append(f"Budget: {budget or 'none (N/A in the process)'}")
    if activity.waits_on_customer:
        lines.append("The customer holds the ball here: consultant and PM clocks pause.")
    lines.append("")
    lines.extend(f"- {line}" for line in activity.description)
    return "\n".join(lines)


def _dag_doc(config: CustomerConfig, model: ProcessModel) -> str:
    envs = "\n".join(
        f"| {name} | `{env.ssh_conn_id}` | `{env.install_path}` | `{env.db_conn_id}` |"
        for name, env in config.environments.items()
    )
    budgets = "\n".join(f"| {u.title} | {u.days} | {u.owner.replace('_', ' ')} |" for u in model.budget_units)
    return f"""# Managed upgrade of {config.name}

Upgrades the CRM of **{config.name}** (`{config.customer_id}`) from **{config.versions.current}** to
**{config.versions.target}** on Dev, UAT and Production, following the Platinum Services Managed
Upgrade process. Request case `{config.request_case.case_id}`, deadline
{config.request_case.deadline} ({config.request_case.deadline_reason}).

Consultants ({", ".join(config.users.consultant)}) and project managers
({", ".join(config.users.project_manager)}) answer the human steps under *Required actions*.
Production is never touched before UAT is signed off. Configured in `{config.source}`.

| environment | SSH connection | install path | config DB connection |
|---|---|---|---|
{envs}

| budget | business days | owner |
|---|---|---|
{budgets}
"""


SLA_WATCH_DOC = """**SLA watch** — not an activity: waits in the triggerer for the whole run.

Every activity's budget (business days of the customer's calendar, or of the rehearsal clock) is
checked against the ledger's activity events; a miss is alerted once, the moment it happens, to the
owner and the project managers (e-mail and webhook), and customer waits get their reminders. Ends
when the last activity finishes or one fails for good; its result lists the run's misses.
"""


def build_dag(config: CustomerConfig, process: ProcessModel | None = None) -> DAG:
    """The DAG ``managed_upgrade__<customer_id>``: task groups per stage, one task per activity."""
    model = config.process_model(process)
    owner = config.users.consultant[0]
    with access_control_warning_silenced():
        dag = DAG(
            dag_id=config.dag_id,
            description=f"Managed CRM upgrade of {config.name}: {config.versions.current} -> "
            f"{config.versions.target} on Dev, UAT and Prod",
            schedule=None,
            start_date=START_DATE,
            catchup=False,
            max_active_runs=1,
            params=trigger_params(config),
            doc_md=_dag_doc(config, model),
            tags=["managed-upgrade", f"customer:{config.customer_id}"],
            default_args={
                "owner": owner,
                "retries": 0,
                "on_failure_callback": [ActivityFailureNotifier(config, model)],
                # every task works with the config the run started with, not the file's latest
                "pre_execute": before_execute,
            },
            render_template_as_native_obj=False,
            deadline=run_deadlines(config),
            # only its consultants and project managers (role customer_<id>) see it, under FAB
            access_control=customer_access_control(config),
        )
    with dag:
        tasks: dict[str, Any] = {}
        for stage in model.stages:
            with TaskGroup(group_id=stage.id, tooltip=f"{stage.milestone}: {stage.title}"):
                for activity in stage.activities:
                    tasks[activity.key] = builder_for(activity)(
                        config,
                        activity,
                        task_id=activity.id,
                        task_display_name=activity.title,
                        doc_md=_activity_doc(activity, model),
                        **placement(config, activity),
                        **crash_retries(activity),
                    )
        for activity in model.activities:
            for upstream in activity.after:
                tasks[upstream] >> tasks[activity.key]
        SlaWatchOperator(
            task_id=SLA_WATCH_TASK_ID,
            task_display_name="SLA watch",
            config=config,
            doc_md=SLA_WATCH_DOC,
            retries=3,  # claims and re-sends are idempotent, and a dead watcher must not fail the run
            retry_delay=timedelta(seconds=10),
        )
    return dag
