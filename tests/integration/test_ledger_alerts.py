"""Exactly-once alert bookkeeping in a real ledger: one claimer wins, restarts re-send the unsent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from managed_upgrade.ledger import Ledger

pytestmark = pytest.mark.integration

DAG, RUN = "managed_upgrade__acme", "manual__alerts"
DETECTED = datetime(2027, 1, 12, 9, 0, tzinfo=UTC)
PLANNED = datetime(2027, 1, 11, 17, 0, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_dsn: str) -> Iterator[Ledger]:
    connection = psycopg2.connect(ledger_dsn)
    yield Ledger(connection)
    connection.close()


def claim_miss(ledger: Ledger, budget_unit: str = "respond_to_request", **changes) -> bool:
    facts = {
        "owner": "consultant",
        "budget_days": 1.0,
        "planned_finish": PLANNED,
        "overrun_days": 0.5,
        "activity_keys": ["initiation.respond_to_request"],
        "detected_at": DETECTED,
    }
    return ledger.claim_sla_miss(DAG, RUN, budget_unit, **{**facts, **changes})


def test_a_miss_is_claimed_once_and_keeps_its_first_facts(ledger: Ledger) -> None:
    assert claim_miss(ledger) is True
    assert claim_miss(ledger, overrun_days=2.0, detected_at=DETECTED + timedelta(hours=1)) is False

    (miss,) = ledger.sla_misses(DAG, RUN)
    assert miss["overrun_days"] == 0.5 and miss["detected_at"] == DETECTED
    assert miss["activity_keys"] == ["initiation.respond_to_request"]
    assert (miss["notified"], miss["notified_at"]) == ({}, None)


def test_concurrent_claimers_of_one_miss_let_exactly_one_send(ledger_dsn: str) -> None:
    claimers = 8
    start = threading.Barrier(claimers)
    results: list[bool] = []
    errors: list[BaseException] = []

    def claim() -> None:
        connection = psycopg2.connect(ledger_dsn)
        try:
            start.wait()
            results.append(claim_miss(Ledger(connection), "development"))
        except BaseException as exc:  # reported below, a thread cannot fail the test itself
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(results) == [False] * (claimers - 1) + [True]


def test_reminders_are_claimed_once_per_number(ledger: Ledger) -> None:
    wait_started = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)

    def claim(number: int) -> bool:
        return ledger.claim_customer_reminder(
            DAG, RUN, "customer_sign_off_dev", number, owner="customer", wait_started_at=wait_started,
            due_at=wait_started + timedelta(days=7 * number), detected_at=DETECTED + timedelta(days=number),
        )  # fmt: skip

    assert [claim(1), claim(1), claim(2)] == [True, False, True]
    rows = ledger.customer_reminders(DAG, RUN)
    assert [(r["budget_unit"], r["number"], r["owner"]) for r in rows] == [
        ("customer_sign_off_dev", 1, "customer"),
        ("customer_sign_off_dev", 2, "customer"),
    ]
    assert rows[1]["due_at"] == wait_started + timedelta(days=14)


def test_run_deadline_alerts_are_claimed_once_per_kind(ledger: Ledger) -> None:
    due = datetime(2027, 3, 31, 23, 59, tzinfo=UTC)
    claims = [
        ledger.claim_run_deadline_alert(DAG, RUN, kind, due_at=due, detected_at=DETECTED)
        for kind in ("deadline_warning", "deadline_warning", "deadline_missed")
    ]
    assert claims == [True, False, True]
    assert [(r["kind"], r["due_at"]) for r in ledger.run_deadline_alerts(DAG, RUN)] == [
        ("deadline_missed", due),
        ("deadline_warning", due),
    ]


def test_unnotified_alerts_are_those_claimed_but_never_marked_sent(ledger: Ledger) -> None:
    wait_started = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
    claim_miss(ledger, "respond_to_request", detected_at=DETECTED)
    claim_miss(ledger, "development", detected_at=DETECTED + timedelta(hours=1))
    ledger.claim_customer_reminder(
        DAG, RUN, "customer_sign_off_dev", 1, owner="customer", wait_started_at=wait_started,
        due_at=DETECTED, detected_at=DETECTED + timedelta(hours=2),
    )  # fmt: skip
    ledger.claim_run_deadline_alert(
        DAG, RUN, "deadline_warning", due_at=DETECTED, detected_at=DETECTED + timedelta(hours=3)
    )
    ledger.claim_run_deadline_alert(DAG, "another_run", "deadline_missed", due_at=DETECTED)

    pending = ledger.unnotified_alerts(DAG, RUN)
    assert [(row["kind"], row["key"]) for row in pending] == [
        ("miss", "respond_to_request"),
        ("miss", "development"),
        ("reminder", ("customer_sign_off_dev", 1)),
        ("deadline", "deadline_warning"),
    ]
    assert pending[2]["wait_started_at"] == wait_started and pending[3]["deadline_kind"] == "deadline_warning"

    # a restarted watcher re-sends each and marks it, with the row's own kind and key
    sent_at = DETECTED + timedelta(hours=4)
    for row in pending:
        channels = {"email": "sent", "webhook": "error: HTTP 500"}
        assert ledger.mark_alert_notified(row["kind"], DAG, RUN, row["key"], channels, at=sent_at)
    assert ledger.unnotified_alerts(DAG, RUN) == []

    misses = ledger.sla_misses(DAG, RUN)
    assert {m["budget_unit"]: (m["notified"], m["notified_at"]) for m in misses} == {
        "respond_to_request": ({"email": "sent", "webhook": "error: HTTP 500"}, sent_at),
        "development": ({"email": "sent", "webhook": "error: HTTP 500"}, sent_at),
    }
    (reminder,) = ledger.customer_reminders(DAG, RUN)
    assert reminder["notified"]["email"] == "sent" and reminder["notified_at"] == sent_at
    (deadline,) = ledger.run_deadline_alerts(DAG, RUN)
    assert deadline["notified"]["webhook"] == "error: HTTP 500"


def test_marking_merges_channels_and_rejects_unknown_alerts(ledger: Ledger) -> None:
    claim_miss(ledger)
    ledger.mark_alert_notified("miss", DAG, RUN, "respond_to_request", {"email": "error: refused"})
    ledger.mark_alert_notified("miss", DAG, RUN, "respond_to_request", {"email": "sent", "webhook": "sent"})
    (miss,) = ledger.sla_misses(DAG, RUN)
    assert miss["notified"] == {"email": "sent", "webhook": "sent"} and miss["notified_at"] is not None

    assert ledger.mark_alert_notified("miss", DAG, RUN, "never_claimed", {"email": "sent"}) is False
    with pytest.raises(ValueError, match="unknown alert kind 'page'; use one of miss, reminder, deadline"):
        ledger.mark_alert_notified("page", DAG, RUN, "x", {})


# --- a stopped run is quiet: stops, guarded claims, withdrawn claims, closed questions ----------------


def claim_reminder(ledger: Ledger, number: int = 1, **changes) -> bool:
    facts = {"owner": "customer", "wait_started_at": PLANNED, "due_at": DETECTED, "detected_at": DETECTED}
    return ledger.claim_customer_reminder(DAG, RUN, "development", number, **{**facts, **changes})


def test_a_stop_recorded_since_the_watch_began_refuses_its_claims(ledger: Ledger) -> None:
    watch_began = DETECTED - timedelta(days=3)
    stopped_at = DETECTED - timedelta(hours=1)
    ledger.record_run_stop(
        DAG, RUN, how="run_marked_failed", reason=f"run {DAG}/{RUN} was stopped by ops", at=stopped_at
    )

    assert claim_miss(ledger, unless_stopped_since=watch_began) is False
    assert claim_reminder(ledger, unless_stopped_since=watch_began) is False
    assert ledger.sla_misses(DAG, RUN) == [] and ledger.customer_reminders(DAG, RUN) == []
    # a watch that began after the stop (the run was cleared and resumed) claims as before
    assert claim_miss(ledger, unless_stopped_since=stopped_at + timedelta(seconds=1)) is True
    assert claim_reminder(ledger, unless_stopped_since=stopped_at + timedelta(seconds=1)) is True


def test_the_first_stop_since_an_instant_is_found_by_kind(ledger: Ledger) -> None:
    early, late = DETECTED - timedelta(days=2), DETECTED
    ledger.record_run_stop(DAG, RUN, how="task_marked_failed", reason="task x", at=early, task_id="dev.x")
    ledger.record_run_stop(DAG, RUN, how="run_marked_failed", reason="run stopped", at=late)

    assert ledger.run_stop_since(DAG, RUN, early - timedelta(days=1))["how"] == "task_marked_failed"
    assert ledger.run_stop_since(DAG, RUN, early + timedelta(seconds=1))["reason"] == "run stopped"
    assert ledger.run_stop_since(DAG, RUN, late + timedelta(seconds=1)) is None
    found = ledger.run_stop_since(DAG, RUN, early - timedelta(days=1), hows=("run_marked_failed",))
    assert found is not None and found["stopped_at"] == late
    assert ledger.run_stop_since(DAG, "other_run", early - timedelta(days=1)) is None
    assert [(row["task_id"], row["how"]) for row in ledger.run_stops(DAG, RUN)] == [
        ("dev.x", "task_marked_failed"),
        (None, "run_marked_failed"),
    ]
    with pytest.raises(psycopg2.errors.CheckViolation):
        ledger.record_run_stop(DAG, RUN, how="paused", reason="not a stop", at=late)


def test_a_claim_never_sent_can_be_withdrawn_but_a_sent_one_stays(ledger: Ledger) -> None:
    assert claim_miss(ledger) and claim_miss(ledger, "development")
    assert claim_reminder(ledger, 1)
    ledger.mark_alert_notified("miss", DAG, RUN, "development", {"email": "sent"})

    assert ledger.release_claim("miss", DAG, RUN, "respond_to_request") is True
    assert ledger.release_claim("reminder", DAG, RUN, ("development", 1)) is True
    assert ledger.release_claim("miss", DAG, RUN, "development") is False  # it was sent: it stays
    assert [row["budget_unit"] for row in ledger.sla_misses(DAG, RUN)] == ["development"]
    assert ledger.customer_reminders(DAG, RUN) == []
    with pytest.raises(ValueError, match="unknown alert kind"):
        ledger.release_claim("memo", DAG, RUN, "x")


def test_closed_questions_keep_where_they_were_and_why(ledger: Ledger) -> None:
    review_run = f"initiation.analyse_questionnaire_and_system.q1__{DAG}__{RUN}"
    reason = f"run {DAG}/{RUN} was stopped by ops at 2027-01-12 09:00:00 UTC"
    ledger.record_closed_question(
        DAG,
        RUN,
        "initiation.analyse_questionnaire_and_system",
        question=1,
        hitl_dag_id="managed_upgrade_review__acme",
        hitl_run_id=review_run,
        hitl_task_id="question",
        closed_at=DETECTED,
        reason=reason,
    )
    (row,) = ledger.closed_questions(DAG, RUN)
    assert row == {
        "task_id": "initiation.analyse_questionnaire_and_system",
        "question": 1,
        "hitl_dag_id": "managed_upgrade_review__acme",
        "hitl_run_id": review_run,
        "hitl_task_id": "question",
        "closed_at": DETECTED,
        "reason": reason,
    }
