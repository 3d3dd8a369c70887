"""Closure: proves the process document's final output and tells the customer, with the run's summary.

The process promises "You have latest version of Aurea CRM running on all the environments".
``closure.verify_target_versions`` asks every environment what it runs (``VERSION`` and ``bin/crm
status`` over SSH) and fails naming each one that is off. ``closure.send_completion`` then builds
the run's summary per environment from the ledger (backups, test rounds, fixes, sign-off,
durations), sends the completion e-mail with the version of each environment, and records the
summary as the run's final ledger entry, where managers and auditors find it after Airflow's
XComs are gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from managed_upgrade.config import ENVIRONMENT_NAMES
from managed_upgrade.errors import OperationError
from managed_upgrade.messages.customer_emails import EnvironmentOutcome, upgrade_complete_email
from managed_upgrade.operations.installation import crm_status, read_version
from managed_upgrade.sla.calendar import calendar_for
from managed_upgrade.sla.planned_vs_actual import planned_vs_actual
from managed_upgrade.verification.report import TestReport
from managed_upgrade_airflow.customer_outbox import send_customer_email_once
from managed_upgrade_airflow.email_sender import DEFAULT_SMTP_CONN_ID
from managed_upgrade_airflow.hooks.crm_environment import CrmEnvironmentHook
from managed_upgrade_airflow.ledger_access import LEDGER_CONN_ID, open_ledger
from managed_upgrade_airflow.run_settings_xcom import REQUEST_CASE_TASK_ID, run_settings_from_xcom
from managed_upgrade_airflow.testcase_executors import EnvironmentUnreachableError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from managed_upgrade.config import CustomerConfig
    from managed_upgrade.ledger import Ledger

VERIFY_TASK_ID = "closure.verify_target_versions"
"""Task whose XCom holds the verified version of every environment."""

SECONDS_PER_HOUR = 3600.0


def sign_off_task_id(environment: str) -> str:
    """The customer sign-off gate of ``environment`` (its answers are in the ledger's gate answers)."""
    return f"{environment}.customer_sign_off"


# --- what every environment runs ------------------------------------------------------------------


def host_specs(
    config: CustomerConfig, environments: Sequence[str] = ENVIRONMENT_NAMES
) -> dict[str, dict[str, str]]:
    """``{environment: {ssh_conn_id, install_path}}``: what the version check needs of each host."""
    return {
        name: {
            "ssh_conn_id": config.environment(name).ssh_conn_id,
            "install_path": config.environment(name).install_path,
        }
        for name in environments
    }


def inspect_environment(environment: str, host: Mapping[str, str], target_version: str) -> dict[str, Any]:
    """What ``environment`` runs: ``{version, schema_version, crm_status_ok, reachable, problem}``.

    ``problem`` is ``None`` when ``VERSION`` equals ``target_version`` and ``bin/crm status`` is ok;
    otherwise it says what is off. Never raises for an unreachable host (``reachable`` is False).
    """
    ssh_conn_id, install_path = host["ssh_conn_id"], host["install_path"]
    facts: dict[str, Any] = {
        "version": None,
        "schema_version": None,
        "crm_status_ok": False,
        "reachable": False,
        "problem": None,
    }
    try:
        with CrmEnvironmentHook(ssh_conn_id, label=environment) as hook:
            connection = hook.get_conn()
            facts["reachable"] = True
            facts["version"] = read_version(connection, install_path)
            status = crm_status(connection, install_path)
    except OperationError as error:
        facts["problem"] = str(error)
        return facts
    except Exception as error:  # SSH, DNS, auth: the environment could not be asked at all
        facts["problem"] = f"cannot reach {environment} over {ssh_conn_id}: {type(error).__name__}: {error}"
        return facts
    facts["schema_version"] = status.schema_version
    facts["crm_status_ok"] = status.ok
    problems = []
    if facts["version"] != target_version:
        problems.append(f"VERSION says {facts['version']}, not the target {target_version}")
    if not status.ok:
        problems.append(status.describe())
    facts["problem"] = "; ".join(problems) or None
    return facts


class VerifyTargetVersionsOperator(BaseOperator):
    """``closure.verify_target_versions``: every environment runs the run's target version, healthy.

    Fails naming each environment that is off (wrong ``VERSION``, ``crm status`` not ok, or no
    installation at the path), without retry. If the only problem is an unreachable host, the task
    fails with :class:`EnvironmentUnreachableError` so its retries apply.

    XCom: ``{target_version, environments: {env: {version, schema_version, crm_status_ok,
    reachable, problem}}}``. When the environments sit in different network zones the task is mapped,
    one instance per zone (:mod:`managed_upgrade_airflow.worker_queues`), each checking its ``hosts``.

    :param hosts: ``{environment: {"ssh_conn_id": ..., "install_path": ...}}`` (:func:`host_specs`)
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        hosts: Mapping[str, Mapping[str, str]],
        settings_task_id: str = REQUEST_CASE_TASK_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hosts = {name: dict(spec) for name, spec in hosts.items()}
        self.settings_task_id = settings_task_id

    @classmethod
    def for_customer(
        cls, config: CustomerConfig, environments: Sequence[str] = ENVIRONMENT_NAMES, **kwargs: Any
    ) -> VerifyTargetVersionsOperator:
        return cls(hosts=host_specs(config, environments), **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        target = run_settings_from_xcom(context, self.settings_task_id).target_version
        facts = {env: inspect_environment(env, host, target) for env, host in self.hosts.items()}
        off = {env: fact["problem"] for env, fact in facts.items() if fact["problem"]}
        for env, fact in facts.items():
            self.log.info("%s: %s", env, fact["problem"] or f"runs {fact['version']}, crm status ok")
        if off:
            listing = "\n".join(f"  - {env}: {problem}" for env, problem in off.items())
            message = (
                f"{len(off)} of {len(facts)} environments do not run the target version {target} "
                f"({', '.join(off)}):\n{listing}"
            )
            if all(facts[env]["reachable"] for env in off):
                raise AirflowFailException(message)
            raise EnvironmentUnreachableError(message)
        return {"target_version": target, "environments": facts}


def verified_environments(xcom: Any, target: str) -> dict[str, Any]:
    """The environments' facts from the version check's XCom: one dict, or one per zone (mapped)."""
    parts = [xcom] if isinstance(xcom, Mapping) else list(xcom or []) if not isinstance(xcom, str) else []
    facts: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, Mapping) and part.get("target_version") == target:
            facts.update(part.get("environments") or {})
    return facts


# --- the run's summary ----------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _hours(seconds: float) -> float:
    return round(seconds / SECONDS_PER_HOUR, 2)


def stage_durations(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage (``dev``, ...): first start, last finish, elapsed and customer-wait hours.

    From the ledger's activity events: the clock starts at an activity's ``ready`` (or ``started``)
    and stops at its ``finished``; ``waiting_on_customer`` → ``resumed`` spans are the customer's time.
    """
    stages: dict[str, dict[str, Any]] = {}
    waiting_since: dict[str, datetime] = {}
    for event in sorted(events, key=lambda row: row["at"]):
        key, kind, at = event["activity_key"], event["event"], event["at"]
        stage = stages.setdefault(
            key.partition(".")[0], {"started_at": None, "finished_at": None, "customer_wait_seconds": 0.0}
        )
        if kind in ("ready", "started") and (stage["started_at"] is None or at < stage["started_at"]):
            stage["started_at"] = at
        elif kind == "finished" and (stage["finished_at"] is None or at > stage["finished_at"]):
            stage["finished_at"] = at
        elif kind == "waiting_on_customer":
            waiting_since[key] = at
        elif kind == "resumed" and key in waiting_since:
            stage["customer_wait_seconds"] += (at - waiting_since.pop(key)).total_seconds()
    result = {}
    for name, stage in stages.items():
        start, end = stage["started_at"], stage["finished_at"]
        result[name] = {
            "started_at": _iso(start),
            "finished_at": _iso(end),
            "elapsed_hours": _hours((end - start).total_seconds()) if start and end else None,
            "customer_wait_hours": _hours(stage["customer_wait_seconds"]),
        }
    return result


def _round_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    report = TestReport.from_dict(row["report"])
    summary = report.summary
    return {
        "round": report.round,
        "headline": report.headline,
        "passed": summary.passed,
        "total": summary.total,
        "blocking": summary.blocking,
        "pre_existing": summary.pre_existing,
        "regressions": summary.regressions,
        "fixed": summary.fixed,
    }


def environment_summary(
    environment: str,
    *,
    facts: Mapping[str, Any],
    backups: Sequence[Mapping[str, Any]],
    test_reports: Sequence[Mapping[str, Any]],
    fixes: Sequence[Mapping[str, Any]],
    sign_offs: Sequence[Mapping[str, Any]],
    duration: Mapping[str, Any] | None,
    default_previous_version: str,
) -> dict[str, Any]:
    """One environment's part of the run summary, JSON-ready, from its ledger rows of this run."""
    ordered_backups = sorted(backups, key=lambda row: row["created_at"])
    last_sign_off = max(sign_offs, key=lambda row: row["responded_at"]) if sign_offs else None
    return {
        "version": facts.get("version"),
        "previous_version": ordered_backups[0]["version"] if ordered_backups else default_previous_version,
        "backups": [
            {
                "backup_id": row["backup_id"],
                "version": row["version"],
                "location": row["location"],
                "created_at": _iso(row["created_at"]),
                "pruned": row.get("pruned_at") is not None,
            }
            for row in ordered_backups
        ],
        "test_rounds": [_round_summary(row) for row in sorted(test_reports, key=lambda row: row["round"])],
        "fixes": [
            {
                "round": row["round"],
                "recorded_by": row["recorded_by"],
                "recorded_at": _iso(row["recorded_at"]),
                "description": row["description"],
            }
            for row in sorted(fixes, key=lambda row: row["round"])
        ],
        "signed_off": None
        if last_sign_off is None
        else {
            "by": last_sign_off["responded_by"],
            "at": _iso(last_sign_off["responded_at"]),
            "options": list(last_sign_off["chosen_options"]),
        },
        "duration": dict(duration) if duration else None,
    }


def run_summary(
    ledger: Ledger,
    config: CustomerConfig,
    *,
    dag_id: str,
    run_id: str,
    facts: Mapping[str, Mapping[str, Any]],
    durations: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every environment's summary (see :func:`environment_summary`) from this run's ledger rows.

    ``durations``: :func:`stage_durations` of the run's activity events (read here when ``None``).
    """
    reports, fixes = ledger.test_reports(dag_id, run_id), ledger.fixes(dag_id, run_id)
    answers = ledger.gate_answers(dag_id, run_id)
    if durations is None:
        durations = stage_durations(ledger.events(dag_id, run_id))
    return {
        env: environment_summary(
            env,
            facts=facts.get(env, {}),
            backups=[row for row in ledger.backups(config.customer_id, env) if row["run_id"] == run_id],
            test_reports=[row for row in reports if row["environment"] == env],
            fixes=[row for row in fixes if row["environment"] == env],
            sign_offs=[row for row in answers if row["task_id"] == sign_off_task_id(env)],
            duration=durations.get(env),
            default_previous_version=config.versions.current,
        )
        for env in ENVIRONMENT_NAMES
    }


def _sign_off_text(sign_off: Mapping[str, Any] | None) -> str:
    if not sign_off:
        return ""
    return f"{sign_off['by']}, {str(sign_off['at'])[:10]}"


class SendCompletionOperator(BaseOperator):
    """``closure.send_completion``: the completion e-mail and the run's final summary in the ledger.

    The versions come from the XCom of ``closure.verify_target_versions`` (asked again from the
    environments if that XCom is missing); the e-mail refuses to claim completion unless every
    environment runs the target. Durations come from the ledger's activity events; without them
    only the run's elapsed time since its start is known (the task SDK gives task states, not
    task start and end times, and tasks have no metadata-DB access). A retry or clear after the
    summary was recorded returns it without mailing the customer again; a retry after the e-mail was
    sent but before the summary was recorded (a crash in between) does not send it again either
    (:mod:`managed_upgrade_airflow.customer_outbox`).

    XCom (and ledger ``runs.summary``): ``{customer_id, case_id, dag_id, run_id, target_version,
    completed_at, duration: {source, run_started_at, elapsed_hours, stages?}, environments: {env:
    {version, previous_version, backups, test_rounds, fixes, signed_off, duration}}, schedule:
    planned vs actual per budget (see :func:`managed_upgrade.sla.planned_vs_actual.planned_vs_actual`),
    email: {message_id, subject, to, cc}}``.

    ``clock`` (default: the real UTC time) says when the run completes: ``completed_at``, the run's
    elapsed time and the schedule are measured at ``clock()``; tests pass a fixed one.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        config: CustomerConfig,
        settings_task_id: str = REQUEST_CASE_TASK_ID,
        verify_task_id: str = VERIFY_TASK_ID,
        smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
        from_email: str | None = None,
        ledger_conn_id: str = LEDGER_CONN_ID,
        clock: Callable[[], datetime] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clock = clock or _utc_now
        self.config = config
        self.settings_task_id = settings_task_id
        self.verify_task_id = verify_task_id
        self.smtp_conn_id = smtp_conn_id
        self.from_email = from_email
        self.ledger_conn_id = ledger_conn_id

    def _facts(self, context: Context, target: str) -> dict[str, Any]:
        facts = verified_environments(context["ti"].xcom_pull(task_ids=self.verify_task_id), target)
        missing = [env for env in ENVIRONMENT_NAMES if env not in facts]
        if not missing:
            return facts
        self.log.info("No verified versions of %s in the XCom of %s", ", ".join(missing), self.verify_task_id)
        # this task runs on the default queue: it may only ask hosts reached from there
        zoned = [env for env in missing if self.config.environment(env).worker_queue is not None]
        if zoned:
            raise AirflowFailException(
                f"the versions of {', '.join(zoned)} were not verified by {self.verify_task_id}, and "
                "those environments are reached only from their own worker queue: clear that task first"
            )
        specs = host_specs(self.config, missing)
        return {**facts, **{env: inspect_environment(env, specs[env], target) for env in missing}}

    def execute(self, context: Context) -> dict[str, Any]:
        settings = run_settings_from_xcom(context, self.settings_task_id)
        ti = context["ti"]
        facts = self._facts(context, settings.target_version)
        off = [f"{env}: {fact['problem']}" for env, fact in facts.items() if fact.get("problem")]
        if off:
            raise AirflowFailException(
                f"cannot announce completion: {'; '.join(off)}; {self.verify_task_id} must pass first"
            )
        with open_ledger(self.ledger_conn_id) as ledger:
            recorded = ledger.run_summary(ti.dag_id, ti.run_id)
            if recorded and recorded.get("email"):
                self.log.info(
                    "The completion e-mail %s went out already (summary recorded at %s); not sent again",
                    recorded["email"].get("message_id"),
                    recorded.get("completed_at"),
                )
                return recorded
            durations = stage_durations(ledger.events(ti.dag_id, ti.run_id))
            environments = run_summary(
                ledger, self.config, dag_id=ti.dag_id, run_id=ti.run_id, facts=facts, durations=durations
            )
            outcomes = [
                EnvironmentOutcome(
                    environment=env,
                    version=part["version"] or "unknown",
                    previous_version=part["previous_version"],
                    tests=part["test_rounds"][-1]["headline"] if part["test_rounds"] else "",
                    signed_off=_sign_off_text(part["signed_off"]),
                )
                for env, part in environments.items()
            ]
            try:
                email = upgrade_complete_email(self.config, settings, outcomes)
            except ValueError as error:
                raise AirflowFailException(f"{error}; {self.verify_task_id} must pass first") from error
            sent = send_customer_email_once(
                email,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                email_key=ti.task_id,
                ledger_conn_id=self.ledger_conn_id,
                smtp_conn_id=self.smtp_conn_id,
                from_email=self.from_email,
            )
            now = self.clock()
            schedule = planned_vs_actual(
                self.config.process_model(),
                calendar_for(self.config.calendar, settings.seconds_per_business_day),
                ledger.plan(ti.dag_id, ti.run_id),
                ledger.events(ti.dag_id, ti.run_id),
                reminder_days=self.config.customer_wait.reminder_days,
                now=now,
            )
            summary = {
                "customer_id": self.config.customer_id,
                "case_id": settings.case_id,
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "target_version": settings.target_version,
                "completed_at": now.isoformat(),
                "duration": self._run_duration(context, durations, now),
                "environments": environments,
                "schedule": schedule,
                "email": {key: sent[key] for key in ("message_id", "subject", "to", "cc")},
            }
            ledger.finish_run(ti.dag_id, ti.run_id, summary)
        self.log.info(
            "Upgrade of %s to %s complete; e-mail %s to %s; summary recorded in the ledger",
            self.config.customer_id,
            settings.target_version,
            sent["message_id"],
            sent["to"],
        )
        return summary

    @staticmethod
    def _run_duration(context: Context, stages: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        dag_run = context.get("dag_run")
        started = getattr(dag_run, "start_date", None)
        return {
            "source": "ledger_events" if stages else "dag_run",
            "run_started_at": _iso(started),
            "elapsed_hours": _hours((now - started).total_seconds()) if started else None,
            **({"stages": dict(stages)} if stages else {}),
        }
