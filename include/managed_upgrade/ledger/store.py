"""Reads and writes ledger rows; the one place that knows the ledger's SQL.

Operators, the listener and the manager views call these methods instead of writing SQL of their
own, so a column change is a change here and in a migration, nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal, TypedDict, TypeVar, cast

from psycopg2 import sql
from psycopg2.extras import Json, RealDictCursor

from managed_upgrade.ledger.schema import DEFAULT_SCHEMA, DbConnection, DbCursor, Params

_ALERT_KEY_COLUMNS = {
    "miss": ("sla_misses", ("budget_unit",)),
    "reminder": ("customer_reminders", ("budget_unit", "number")),
    "deadline": ("run_deadline_alerts", ("kind",)),
}
"""Alert kind of :meth:`Ledger.mark_alert_notified` -> (table, columns that ``key`` gives)."""

_UNLESS_STOPPED = (
    " WHERE %s::timestamptz IS NULL OR NOT EXISTS (SELECT 1 FROM run_stops"
    " WHERE dag_id = %s AND run_id = %s AND stopped_at >= %s::timestamptz)"
)
"""Guard of a claim: parameters ``(since, dag_id, run_id, since)``; no guard when ``since`` is NULL."""

_RUN_CONFIG_SELECT = (
    "SELECT customer_id, source, digest, document, taken_at, taken_by FROM run_configs"
    " WHERE dag_id = %s AND run_id = %s"
)

JsonObject = dict[str, Any]
"""A ``jsonb`` document: what the caller stored, decoded."""
AlertKey = str | tuple[str, int]
"""Which alert of a kind: the budget unit (miss), ``(budget_unit, number)`` (reminder), the kind of
deadline (deadline)."""


# -- the rows the reading methods return: exactly the columns their SELECT names ---------------------
class RunConfigRow(TypedDict):
    """A run's config snapshot (``run_configs``)."""

    customer_id: str
    source: str
    digest: str
    document: JsonObject
    taken_at: datetime
    taken_by: str


class PlannedActivityRow(TypedDict):
    """One planned activity of a run (``planned_activities``)."""

    activity_key: str
    budget_unit: str | None
    owner: str
    planned_start: datetime | None
    planned_finish: datetime | None
    budget_days: float | None


class EventRow(TypedDict):
    """One activity event of a run (``activity_events``)."""

    activity_key: str
    event: str
    try_number: int
    at: datetime
    detail: JsonObject


class GateAnswerRow(TypedDict):
    """One answer given at a gate or review question (``gate_answers``)."""

    task_id: str
    try_number: int
    question: int
    responded_by: str
    responded_at: datetime
    chosen_options: list[str]
    params_input: JsonObject


class BackupRow(TypedDict):
    """One backup of a customer's environment (``backups``)."""

    backup_id: str
    dag_id: str
    run_id: str
    environment: str
    location: str
    version: str
    created_at: datetime
    descriptor: JsonObject
    pruned_at: datetime | None


class ReportRow(TypedDict):
    """The test report of one round in one environment (``test_reports``)."""

    environment: str
    round: int
    created_at: datetime
    report: JsonObject
    junit_xml: str
    markdown: str


class FixRow(TypedDict):
    """The fix recorded for one round in one environment (``fixes``)."""

    environment: str
    round: int
    recorded_by: str
    recorded_at: datetime
    description: str
    bundle: JsonObject


class SlaMissRow(TypedDict):
    """One claimed SLA miss and how its alert fared (``sla_misses``)."""

    run_id: str
    budget_unit: str
    owner: str
    budget_days: float
    planned_finish: datetime
    detected_at: datetime
    overrun_days: float
    activity_keys: list[str]
    notified: dict[str, str]
    notified_at: datetime | None


class CustomerReminderRow(TypedDict):
    """One claimed customer reminder and how it fared (``customer_reminders``)."""

    run_id: str
    budget_unit: str
    number: int
    owner: str
    wait_started_at: datetime
    due_at: datetime
    detected_at: datetime
    notified: dict[str, str]
    notified_at: datetime | None


class RunDeadlineAlertRow(TypedDict):
    """One claimed run deadline alert and how it fared (``run_deadline_alerts``)."""

    run_id: str
    kind: str
    due_at: datetime
    detected_at: datetime
    notified: dict[str, str]
    notified_at: datetime | None


class UnnotifiedMiss(TypedDict):
    """A miss claimed but never marked notified."""

    kind: Literal["miss"]
    key: str
    budget_unit: str
    owner: str
    budget_days: float
    planned_finish: datetime
    overrun_days: float
    activity_keys: list[str]
    detected_at: datetime


class UnnotifiedReminder(TypedDict):
    """A customer reminder claimed but never marked notified."""

    kind: Literal["reminder"]
    key: tuple[str, int]
    budget_unit: str
    number: int
    owner: str
    wait_started_at: datetime
    due_at: datetime
    detected_at: datetime


class UnnotifiedDeadline(TypedDict):
    """A run deadline alert claimed but never marked notified."""

    kind: Literal["deadline"]
    key: str
    deadline_kind: str
    due_at: datetime
    detected_at: datetime


UnnotifiedAlert = UnnotifiedMiss | UnnotifiedReminder | UnnotifiedDeadline


class RunStop(TypedDict):
    """A stop of the run or of one of its tasks (``run_stops``)."""

    task_id: str | None
    how: str
    stopped_at: datetime
    reason: str


class RunStopRow(RunStop):
    """A stop as recorded, with when it was recorded."""

    recorded_at: datetime


class ClosedQuestionRow(TypedDict):
    """An open question closed unanswered (``closed_questions``)."""

    task_id: str
    question: int
    hitl_dag_id: str
    hitl_run_id: str
    hitl_task_id: str
    closed_at: datetime
    reason: str


class RunRow(TypedDict):
    """A recorded run (``runs``): when it started, its trigger conf and, once closed, its summary."""

    dag_id: str
    run_id: str
    customer_id: str
    started_at: datetime
    conf: JsonObject
    summary: JsonObject | None
    finished_at: datetime | None


class CustomerEmailRow(TypedDict):
    """A customer e-mail of a run (``customer_emails``): claimed, and once delivered, what was sent."""

    email_key: str
    message_id: str
    claimed_at: datetime
    attempts: int
    sent_at: datetime | None
    sent: JsonObject | None


class RunEventRow(EventRow):
    """An activity event with the run it belongs to (reads over many runs)."""

    dag_id: str
    run_id: str


class RunPlannedActivityRow(PlannedActivityRow):
    """A planned activity with the run it belongs to."""

    dag_id: str
    run_id: str


class RunConfigKeyedRow(RunConfigRow):
    """A config snapshot with the run it belongs to."""

    dag_id: str
    run_id: str


class RunSlaMissRow(TypedDict):
    """A claimed SLA miss with the run it belongs to (no delivery columns: what managers read)."""

    dag_id: str
    run_id: str
    budget_unit: str
    owner: str
    budget_days: float
    planned_finish: datetime
    detected_at: datetime
    overrun_days: float
    activity_keys: list[str]


class RunStopKeyedRow(RunStop):
    """A stop with the run it belongs to."""

    dag_id: str
    run_id: str


def _run_pair_params(runs: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Parameters of ``(dag_id, run_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))``: many runs
    in one query."""
    return [dag_id for dag_id, _ in runs], [run_id for _, run_id in runs]


RowT = TypeVar("RowT")
_UNTYPED_ROW: type[dict[str, Any]] = dict
"""Row type of the readers whose callers still take a plain dict (a TypedDict is not one); their
docstrings name the TypedDict that describes the row."""


class Ledger:
    """A ledger bound to one open psycopg2 connection and schema."""

    def __init__(self, connection: DbConnection, schema: str = DEFAULT_SCHEMA) -> None:
        self._connection = connection
        self._schema = schema

    @contextmanager
    def _cursor(self) -> Iterator[DbCursor[dict[str, Any]]]:
        """A cursor returning rows as dicts, in one transaction with the ledger schema on the path."""
        with self._connection, self._connection.cursor(cursor_factory=RealDictCursor) as cursor:
            cursor.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self._schema)))
            yield cursor

    def _rows(self, row_type: type[RowT], query: str, params: Params) -> list[RowT]:
        """The rows of ``query``, each a ``row_type`` (a TypedDict with the columns it selects)."""
        with self._cursor() as cur:
            cur.execute(query, params)
            return cast("list[RowT]", list(cur.fetchall()))

    # -- runs ---------------------------------------------------------------------------------
    def record_run(self, dag_id: str, run_id: str, customer_id: str, conf: JsonObject) -> None:
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO runs (dag_id, run_id, customer_id, conf) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (dag_id, run_id) DO UPDATE SET conf = EXCLUDED.conf",
                (dag_id, run_id, customer_id, Json(conf)),
            )

    def run_summary(self, dag_id: str, run_id: str) -> JsonObject | None:
        """The summary a finished run recorded (``None`` while the run has none)."""
        with self._cursor() as cur:
            cur.execute("SELECT summary FROM runs WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
            row = cur.fetchone()
        summary: JsonObject | None = row["summary"] if row else None
        return summary

    def finish_run(self, dag_id: str, run_id: str, summary: JsonObject) -> None:
        with self._cursor() as cur:
            cur.execute(
                "UPDATE runs SET summary = %s, finished_at = now() WHERE dag_id = %s AND run_id = %s",
                (Json(summary), dag_id, run_id),
            )

    # -- the run's config snapshot ----------------------------------------------------------------
    def keep_run_config(
        self, dag_id: str, run_id: str, snapshot: Mapping[str, Any], *, taken_by: str
    ) -> RunConfigRow:
        """Store ``snapshot`` as the run's config unless one is stored already; returns the stored one.

        The first caller wins, whichever task it is (tasks start in parallel): ``snapshot`` has the
        keys of :meth:`managed_upgrade.config.snapshot.ConfigSnapshot.as_row`.
        """
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO run_configs (dag_id, run_id, customer_id, source, digest, document, taken_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dag_id, run_id) DO NOTHING",
                (
                    dag_id,
                    run_id,
                    snapshot["customer_id"],
                    snapshot["source"],
                    snapshot["digest"],
                    Json(snapshot["document"]),
                    taken_by,
                ),
            )
            cur.execute(_RUN_CONFIG_SELECT, (dag_id, run_id))
            row = cur.fetchone()
        assert row is not None  # inserted above or by the caller that won
        return cast(RunConfigRow, dict(row))

    def run_config(self, dag_id: str, run_id: str) -> RunConfigRow | None:
        """The run's config snapshot row, ``None`` before any of its tasks has started."""
        with self._cursor() as cur:
            cur.execute(_RUN_CONFIG_SELECT, (dag_id, run_id))
            row = cur.fetchone()
        return cast(RunConfigRow, dict(row)) if row else None

    # -- the plan -----------------------------------------------------------------------------
    def save_plan(self, dag_id: str, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace the run's planned activities (rows as :meth:`managed_upgrade.sla.plan.Plan.to_rows`)."""
        with self._cursor() as cur:
            cur.execute("DELETE FROM planned_activities WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
            for row in rows:
                cur.execute(
                    "INSERT INTO planned_activities (dag_id, run_id, activity_key, budget_unit, owner,"
                    " planned_start, planned_finish, budget_days) VALUES (%(dag_id)s, %(run_id)s,"
                    " %(activity_key)s, %(budget_unit)s, %(owner)s, %(planned_start)s, %(planned_finish)s,"
                    " %(budget_days)s)",
                    {**row, "dag_id": dag_id, "run_id": run_id},
                )

    def plan(self, dag_id: str, run_id: str) -> list[PlannedActivityRow]:
        return self._rows(
            PlannedActivityRow,
            "SELECT activity_key, budget_unit, owner, planned_start, planned_finish, budget_days"
            " FROM planned_activities WHERE dag_id = %s AND run_id = %s"
            " ORDER BY planned_start, activity_key",
            (dag_id, run_id),
        )

    # -- activity events ----------------------------------------------------------------------
    def record_event(
        self,
        dag_id: str,
        run_id: str,
        activity_key: str,
        event: str,
        *,
        at: datetime,
        try_number: int = 1,
        detail: JsonObject | None = None,
    ) -> bool:
        """Record an event once; returns False when it was already there (idempotent replays)."""
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO activity_events (dag_id, run_id, activity_key, event, try_number, at, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                (dag_id, run_id, activity_key, event, try_number, at, Json(detail or {})),
            )
            return cur.fetchone() is not None

    def events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's activity events in order, each with the keys of :class:`EventRow`."""
        return self._rows(
            _UNTYPED_ROW,
            "SELECT activity_key, event, try_number, at, detail FROM activity_events"
            " WHERE dag_id = %s AND run_id = %s ORDER BY at, id",
            (dag_id, run_id),
        )

    # -- gate answers -------------------------------------------------------------------------
    def record_gate_answer(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        try_number: int,
        responded_by: str,
        responded_at: datetime,
        chosen_options: list[str],
        params_input: JsonObject,
        *,
        question: int = 0,
    ) -> None:
        """Keep one answer; ``question`` numbers the questions a review task asks within one try."""
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO gate_answers (dag_id, run_id, task_id, try_number, question, responded_by,"
                " responded_at, chosen_options, params_input) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    dag_id,
                    run_id,
                    task_id,
                    try_number,
                    question,
                    responded_by,
                    responded_at,
                    Json(chosen_options),
                    Json(params_input),
                ),
            )

    def gate_answers(self, dag_id: str, run_id: str) -> list[GateAnswerRow]:
        return self._rows(
            GateAnswerRow,
            "SELECT task_id, try_number, question, responded_by, responded_at, chosen_options,"
            " params_input FROM gate_answers WHERE dag_id = %s AND run_id = %s ORDER BY responded_at",
            (dag_id, run_id),
        )

    # -- backups ------------------------------------------------------------------------------
    def record_backup(
        self,
        backup_id: str,
        dag_id: str,
        run_id: str,
        customer_id: str,
        environment: str,
        location: str,
        version: str,
        descriptor: JsonObject,
    ) -> None:
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO backups (backup_id, dag_id, run_id, customer_id, environment, location, version,"
                " descriptor) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (backup_id) DO UPDATE SET descriptor = EXCLUDED.descriptor",
                (backup_id, dag_id, run_id, customer_id, environment, location, version, Json(descriptor)),
            )

    def mark_backups_pruned(self, backup_ids: list[str]) -> None:
        if not backup_ids:
            return
        with self._cursor() as cur:
            cur.execute(
                "UPDATE backups SET pruned_at = now() WHERE backup_id = ANY(%s) AND pruned_at IS NULL",
                (backup_ids,),
            )

    def backups(self, customer_id: str, environment: str | None = None) -> list[BackupRow]:
        return self._rows(
            BackupRow,
            "SELECT backup_id, dag_id, run_id, environment, location, version, created_at, descriptor,"
            " pruned_at FROM backups WHERE customer_id = %s AND (%s IS NULL OR environment = %s)"
            " ORDER BY created_at DESC",
            (customer_id, environment, environment),
        )

    # -- test reports and fixes ---------------------------------------------------------------
    def save_test_report(
        self,
        dag_id: str,
        run_id: str,
        environment: str,
        round_number: int,
        report: JsonObject,
        junit_xml: str,
        markdown: str,
    ) -> None:
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO test_reports (dag_id, run_id, environment, round, report, junit_xml, markdown)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dag_id, run_id, environment, round)"
                " DO UPDATE SET report = EXCLUDED.report, junit_xml = EXCLUDED.junit_xml,"
                " markdown = EXCLUDED.markdown, created_at = now()",
                (dag_id, run_id, environment, round_number, Json(report), junit_xml, markdown),
            )

    def test_reports(self, dag_id: str, run_id: str, environment: str | None = None) -> list[ReportRow]:
        return self._rows(
            ReportRow,
            "SELECT environment, round, created_at, report, junit_xml, markdown FROM test_reports"
            " WHERE dag_id = %s AND run_id = %s AND (%s IS NULL OR environment = %s)"
            " ORDER BY environment, round",
            (dag_id, run_id, environment, environment),
        )

    def record_fix(
        self,
        dag_id: str,
        run_id: str,
        environment: str,
        round_number: int,
        recorded_by: str,
        description: str,
        bundle: JsonObject,
    ) -> None:
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO fixes (dag_id, run_id, environment, round, recorded_by, description, bundle)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dag_id, run_id, environment, round)"
                " DO UPDATE SET recorded_by = EXCLUDED.recorded_by, description = EXCLUDED.description,"
                " bundle = EXCLUDED.bundle",
                (dag_id, run_id, environment, round_number, recorded_by, description, Json(bundle)),
            )

    def fixes(self, dag_id: str, run_id: str, environment: str | None = None) -> list[FixRow]:
        return self._rows(
            FixRow,
            "SELECT environment, round, recorded_by, recorded_at, description, bundle FROM fixes"
            " WHERE dag_id = %s AND run_id = %s AND (%s IS NULL OR environment = %s)"
            " ORDER BY environment, round",
            (dag_id, run_id, environment, environment),
        )

    # -- SLA misses ---------------------------------------------------------------------------
    def record_sla_miss(
        self,
        dag_id: str,
        run_id: str,
        budget_unit: str,
        owner: str,
        budget_days: float,
        planned_finish: datetime,
        overrun_days: float,
    ) -> bool:
        """Insert the miss unless it is already known; True means this caller must alert."""
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO sla_misses (dag_id, run_id, budget_unit, owner, budget_days, planned_finish,"
                " overrun_days) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (dag_id, run_id, budget_unit, owner, budget_days, planned_finish, overrun_days),
            )
            return cur.fetchone() is not None

    def sla_misses(self, dag_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The misses of the DAG (of one run), each with the keys of :class:`SlaMissRow`."""
        return self._rows(
            _UNTYPED_ROW,
            "SELECT run_id, budget_unit, owner, budget_days, planned_finish, detected_at, overrun_days,"
            " activity_keys, notified, notified_at FROM sla_misses"
            " WHERE dag_id = %s AND (%s IS NULL OR run_id = %s) ORDER BY detected_at, budget_unit",
            (dag_id, run_id, run_id),
        )

    # -- exactly-once alerts: claim (the inserting caller sends), then mark notified -----------
    def claim_sla_miss(
        self,
        dag_id: str,
        run_id: str,
        budget_unit: str,
        *,
        owner: str,
        budget_days: float,
        planned_finish: datetime,
        overrun_days: float,
        activity_keys: list[str] | tuple[str, ...] = (),
        detected_at: datetime | None = None,
        unless_stopped_since: datetime | None = None,
    ) -> bool:
        """Record the miss unless known; True only for the one caller whose insert won (it sends).

        With ``unless_stopped_since``, nothing is recorded (False) if the run was stopped at or after
        that instant (:meth:`record_run_stop`): checked in the insert itself, so a watcher that looked
        a moment earlier cannot claim a miss for a run ops stopped in between.
        """
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO sla_misses (dag_id, run_id, budget_unit, owner, budget_days, planned_finish,"
                " overrun_days, activity_keys, detected_at) SELECT %s, %s, %s, %s, %s, %s, %s, %s,"
                " COALESCE(%s, now())" + _UNLESS_STOPPED + " ON CONFLICT DO NOTHING RETURNING 1",
                (dag_id, run_id, budget_unit, owner, budget_days, planned_finish, overrun_days,
                 Json(list(activity_keys)), detected_at, unless_stopped_since, dag_id, run_id,
                 unless_stopped_since),
            )  # fmt: skip
            return cur.fetchone() is not None

    def claim_customer_reminder(
        self,
        dag_id: str,
        run_id: str,
        budget_unit: str,
        number: int,
        *,
        owner: str,
        wait_started_at: datetime,
        due_at: datetime,
        detected_at: datetime | None = None,
        unless_stopped_since: datetime | None = None,
    ) -> bool:
        """Record reminder ``number`` of a customer wait unless known; True means this caller sends it.

        ``unless_stopped_since`` as in :meth:`claim_sla_miss`.
        """
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO customer_reminders (dag_id, run_id, budget_unit, number, owner, wait_started_at,"
                " due_at, detected_at) SELECT %s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now())"
                + _UNLESS_STOPPED
                + " ON CONFLICT DO NOTHING RETURNING 1",
                (dag_id, run_id, budget_unit, number, owner, wait_started_at, due_at, detected_at,
                 unless_stopped_since, dag_id, run_id, unless_stopped_since),
            )  # fmt: skip
            return cur.fetchone() is not None

    def claim_run_deadline_alert(
        self,
        dag_id: str,
        run_id: str,
        kind: str,
        *,
        due_at: datetime,
        detected_at: datetime | None = None,
    ) -> bool:
        """Record a run deadline alert (e.g. ``deadline_warning``) unless known; True: this caller sends."""
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO run_deadline_alerts (dag_id, run_id, kind, due_at, detected_at)"
                " VALUES (%s, %s, %s, %s, COALESCE(%s, now())) ON CONFLICT DO NOTHING RETURNING 1",
                (dag_id, run_id, kind, due_at, detected_at),
            )
            return cur.fetchone() is not None

    def mark_alert_notified(
        self,
        kind: str,
        dag_id: str,
        run_id: str,
        key: AlertKey,
        channels: dict[str, str],
        *,
        at: datetime | None = None,
    ) -> bool:
        """Store how each channel fared (``{"email": "sent", "webhook": "error: ..."}``) and when.

        ``kind`` and ``key`` as in :meth:`unnotified_alerts`: ``"miss"`` with the budget unit,
        ``"reminder"`` with ``(budget_unit, number)``, ``"deadline"`` with the deadline kind. Returns
        False when no such claimed alert exists.
        """
        if kind not in _ALERT_KEY_COLUMNS:
            raise ValueError(f"unknown alert kind {kind!r}; use one of {', '.join(_ALERT_KEY_COLUMNS)}")
        table, key_columns = _ALERT_KEY_COLUMNS[kind]
        key_values = list(key) if kind == "reminder" else [key]
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key_columns)
        with self._cursor() as cur:
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET notified = notified || %s, notified_at = COALESCE(%s, now())"
                    " WHERE dag_id = %s AND run_id = %s AND {}"
                ).format(sql.Identifier(table), where),
                [Json(channels), at, dag_id, run_id, *key_values],
            )
            return cur.rowcount == 1

    def release_claim(self, kind: str, dag_id: str, run_id: str, key: AlertKey) -> bool:
        """Withdraw a claimed alert that was never sent (its watcher stopped between claim and send).

        ``kind`` and ``key`` as in :meth:`mark_alert_notified`. A notified alert is never removed.
        Returns whether a row was removed.
        """
        if kind not in _ALERT_KEY_COLUMNS:
            raise ValueError(f"unknown alert kind {kind!r}; use one of {', '.join(_ALERT_KEY_COLUMNS)}")
        table, key_columns = _ALERT_KEY_COLUMNS[kind]
        key_values = list(key) if kind == "reminder" else [key]
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key_columns)
        with self._cursor() as cur:
            cur.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE dag_id = %s AND run_id = %s AND {} AND notified_at IS NULL"
                ).format(sql.Identifier(table), where),
                [dag_id, run_id, *key_values],
            )
            return cur.rowcount == 1

    def unnotified_alerts(self, dag_id: str, run_id: str) -> list[UnnotifiedAlert]:
        """Alerts claimed but never marked notified (the claimer died before sending), oldest first.

        Each row has ``kind`` (miss, reminder, deadline) and ``key`` as :meth:`mark_alert_notified`
        takes them, plus the claimed row's columns (a deadline's own kind is ``deadline_kind``).
        """
        with self._cursor() as cur:
            cur.execute(
                "SELECT 'miss' AS kind, budget_unit AS key, budget_unit, owner, budget_days, planned_finish,"
                " overrun_days, activity_keys, detected_at FROM sla_misses"
                " WHERE dag_id = %s AND run_id = %s AND notified_at IS NULL",
                (dag_id, run_id),
            )
            rows: list[dict[str, Any]] = list(cur.fetchall())
            cur.execute(
                "SELECT 'reminder' AS kind, budget_unit, number, owner, wait_started_at, due_at, detected_at"
                " FROM customer_reminders WHERE dag_id = %s AND run_id = %s AND notified_at IS NULL",
                (dag_id, run_id),
            )
            rows += [{**row, "key": (row["budget_unit"], row["number"])} for row in cur.fetchall()]
            cur.execute(
                "SELECT 'deadline' AS kind, kind AS key, kind AS deadline_kind, due_at, detected_at"
                " FROM run_deadline_alerts WHERE dag_id = %s AND run_id = %s AND notified_at IS NULL",
                (dag_id, run_id),
            )
            rows += list(cur.fetchall())
        rows.sort(key=lambda row: (row["detected_at"], row["kind"], str(row["key"])))
        return cast("list[UnnotifiedAlert]", rows)

    def customer_reminders(self, dag_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The reminders of the DAG (of one run), each with the keys of :class:`CustomerReminderRow`."""
        return self._rows(
            _UNTYPED_ROW,
            "SELECT run_id, budget_unit, number, owner, wait_started_at, due_at, detected_at, notified,"
            " notified_at FROM customer_reminders WHERE dag_id = %s AND (%s IS NULL OR run_id = %s)"
            " ORDER BY detected_at, budget_unit, number",
            (dag_id, run_id, run_id),
        )

    def run_deadline_alerts(self, dag_id: str, run_id: str | None = None) -> list[RunDeadlineAlertRow]:
        return self._rows(
            RunDeadlineAlertRow,
            "SELECT run_id, kind, due_at, detected_at, notified, notified_at FROM run_deadline_alerts"
            " WHERE dag_id = %s AND (%s IS NULL OR run_id = %s) ORDER BY detected_at, kind",
            (dag_id, run_id, run_id),
        )

    # -- stopped runs and the questions they left open --------------------------------------
    def record_run_stop(
        self,
        dag_id: str,
        run_id: str,
        *,
        how: str,
        reason: str,
        at: datetime,
        task_id: str | None = None,
    ) -> None:
        """Record that the run's SLA watch must end: ``how`` (e.g. ``run_marked_failed``), why, when.

        ``task_id`` names the task stopped by hand (``None``: the run itself). ``how`` is one of
        ``run_marked_failed``, ``run_marked_success``, ``run_failed``, ``task_marked_failed``,
        ``task_marked_skipped``, ``watch_marked_success``.
        """
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO run_stops (dag_id, run_id, task_id, how, stopped_at, reason)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (dag_id, run_id, task_id, how, at, reason),
            )

    def run_stops(self, dag_id: str, run_id: str) -> list[RunStopRow]:
        return self._rows(
            RunStopRow,
            "SELECT task_id, how, stopped_at, reason, recorded_at FROM run_stops"
            " WHERE dag_id = %s AND run_id = %s ORDER BY stopped_at, id",
            (dag_id, run_id),
        )

    def run_stop_since(
        self, dag_id: str, run_id: str, since: datetime, *, hows: Sequence[str] | None = None
    ) -> RunStop | None:
        """The first stop of the run at or after ``since`` (of one of ``hows``, if given), else ``None``.

        ``since`` is when the asking watcher (or task try) began: a stop before it belongs to an
        earlier life of the run that ops has since cleared and resumed.
        """
        query = (
            "SELECT task_id, how, stopped_at, reason FROM run_stops"
            " WHERE dag_id = %s AND run_id = %s AND stopped_at >= %s"
        )
        params: list[Any] = [dag_id, run_id, since]
        if hows is not None:
            query += " AND how = ANY(%s)"
            params.append(list(hows))
        rows = self._rows(RunStop, query + " ORDER BY stopped_at, id LIMIT 1", params)
        return rows[0] if rows else None

    def record_closed_question(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        *,
        question: int,
        hitl_dag_id: str,
        hitl_run_id: str,
        hitl_task_id: str,
        closed_at: datetime,
        reason: str,
    ) -> None:
        """Keep that an open question (HITL detail) of the run's task was closed unanswered, and why.

        ``question``: the review question number (0: the task's own gate); ``hitl_*``: where Airflow
        held it (the customer run's task, or the question task of a review run).
        """
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO closed_questions (dag_id, run_id, task_id, question, hitl_dag_id, hitl_run_id,"
                " hitl_task_id, closed_at, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (dag_id, run_id, task_id, question, hitl_dag_id, hitl_run_id, hitl_task_id, closed_at,
                 reason),
            )  # fmt: skip

    def closed_questions(self, dag_id: str, run_id: str) -> list[ClosedQuestionRow]:
        return self._rows(
            ClosedQuestionRow,
            "SELECT task_id, question, hitl_dag_id, hitl_run_id, hitl_task_id, closed_at, reason"
            " FROM closed_questions WHERE dag_id = %s AND run_id = %s ORDER BY closed_at, id",
            (dag_id, run_id),
        )

    # -- customer e-mails: claimed before sending, marked sent after --------------------------------
    def claim_customer_email(
        self, dag_id: str, run_id: str, email_key: str, message_id: str
    ) -> CustomerEmailRow:
        """The e-mail's row: new with ``message_id``, or the one an earlier try claimed (its Message-ID
        wins; an unsent one counts one more attempt)."""
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO customer_emails (dag_id, run_id, email_key, message_id) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (dag_id, run_id, email_key) DO UPDATE SET attempts ="
                " customer_emails.attempts + CASE WHEN customer_emails.sent_at IS NULL THEN 1 ELSE 0 END"
                " RETURNING email_key, message_id, claimed_at, attempts, sent_at, sent",
                (dag_id, run_id, email_key, message_id),
            )
            return cast("CustomerEmailRow", cur.fetchone())

    def mark_customer_email_sent(
        self, dag_id: str, run_id: str, email_key: str, sent: JsonObject, *, at: datetime | None = None
    ) -> bool:
        """Keep what the mail server accepted; False if the e-mail was never claimed."""
        with self._cursor() as cur:
            cur.execute(
                "UPDATE customer_emails SET sent = %s, sent_at = COALESCE(%s, now())"
                " WHERE dag_id = %s AND run_id = %s AND email_key = %s",
                (Json(sent), at, dag_id, run_id, email_key),
            )
            return cur.rowcount == 1

    def customer_emails(self, dag_id: str, run_id: str) -> list[CustomerEmailRow]:
        return self._rows(
            CustomerEmailRow,
            "SELECT email_key, message_id, claimed_at, attempts, sent_at, sent FROM customer_emails"
            " WHERE dag_id = %s AND run_id = %s ORDER BY claimed_at, email_key",
            (dag_id, run_id),
        )

    # -- the managers' views: many runs in one query each ----------------------------------------
    def dag_ids_with_runs(self) -> list[str]:
        """Every DAG id the ledger has a run of, sorted."""
        with self._cursor() as cur:
            cur.execute("SELECT DISTINCT dag_id FROM runs ORDER BY dag_id")
            return [str(row["dag_id"]) for row in cur.fetchall()]

    def runs_of(self, dag_ids: Sequence[str]) -> list[RunRow]:
        """Every recorded run of ``dag_ids``, oldest first (a portfolio reads all customers at once)."""
        return self._rows(
            RunRow,
            "SELECT dag_id, run_id, customer_id, started_at, conf, summary, finished_at FROM runs"
            " WHERE dag_id = ANY(%s) ORDER BY started_at, dag_id, run_id",
            (list(dag_ids),),
        )

    def events_of(self, runs: Sequence[tuple[str, str]]) -> list[RunEventRow]:
        """The activity events of ``runs`` (``(dag_id, run_id)`` pairs), in order per run."""
        return self._rows(
            RunEventRow,
            "SELECT dag_id, run_id, activity_key, event, try_number, at, detail FROM activity_events"
            " WHERE (dag_id, run_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY dag_id, run_id, at, id",
            _run_pair_params(runs),
        )

    def plans_of(self, runs: Sequence[tuple[str, str]]) -> list[RunPlannedActivityRow]:
        """The planned activities of ``runs``, by run and planned start."""
        return self._rows(
            RunPlannedActivityRow,
            "SELECT dag_id, run_id, activity_key, budget_unit, owner, planned_start, planned_finish,"
            " budget_days FROM planned_activities WHERE"
            " (dag_id, run_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY dag_id, run_id, planned_start, activity_key",
            _run_pair_params(runs),
        )

    def run_configs_of(self, runs: Sequence[tuple[str, str]]) -> list[RunConfigKeyedRow]:
        """The config snapshots of ``runs`` (runs whose first task has not started have none)."""
        return self._rows(
            RunConfigKeyedRow,
            "SELECT dag_id, run_id, customer_id, source, digest, document, taken_at, taken_by"
            " FROM run_configs"
            " WHERE (dag_id, run_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            _run_pair_params(runs),
        )

    def sla_misses_of(self, runs: Sequence[tuple[str, str]]) -> list[RunSlaMissRow]:
        """The claimed SLA misses of ``runs``, in the order they were detected."""
        return self._rows(
            RunSlaMissRow,
            "SELECT dag_id, run_id, budget_unit, owner, budget_days, planned_finish, detected_at,"
            " overrun_days, activity_keys FROM sla_misses WHERE"
            " (dag_id, run_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY detected_at, budget_unit",
            _run_pair_params(runs),
        )

    def stops_of(self, runs: Sequence[tuple[str, str]]) -> list[RunStopKeyedRow]:
        """The recorded stops of ``runs`` (a run marked failed by hand, a task stopped), oldest first."""
        return self._rows(
            RunStopKeyedRow,
            "SELECT dag_id, run_id, task_id, how, stopped_at, reason FROM run_stops"
            " WHERE (dag_id, run_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY stopped_at, id",
            _run_pair_params(runs),
        )
