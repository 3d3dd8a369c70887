"""The pages render offline (no external resource) and escape every value from configs and the ledger."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from upgrade_history import run_facts

from managed_upgrade.views.portfolio import CustomerRuns, portfolio
from managed_upgrade.views.rendering import render_page, segment
from managed_upgrade.views.schedule import run_schedule

START = datetime(2027, 1, 11, 8, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>{{ 7*7 }}'


def _external_references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(?:https?:)?//[^"]*"', html)


def test_the_planned_vs_actual_page_draws_a_bar_per_activity_and_escapes_names():
    now = START + timedelta(days=20)
    schedule = run_schedule(run_facts("acme", START, now), now)
    assert schedule is not None
    schedule = replace(schedule, customer_name=HOSTILE)

    html = render_page("schedule", ui_root="/base", app_root="/base/managed-upgrade", schedule=schedule)

    assert HOSTILE not in html and "&lt;script&gt;alert(" in html and "{{ 7*7 }}" in html
    assert html.count('<svg class="bars" role="img"') == len(schedule.rows)
    assert f'href="/base/dags/managed_upgrade__acme/runs/{segment(schedule.run_id)}"' in html
    assert _external_references(html) == []
    assert "<script src" not in html


def test_the_portfolio_page_links_runs_planned_vs_actual_csv_and_calendars():
    now = START + timedelta(days=20)
    rows = portfolio([CustomerRuns("managed_upgrade__acme", "acme", [run_facts("acme", START, now)])], now)

    html = render_page(
        "portfolio", ui_root="", app_root="/managed-upgrade", rows=rows, now=now, budget_share=0.8
    )

    run = segment(rows[0].run_id)
    assert f'href="/managed-upgrade/runs/managed_upgrade__acme/{run}"' in html
    assert 'href="/managed-upgrade/portfolio.csv"' in html
    assert 'href="/managed-upgrade/customers/acme/milestones.ics"' in html
    assert 'data-risk="no"' in html and _external_references(html) == []


def test_the_lazy_app_serves_the_real_app_on_first_request():
    import asyncio

    from managed_upgrade_airflow.views.lazy_app import LazyApp

    sent: list[dict] = []
    app = LazyApp("managed_upgrade_airflow.views.app:create_app")
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/portfolio",
        "raw_path": b"/portfolio",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("t", 80),
        "http_version": "1.1",
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    assert app._app is None
    asyncio.run(app(scope, receive, send))
    assert app._app is not None and sent[0]["status"] == 401  # no token: the views' own auth answered
