"""The portfolio: each customer's current and last upgrade, risk, the yearly due flag, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from upgrade_history import run_facts, window_wait

from managed_upgrade.views.portfolio import CSV_COLUMNS, CustomerRuns, portfolio, portfolio_csv, portfolio_row
from managed_upgrade.views.rendering import render_page

START = datetime(2027, 1, 11, 8, tzinfo=UTC)


def _customer(customer_id: str, *runs):
    return CustomerRuns(f"managed_upgrade__{customer_id}", customer_id, runs)


def test_an_on_plan_run_is_on_track_and_says_its_stage_and_budget_used():
    now = START + timedelta(days=20)
    row = portfolio_row(_customer("acme", run_facts("acme", START, now)), now)

    assert row.status == "running" and not row.at_risk and row.risks == ()
    assert row.stage in {"preparation", "dev"}
    assert row.budget_used_pct is not None and 0 < row.budget_used_pct < 100
    assert row.forecast_finish == row.planned_finish and row.deadline is not None
    assert not row.upgrade_due and row.milestones[0][0] == "initiation"


def test_a_forecast_past_the_customers_deadline_puts_the_run_at_risk():
    now = START + timedelta(days=20)
    early = run_facts("acme", START, now, conf={"deadline": "2027-02-15"})
    row = portfolio_row(_customer("acme", early), now)

    assert row.at_risk
    assert "forecast finish after the deadline 2027-02-15" in row.risks


def test_a_running_budget_used_beyond_the_configured_share_puts_the_run_at_risk():
    facts = run_facts("acme", START, START + timedelta(days=365))
    gate = next(
        row for row in facts.plan if row["activity_key"] == "initiation.analyse_questionnaire_and_system"
    )
    now = gate["planned_start"] + (gate["planned_finish"] - gate["planned_start"]) * 0.9
    customer = _customer("acme", run_facts("acme", START, now))

    strict = portfolio_row(customer, now, budget_share=0.5)
    lenient = portfolio_row(customer, now, budget_share=0.99)

    assert any(reason.startswith("analyse:") for reason in strict.risks)
    assert not any(reason.startswith("analyse:") for reason in lenient.risks)


def test_the_yearly_upgrade_is_due_near_the_anniversary_of_the_last_one_and_never_while_one_runs():
    done = run_facts(
        "acme",
        START,
        START + timedelta(days=90),
        summary={"ok": True},
        finished_at=START + timedelta(days=90),
    )
    anniversary = START + timedelta(days=90 + 365)

    assert portfolio_row(_customer("acme", done), anniversary - timedelta(days=40)).upgrade_due is False
    due = portfolio_row(_customer("acme", done), anniversary - timedelta(days=10))
    assert due.upgrade_due is True and due.last_completed_at == START + timedelta(days=90)
    assert due.status == "finished" and due.last_completed_run_id == done.run_id
    assert portfolio_row(_customer("newco"), START).upgrade_due is True
    later = anniversary - timedelta(days=5)
    running = run_facts("acme", later - timedelta(days=3), later, run_id="second")
    row = portfolio_row(_customer("acme", done, running), later)
    assert row.run_id == "second" and row.status == "running" and row.upgrade_due is False


def test_a_customer_never_upgraded_has_a_row_without_run():
    (row,) = portfolio([_customer("newco")], START)

    assert row.status == "none" and row.run_id is None and row.actions == () and row.sla_misses == 0


def test_at_risk_customers_come_first():
    now = START + timedelta(days=20)
    rows = portfolio(
        [
            _customer("acme", run_facts("acme", START, now)),
            _customer("zeta", run_facts("zeta", START, now, conf={"deadline": "2027-02-01"})),
        ],
        now,
    )

    assert [row.customer_id for row in rows] == ["zeta", "acme"]


def test_the_csv_has_one_line_per_customer_and_defuses_spreadsheet_formulas():
    now = START + timedelta(days=20)
    rows = portfolio([_customer("acme", run_facts("acme", START, now)), _customer("newco")], now)
    hostile = rows[0].__class__(**{**rows[0].__dict__, "customer_name": '=HYPERLINK("x")'})

    parsed = list(csv.DictReader(io.StringIO(portfolio_csv([hostile, rows[1]]), newline="")))

    assert [line["customer_id"] for line in parsed] == ["acme", "newco"]
    assert list(parsed[0]) == list(CSV_COLUMNS)
    assert parsed[0]["customer_name"] == '\'=HYPERLINK("x")'
    assert parsed[0]["forecast_finish"] == rows[0].forecast_finish.isoformat()
    assert parsed[1]["status"] == "none" and parsed[1]["upgrade_due"] == "yes"


def test_a_run_waiting_for_its_window_says_so_in_stage_open_actions_and_csv():
    whole = run_facts("globex", START, START + timedelta(days=365), template="globex")
    planned = {row["activity_key"]: row for row in whole.plan}
    since = planned["uat.customer_sign_off"]["planned_finish"]
    opening = planned["prod.backup_environment"]["planned_start"]
    now = since + timedelta(hours=2)
    waits = window_wait("prod.backup_environment", since, opening, "outside the upgrade windows")
    facts = run_facts("globex", START, now, template="globex", extra_events=waits)
    row = portfolio_row(_customer("globex", facts), now)

    assert row.status == "running" and row.stage == "prod" and row.actions == ()
    (wait,) = row.window_waits
    assert (wait.title, wait.until, wait.reason) == (
        "Back up Prod Environment",
        opening,
        "outside the upgrade windows",
    )
    assert row.waiting_for_window_until == opening
    assert not row.at_risk and row.forecast_finish == row.planned_finish

    (line,) = csv.DictReader(io.StringIO(portfolio_csv([row]), newline=""))
    assert line["waiting_for_window_until"] == opening.isoformat()
    assert line["open_actions"] == (
        f"Back up Prod Environment waits for its upgrade window until {opening.isoformat()} "
        "(outside the upgrade windows), as scheduled: nobody must act"
    )
    html = render_page("portfolio", ui_root="", app_root="/m", rows=[row], now=now, budget_share=0.8)
    assert "waiting for window</span> until" in html and "2027-03-12 21:00 UTC" in html
    assert "Back up Prod Environment: waits for its upgrade window until" in html


def test_a_run_not_waiting_for_a_window_has_no_window_column_value():
    now = START + timedelta(days=20)
    row = portfolio_row(_customer("acme", run_facts("acme", START, now)), now)
    (line,) = csv.DictReader(io.StringIO(portfolio_csv([row]), newline=""))
    assert row.window_waits == () and line["waiting_for_window_until"] == ""
