"""A run's deadline callback mails the project managers once and records the alert in the ledger.

Called as the triggerer calls an ``AsyncCallback`` of a Deadline Alert: awaited with its kwargs and
the context Airflow builds (the run as the REST API shows it, the deadline's time), against a real
ledger and a real SMTP server.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import pytest

from managed_upgrade.ledger import Ledger
from managed_upgrade_airflow.run_deadlines import alert_run_deadline

pytestmark = pytest.mark.integration

RUN_ID = "manual__2027-01-11T09:00:00+00:00"
QUEUED = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)
NOTICED_AFTER = timedelta(seconds=2)
"""The callback runs this long after its deadline (its ``now``; no test reads the wall clock)."""


@pytest.fixture
def ledger(ledger_dsn: str) -> Iterator[Ledger]:
    connection = psycopg2.connect(ledger_dsn)
    yield Ledger(connection)
    connection.close()


def callback_context(deadline_time: datetime, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``Deadline.handle_miss`` hands the callback: the run as JSON and the deadline."""
    return {
        "dag_run": {
            "dag_id": "managed_upgrade__acme",
            "dag_run_id": RUN_ID,
            "queued_at": QUEUED.isoformat().replace("+00:00", "Z"),
            "start_date": (QUEUED + timedelta(seconds=2)).isoformat().replace("+00:00", "Z"),
            "run_after": QUEUED.isoformat().replace("+00:00", "Z"),
            "conf": {"deadline": "2027-03-31", **(conf or {})},
            "state": "running",
        },
        "deadline": {"id": "0197a1b2-0000-7000-8000-000000000001", "deadline_time": deadline_time},
    }


def fire(kind: str, context: dict[str, Any]) -> dict[str, Any]:
    now = context["deadline"]["deadline_time"] + NOTICED_AFTER
    output = asyncio.run(alert_run_deadline(kind=kind, customer_id="acme", context=context, now=now))
    assert isinstance(output, str)  # Airflow keeps it in a text column; anything else stops the triggerer
    return json.loads(output)


def test_a_missed_deadline_is_mailed_to_the_project_manager_and_recorded(ledger, smtp_sink):
    due = datetime(2027, 4, 1, tzinfo=UTC)
    result = fire("deadline_missed", callback_context(due))

    assert result["sent"] is True and result["channels"] == {"email": "sent"}
    (recipients,) = smtp_sink.recipients
    assert recipients == ["pete@platinum.example"]
    (message,) = smtp_sink.messages
    assert (
        message["Subject"] == "[Deadline missed] ACME Corporation: the upgrade was not complete by 2027-03-31"
    )
    assert f"managed_upgrade__acme / {RUN_ID}" in message.get_body(("plain",)).get_content()
    (row,) = ledger.run_deadline_alerts("managed_upgrade__acme", RUN_ID)
    assert (row["kind"], row["due_at"], row["notified"]) == ("deadline_missed", due, {"email": "sent"})
    assert row["detected_at"] == due + NOTICED_AFTER
    assert row["notified_at"] is not None


def test_the_deadline_of_a_failed_run_says_so_and_links_the_run(ledger, smtp_sink):
    context = callback_context(datetime(2027, 4, 1, tzinfo=UTC))
    context["dag_run"]["state"] = "failed"  # Airflow drops a run's deadlines only when it succeeds
    assert fire("deadline_missed", context)["sent"] is True

    (message,) = smtp_sink.messages
    body = message.get_body(("plain",)).get_content()
    assert "Its run has failed and is not progressing" in body
    assert f"managed_upgrade__acme / {RUN_ID} (failed)" in body
    link = re.search(r"^Open in Airflow: (\S+)\s*$", body, re.MULTILINE)
    assert link is not None, body
    run_page = "/dags/managed_upgrade__acme/runs/manual__2027-01-11T09%3A00%3A00%2B00%3A00"
    assert link.group(1).endswith(run_page), link.group(1)


def test_a_run_stopped_by_ops_is_quiet_but_one_that_failed_on_its_own_still_alerts(ledger, smtp_sink):
    stopped = callback_context(datetime(2027, 4, 1, tzinfo=UTC))
    stopped["dag_run"]["state"] = "failed"
    ledger.record_run_stop(
        "managed_upgrade__acme", RUN_ID, how="run_marked_failed", reason="stopped by ops", at=QUEUED
    )
    result = fire("deadline_missed", stopped)

    assert (result["sent"], result["stopped"]) == (False, "stopped by ops")
    assert smtp_sink.messages == []
    assert ledger.run_deadline_alerts("managed_upgrade__acme", RUN_ID) == []

    other_run = "manual__2027-01-12T09:00:00+00:00"
    failed = callback_context(datetime(2027, 4, 1, tzinfo=UTC))
    failed["dag_run"].update(state="failed", dag_run_id=other_run)
    ledger.record_run_stop("managed_upgrade__acme", other_run, how="run_failed", reason="failed", at=QUEUED)
    assert fire("deadline_missed", failed)["sent"] is True


def test_a_stopped_run_that_ops_resumed_alerts_again(ledger, smtp_sink):
    ledger.record_run_stop(
        "managed_upgrade__acme", RUN_ID, how="run_marked_failed", reason="stopped by ops", at=QUEUED
    )
    resumed = callback_context(datetime(2027, 4, 1, tzinfo=UTC))  # state "running": cleared since
    assert fire("deadline_missed", resumed)["sent"] is True


def test_the_same_deadline_firing_twice_sends_one_mail(ledger, smtp_sink):
    context = callback_context(datetime(2027, 3, 25, tzinfo=UTC))
    first = fire("deadline_warning", context)
    second = fire("deadline_warning", callback_context(datetime(2027, 3, 25, tzinfo=UTC)))

    assert (first["sent"], second["sent"]) == (True, False)
    assert len(smtp_sink.messages) == 1
    assert [row["kind"] for row in ledger.run_deadline_alerts("managed_upgrade__acme")] == [
        "deadline_warning"
    ]


def test_a_rehearsal_warning_counts_the_days_left_on_the_compressed_clock(ledger, smtp_sink):
    # 10 s per business day: the deadline (57.625 business days after the start) is 576.25 s after it
    conf = {"seconds_per_business_day": 10}
    warning_due = QUEUED + timedelta(seconds=526.25)
    context = callback_context(warning_due, conf)

    from managed_upgrade_airflow import run_deadlines

    alert = run_deadlines.build_alert("deadline_warning", _acme(), context["dag_run"], now=warning_due)
    # the message names the customer's real deadline date, not the compressed instant it fell due
    zone = ZoneInfo(_acme().calendar.timezone)
    assert alert.planned_finish.astimezone(zone).date() == date(2027, 3, 31)
    assert alert.overrun_days == pytest.approx(-5.0)  # counted on the compressed clock

    result = fire("deadline_warning", context)
    assert result["sent"] is True
    (message,) = smtp_sink.messages
    assert (
        message["Subject"]
        == "[Deadline warning] ACME Corporation: the upgrade must be complete by 2027-03-31"
    )


def test_the_ceiling_alert_names_the_timeline(ledger, smtp_sink):
    fire("timeline_ceiling", callback_context(QUEUED + timedelta(days=70)))

    (message,) = smtp_sink.messages
    assert message["Subject"].startswith("[Timeline ceiling] ACME Corporation")
    assert "Timeline ceiling (50 business days)" in message.get_body(("plain",)).get_content()


def _acme() -> Any:
    from managed_upgrade_airflow.run_deadlines import _load_config

    return _load_config("acme")
