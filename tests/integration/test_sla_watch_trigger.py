"""The SLA watcher on a real ledger and SMTP server: alerts leave when due, once; it ends with the run.

A rehearsal run (one business day = 2 s): the test writes the activity events the listener would
write, runs the trigger the way the triggerer does (re-instantiated from ``serialize()``, its ``run()``
iterated in asyncio) and reads what reached the SMTP sink and the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from airflow.sdk.exceptions import TaskDeferred

from managed_upgrade.config import load_customer_config
from managed_upgrade.config.models import CustomerWait
from managed_upgrade.ledger import Ledger
from managed_upgrade.sla.clock import final_activity_key
from managed_upgrade_airflow.operators.sla_watch import SlaWatchOperator
from managed_upgrade_airflow.triggers.sla_watch_trigger import (
    CLAIM_LEASE_SECONDS,
    CLASS_PATH,
    SlaWatchTrigger,
)

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
ACME = load_customer_config(CUSTOMERS / "acme.yaml")
DAG = ACME.dag_id
SECONDS = 2.0
"""Rehearsal: one business day lasts 2 s."""
ALERT_LAG_LIMIT = 5.0
"""The goal: an alert leaves at most 5 s after its due instant."""
WAIT_LIMIT = 20.0
FINAL = final_activity_key(ACME.process_model())
RESPOND, ACKNOWLEDGE = "initiation.respond_to_request", "initiation.acknowledge_request_formally"


@pytest.fixture
def ledger(ledger_dsn: str) -> Iterator[Ledger]:
    connection = psycopg2.connect(ledger_dsn)
    yield Ledger(connection)
    connection.close()


@pytest.fixture
def run_id() -> str:
    return f"rehearsal__{uuid.uuid4().hex[:8]}"


def make_trigger(task_context: Callable[..., dict[str, Any]], run_id: str, config=ACME) -> SlaWatchTrigger:
    """The trigger the operator defers to, rebuilt from its serialized form as the triggerer does."""
    operator = SlaWatchOperator(task_id="sla_watch", config=config)
    context = task_context("sla_watch", conf={"seconds_per_business_day": SECONDS}, run_id=run_id)
    classpath, kwargs = operator.make_trigger(context).serialize()
    assert classpath == CLASS_PATH
    return SlaWatchTrigger(**kwargs)


async def run_to_end(trigger: SlaWatchTrigger) -> list[Any]:
    return [event async for event in trigger.run()]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (checked every 50 ms), failing after WAIT_LIMIT seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT_LIMIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def record(ledger: Ledger, run_id: str, key: str, *events: tuple[str, datetime]) -> None:
    for event, at in events:
        ledger.record_event(DAG, run_id, key, event, at=at)


def subjects(smtp_sink) -> list[str]:
    return [str(message["Subject"]) for message in smtp_sink.messages]


def test_the_operator_defers_at_once_to_the_trigger(task_context, run_id) -> None:
    operator = SlaWatchOperator(task_id="sla_watch", config=ACME)
    context = task_context("sla_watch", conf={"seconds_per_business_day": SECONDS}, run_id=run_id)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert (trigger.dag_id, trigger.run_id, trigger.seconds_per_business_day) == (DAG, run_id, SECONDS)
    summary = {"outcome": "finished", "misses": [], "reminders": []}
    assert operator.execute_complete(context, summary) == summary


def test_a_miss_is_sent_once_when_due_and_the_watcher_ends_with_the_run(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    async def scenario() -> dict[str, Any]:
        t0 = datetime.now(UTC)
        record(ledger, run_id, "initiation.create_request_case", ("ready", t0), ("finished", t0))
        # Respond to Request: answered after half a business day, in time.
        record(
            ledger, run_id, RESPOND, ("ready", t0), ("started", t0), ("finished", t0 + timedelta(seconds=1))
        )
        # Acknowledge Request Formally: ready at t0 + 1 s, never answered -> due at t0 + 3 s.
        record(ledger, run_id, ACKNOWLEDGE, ("ready", t0 + timedelta(seconds=1)))
        first = asyncio.create_task(run_to_end(make_trigger(task_context, run_id)))
        await until(lambda: len(smtp_sink.messages) >= 1, "the miss e-mail")

        # Simulated restart: the first watcher dies, a second one starts on the same run.
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(run_to_end(make_trigger(task_context, run_id)))
        record(ledger, run_id, ACKNOWLEDGE, ("finished", datetime.now(UTC)))
        record(ledger, run_id, FINAL, ("finished", datetime.now(UTC)))
        (event,) = await asyncio.wait_for(second, WAIT_LIMIT)
        return event.payload

    summary = asyncio.run(scenario())

    assert len(smtp_sink.messages) == 1, subjects(smtp_sink)
    assert "Acknowledge Request Formally" in subjects(smtp_sink)[0]
    assert "pete@platinum.example" in smtp_sink.recipients[0]  # the project manager owns it
    (miss,) = ledger.sla_misses(DAG, run_id)
    assert miss["budget_unit"] == "acknowledge_request_formally" and miss["owner"] == "project_manager"
    lag = (miss["notified_at"] - miss["planned_finish"]).total_seconds()
    assert 0 <= lag <= ALERT_LAG_LIMIT, f"sent {lag:.3f} s after it fell due"
    assert miss["notified"] == {"email": "sent"}
    assert summary["outcome"] == "finished"
    assert [m["budget_unit"] for m in summary["misses"]] == ["acknowledge_request_formally"]
    assert summary["sent_by_this_watcher"] == []  # the restarted watcher sent nothing again
    units = {unit["budget_unit"]: unit for unit in summary["units"]}
    assert not units["respond_to_request"]["missed"]  # finished in time: no alert
    assert units["acknowledge_request_formally"]["missed"]
    assert units["acknowledge_request_formally"]["overrun_days"] >= miss["overrun_days"]


def test_a_claimed_but_unsent_miss_is_sent_by_the_next_watcher(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    t0 = datetime.now(UTC) - timedelta(seconds=CLAIM_LEASE_SECONDS + 10)
    record(ledger, run_id, RESPOND, ("ready", t0))
    # A watcher claimed the miss longer ago than the claim lease, then died before sending it.
    assert ledger.claim_sla_miss(
        DAG,
        run_id,
        "respond_to_request",
        owner="consultant",
        budget_days=1.0,
        planned_finish=t0 + timedelta(seconds=SECONDS),
        overrun_days=0.0,
        activity_keys=[RESPOND],
        detected_at=t0 + timedelta(seconds=SECONDS),
    )

    async def scenario() -> None:
        watcher = asyncio.create_task(run_to_end(make_trigger(task_context, run_id)))
        await until(lambda: len(smtp_sink.messages) >= 1, "the re-sent miss")
        record(ledger, run_id, FINAL, ("finished", datetime.now(UTC)))
        await asyncio.wait_for(watcher, WAIT_LIMIT)

    asyncio.run(scenario())
    assert len(smtp_sink.messages) == 1 and "Respond to Request" in subjects(smtp_sink)[0]
    assert ledger.unnotified_alerts(DAG, run_id) == []


def test_a_claim_younger_than_the_lease_is_left_to_its_claimer(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    """Another watcher of the run (Airflow ran the trigger twice, or a restart overlapped) is sending it."""
    t0 = datetime.now(UTC) - timedelta(seconds=10)
    record(ledger, run_id, RESPOND, ("ready", t0))
    assert ledger.claim_sla_miss(
        DAG,
        run_id,
        "respond_to_request",
        owner="consultant",
        budget_days=1.0,
        planned_finish=t0 + timedelta(seconds=SECONDS),
        overrun_days=0.0,
        activity_keys=[RESPOND],
        detected_at=datetime.now(UTC),
    )

    async def scenario() -> None:
        watcher = asyncio.create_task(run_to_end(make_trigger(task_context, run_id)))
        await asyncio.sleep(1.0)  # several polls; not a timing assert: nothing may be sent at all
        record(ledger, run_id, FINAL, ("finished", datetime.now(UTC)))
        await asyncio.wait_for(watcher, WAIT_LIMIT)

    asyncio.run(scenario())
    assert smtp_sink.messages == []
    assert [row["budget_unit"] for row in ledger.unnotified_alerts(DAG, run_id)] == ["respond_to_request"]


def test_a_customer_wait_brings_a_reminder_and_no_miss_for_the_paused_group(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    config = ACME.model_copy(update={"customer_wait": CustomerWait(reminder_days=1)})
    sign_off = "dev.customer_sign_off"
    development = ACME.process_model().budget_unit("development").activity_keys

    async def scenario() -> dict[str, Any]:
        t0 = datetime.now(UTC)
        for index, key in enumerate(k for k in development if k != sign_off):
            at = t0 + timedelta(seconds=0.1 * index)
            record(ledger, run_id, key, ("ready", at), ("started", at), ("finished", at))
        record(ledger, run_id, sign_off, ("ready", t0), ("started", t0), ("waiting_on_customer", t0))
        watcher = asyncio.create_task(run_to_end(make_trigger(task_context, run_id, config)))
        await until(lambda: len(smtp_sink.messages) >= 1, "reminder 1")
        record(ledger, run_id, sign_off, ("finished", datetime.now(UTC)))
        record(ledger, run_id, FINAL, ("finished", datetime.now(UTC)))
        (event,) = await asyncio.wait_for(watcher, WAIT_LIMIT)
        return event.payload

    summary = asyncio.run(scenario())
    assert len(smtp_sink.messages) == 1, subjects(smtp_sink)
    assert subjects(smtp_sink)[0].startswith("Reminder 1:")
    assert "alice.admin@acme.example" in smtp_sink.recipients[0]  # the customer's contact
    (reminder,) = ledger.customer_reminders(DAG, run_id)
    assert (reminder["budget_unit"], reminder["number"]) == ("development", 1)
    lag = (reminder["notified_at"] - reminder["due_at"]).total_seconds()
    assert 0 <= lag <= ALERT_LAG_LIMIT, f"sent {lag:.3f} s after it fell due"
    assert ledger.sla_misses(DAG, run_id) == [] and summary["misses"] == []


def test_a_terminal_failure_ends_the_watcher(ledger: Ledger, smtp_sink, task_context, run_id) -> None:
    t0 = datetime.now(UTC)
    record(ledger, run_id, RESPOND, ("ready", t0), ("started", t0))
    ledger.record_event(DAG, run_id, RESPOND, "failed", at=t0, detail={"terminal": True, "error": "boom"})

    async def scenario() -> dict[str, Any]:
        (event,) = await asyncio.wait_for(run_to_end(make_trigger(task_context, run_id)), WAIT_LIMIT)
        return event.payload

    assert asyncio.run(scenario())["outcome"] == "failed"
    assert smtp_sink.messages == []


def test_the_watcher_ends_when_airflow_has_the_final_task_ended_though_its_event_is_lost(
    ledger: Ledger, smtp_sink, task_context, run_id, monkeypatch
) -> None:
    """The triggerer's supervisor answers task-state questions; here it cannot exist, so it is faked."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    asked: list[dict[str, Any]] = []

    def get_ti_count(**query: Any) -> int:
        asked.append(query)
        return 1  # the final task ended (e.g. upstream_failed), but no ledger event says so

    monkeypatch.setattr(RuntimeTaskInstance, "get_ti_count", staticmethod(get_ti_count))
    record(ledger, run_id, RESPOND, ("ready", datetime.now(UTC)), ("finished", datetime.now(UTC)))

    async def scenario() -> dict[str, Any]:
        (event,) = await asyncio.wait_for(run_to_end(make_trigger(task_context, run_id)), WAIT_LIMIT)
        return event.payload

    assert asyncio.run(scenario())["outcome"] == "ended"
    final = [query for query in asked if query["task_ids"] == [FINAL]]
    assert final and final[0]["run_ids"] == [run_id]
    assert "upstream_failed" in final[0]["states"]


# --- a stopped run is quiet ---------------------------------------------------------------------------
# What the listener records when ops stops a run (``run_stops``), what Airflow says about it through the
# triggerer (faked: there is no supervisor here), and Airflow cancelling the trigger.


def overdue(ledger: Ledger, run_id: str) -> None:
    """Respond to Request became ready three rehearsal days ago and was never answered: its miss is due."""
    t0 = datetime.now(UTC) - timedelta(seconds=3 * SECONDS)
    record(ledger, run_id, RESPOND, ("ready", t0), ("started", t0))


def stop_run(ledger: Ledger, run_id: str, at: datetime | None = None) -> str:
    """The row the listener writes when ops marks the run failed through the REST API."""
    at = at or datetime.now(UTC)
    reason = f"run {DAG}/{run_id} was stopped by ops at {at:%Y-%m-%d %H:%M:%S} UTC"
    ledger.record_run_stop(DAG, run_id, how="run_marked_failed", reason=reason, at=at)
    return reason


def trigger_started_at(task_context, run_id: str, started: datetime) -> SlaWatchTrigger:
    trigger = make_trigger(task_context, run_id)
    _, kwargs = trigger.serialize()
    return SlaWatchTrigger(**{**kwargs, "watch_started_at": started.isoformat()})


def test_the_trigger_knows_its_task_and_when_its_watch_began(task_context, run_id) -> None:
    before = datetime.now(UTC)
    _, kwargs = make_trigger(task_context, run_id).serialize()
    assert kwargs["task_id"] == "sla_watch"
    assert before <= datetime.fromisoformat(kwargs["watch_started_at"]) <= datetime.now(UTC)
    _, old = make_trigger(task_context, run_id).serialize()  # a trigger serialized before both existed
    del old["task_id"], old["watch_started_at"]
    assert SlaWatchTrigger(**old).task_id == "sla_watch"


def test_a_run_stopped_while_the_watch_waits_is_never_alerted(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    async def scenario() -> tuple[dict[str, Any], datetime, datetime]:
        t0 = datetime.now(UTC)
        record(ledger, run_id, RESPOND, ("ready", t0), ("started", t0))  # due at t0 + 1 day = t0 + 2 s
        watcher = asyncio.create_task(run_to_end(make_trigger(task_context, run_id)))
        await asyncio.sleep(0.5)
        stop_run(ledger, run_id)
        (event,) = await asyncio.wait_for(watcher, WAIT_LIMIT)
        ended = datetime.now(UTC)
        await asyncio.sleep(max((t0 + timedelta(seconds=SECONDS + 1) - ended).total_seconds(), 0))
        return event.payload, t0 + timedelta(seconds=SECONDS), ended

    summary, due, ended = asyncio.run(scenario())
    assert ended < due, "the watch ended only after the miss fell due"
    assert summary["outcome"] == "stopped"
    assert summary["stop"]["how"] == "run_marked_failed"
    assert summary["stop"]["reason"].startswith(f"run {DAG}/{run_id} was stopped by ops at ")
    assert smtp_sink.messages == [] and ledger.sla_misses(DAG, run_id) == []


def test_a_due_miss_of_a_run_stopped_before_the_watch_looked_is_neither_sent_nor_claimed(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    overdue(ledger, run_id)
    trigger = trigger_started_at(task_context, run_id, datetime.now(UTC) - timedelta(minutes=1))
    reason = stop_run(ledger, run_id)

    (event,) = asyncio.run(asyncio.wait_for(run_to_end(trigger), WAIT_LIMIT))
    assert (event.payload["outcome"], event.payload["stop"]["reason"]) == ("stopped", reason)
    assert smtp_sink.messages == []
    assert ledger.sla_misses(DAG, run_id) == [] and ledger.unnotified_alerts(DAG, run_id) == []


def test_a_stop_from_an_earlier_life_of_the_run_does_not_silence_its_new_watch(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    """Ops stopped the run, then cleared it: the watch's new try began after the stop and alerts again."""
    stop_run(ledger, run_id, at=datetime.now(UTC) - timedelta(seconds=30))
    overdue(ledger, run_id)

    async def scenario() -> dict[str, Any]:
        watcher = asyncio.create_task(run_to_end(make_trigger(task_context, run_id)))
        await until(lambda: len(smtp_sink.messages) >= 1, "the miss e-mail")
        record(ledger, run_id, FINAL, ("finished", datetime.now(UTC)))
        (event,) = await asyncio.wait_for(watcher, WAIT_LIMIT)
        return event.payload

    assert asyncio.run(scenario())["outcome"] == "finished"
    assert "Respond to Request" in subjects(smtp_sink)[0]
    assert [row["budget_unit"] for row in ledger.sla_misses(DAG, run_id)] == ["respond_to_request"]


@pytest.mark.parametrize(
    ("deferred", "run_state", "how"),
    [(1, "failed", "run_failed"), (1, "success", "run_success"), (0, "running", "watch_not_deferred")],
    ids=["run-failed", "run-marked-success", "watch-task-marked-or-cleared"],
)
def test_what_airflow_says_is_checked_before_every_send(
    ledger: Ledger, smtp_sink, task_context, run_id, monkeypatch, caplog, deferred, run_state, how
) -> None:
    """The listener's ledger row is missing (e.g. the ledger was down then): Airflow's states stop the send.

    Airflow has the run going when the watch starts and stopped right after. The due miss is claimed
    (nothing in the ledger forbids it), then the check before the send asks Airflow, which has the run
    stopped: the claim is withdrawn and nothing goes out.
    """
    from managed_upgrade_airflow import compat

    asked: list[tuple[str, Any]] = []

    def count_task_instances(dag_id: str, run: str, task_ids: list[str], states: list[str]) -> int:
        asked.append(("count", (task_ids, states)))
        if states != ["deferred"]:
            return 0  # the final task has not ended
        return 1 if len(asked) == 1 else deferred  # deferred while the watch starts

    def dag_run_state(dag_id: str, run: str) -> str:
        asked.append(("run state", (dag_id, run)))
        return "running" if len(asked) == 2 else run_state

    monkeypatch.setattr(compat, "count_task_instances", count_task_instances)
    monkeypatch.setattr(compat, "dag_run_state", dag_run_state)
    overdue(ledger, run_id)

    with caplog.at_level(logging.INFO, logger="managed_upgrade_airflow.triggers.sla_watch_trigger"):
        (event,) = asyncio.run(asyncio.wait_for(run_to_end(make_trigger(task_context, run_id)), WAIT_LIMIT))
    assert (event.payload["outcome"], event.payload["stop"]["how"]) == ("stopped", how)
    assert any("not sent (claim withdrawn)" in record.getMessage() for record in caplog.records)
    assert smtp_sink.messages == []
    assert ledger.sla_misses(DAG, run_id) == []  # claimed, then withdrawn unsent
    assert asked[:2] == [("count", (["sla_watch"], ["deferred"])), ("run state", (DAG, run_id))]
    assert len(asked) > 2  # asked again before the send


def test_an_old_unsent_claim_of_a_stopped_run_is_not_re_sent(
    ledger: Ledger, smtp_sink, task_context, run_id
) -> None:
    t0 = datetime.now(UTC) - timedelta(seconds=CLAIM_LEASE_SECONDS + 10)
    record(ledger, run_id, RESPOND, ("ready", t0))
    assert ledger.claim_sla_miss(
        DAG, run_id, "respond_to_request", owner="consultant", budget_days=1.0,
        planned_finish=t0 + timedelta(seconds=SECONDS), overrun_days=0.0, detected_at=t0,
    )  # fmt: skip
    trigger = trigger_started_at(task_context, run_id, t0)
    stop_run(ledger, run_id)

    (event,) = asyncio.run(asyncio.wait_for(run_to_end(trigger), WAIT_LIMIT))
    assert event.payload["outcome"] == "stopped" and smtp_sink.messages == []
    # a claim from before the stop is history: kept as it was, still unsent
    assert [row["budget_unit"] for row in ledger.unnotified_alerts(DAG, run_id)] == ["respond_to_request"]


def test_a_cancelled_watcher_stops_cleanly_without_sending(
    ledger: Ledger, smtp_sink, task_context, run_id, monkeypatch
) -> None:
    """Airflow cancels the trigger while its worker thread reads the ledger with a miss due; that
    thread then claims and sends nothing, and the ledger connection is closed once it is done."""
    from managed_upgrade_airflow.triggers.sla_watch_trigger import RunWatch

    overdue(ledger, run_id)
    reading, release = threading.Event(), threading.Event()
    original = RunWatch.read_state

    def slow_read_state(self: RunWatch, now: datetime) -> Any:
        reading.set()
        release.wait(WAIT_LIMIT)  # the ledger is slow: the cancel arrives meanwhile
        return original(self, now)

    monkeypatch.setattr(RunWatch, "read_state", slow_read_state)
    trigger = make_trigger(task_context, run_id)

    async def scenario() -> None:
        watcher = asyncio.create_task(run_to_end(trigger))
        await asyncio.to_thread(reading.wait, WAIT_LIMIT)
        watcher.cancel("__airflow_user_action__")  # what the triggerer does for a stopped task
        with pytest.raises(asyncio.CancelledError):
            await watcher
        await trigger.on_kill()  # then the triggerer calls on_kill
        release.set()
        await until(lambda: trigger._watch is not None and trigger._watch._ledger is None, "the close")
        await asyncio.sleep(1.0)  # longer than a poll: a watcher still going would have sent by now

    asyncio.run(scenario())
    assert trigger._watch is not None and trigger._watch.stop["how"] == "cancelled"
    assert smtp_sink.messages == []
    assert ledger.sla_misses(DAG, run_id) == []


def ledger_backends(ledger: Ledger) -> int:
    """Server connections to the ledger database besides the test's own."""
    with ledger._cursor() as cursor:
        cursor.execute(
            "SELECT count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()["n"])


def test_many_watchers_share_a_few_ledger_connections_and_each_alerts_once(
    ledger: Ledger, smtp_sink, task_context
) -> None:
    from managed_upgrade_airflow.ledger_access import shared_ledgers

    runs = [f"rehearsal__many{number:02d}_{uuid.uuid4().hex[:6]}" for number in range(30)]
    for each in runs:
        overdue(ledger, each)
    peak = [0]

    async def scenario() -> list[Any]:
        watchers = [asyncio.create_task(run_to_end(make_trigger(task_context, each))) for each in runs]
        await until(lambda: len(smtp_sink.messages) >= len(runs), "one miss e-mail per run")
        for each in runs:
            record(ledger, each, FINAL, ("finished", datetime.now(UTC)))
        while not all(watcher.done() for watcher in watchers):
            peak[0] = max(peak[0], await asyncio.to_thread(ledger_backends, ledger))
            await asyncio.sleep(0.05)
        return [(await watcher)[0].payload for watcher in watchers]

    summaries = asyncio.run(asyncio.wait_for(scenario(), 3 * WAIT_LIMIT))

    assert [summary["outcome"] for summary in summaries] == ["finished"] * len(runs)
    assert len(smtp_sink.messages) == len(runs)  # one miss each, none twice
    assert sorted(len(ledger.sla_misses(DAG, each)) for each in runs) == [1] * len(runs)
    size = shared_ledgers().size
    assert 0 < peak[0] <= size, f"{len(runs)} watchers held {peak[0]} ledger connections (pool of {size})"
