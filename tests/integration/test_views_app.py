"""The views' web app against a real ledger, with callers authenticated by real Airflow JWTs.

Tokens are signed by the auth manager the way the api-server signs the UI's (``generate_jwt``) and
checked by the same code (signature, expiry, revocation table). The access policy is per customer
DAG, as the FAB auth manager's roles give it: a subclass of the simple auth manager grants each user
the DAGs listed for them (the simple one alone lets every viewer read every DAG). Airflow's metadata
(customer DAGs, open questions) is a fixed set of facts.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from fastapi.testclient import TestClient
from icalendar import Calendar
from upgrade_history import customer_config, run_events, run_plan, snapshot_row

from managed_upgrade.ledger import Ledger
from managed_upgrade.views.open_actions import OpenQuestion

pytestmark = pytest.mark.integration

START = datetime(2027, 1, 11, 8, tzinfo=UTC)
NOW = START + timedelta(days=20)
GRANTS = {"carla": {"managed_upgrade__acme", "managed_upgrade_review"}, "gus": {"managed_upgrade__globex"}}
ACME_RUN = "manual__2027-01-11T08:00:00+00:00"


def _policy_manager() -> Any:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    class PerCustomerAuthManager(SimpleAuthManager):
        """Read access to exactly the DAGs granted to the user (what FAB's per-DAG roles give)."""

        def is_authorized_dag(self, *, method, user, access_entity=None, details=None):  # type: ignore[no-untyped-def]
            return method == "GET" and details is not None and details.id in GRANTS.get(user.username, set())

    return PerCustomerAuthManager()


@pytest.fixture
def auth(monkeypatch: pytest.MonkeyPatch):
    """The auth manager and a token factory; revocation is checked in a throwaway metadata table."""
    from airflow import settings
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken
    from sqlalchemy import create_engine
    from sqlalchemy.orm import scoped_session, sessionmaker
    from sqlalchemy.pool import StaticPool

    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    RevokedToken.__table__.create(engine)
    monkeypatch.setattr(settings, "Session", scoped_session(sessionmaker(bind=engine)))
    manager = _policy_manager()

    def token(username: str) -> str:
        return manager.generate_jwt(SimpleAuthManagerUser(username=username, role="viewer"))

    yield manager, token
    engine.dispose()


class FixedAirflow:
    def __init__(self, questions: list[OpenQuestion]) -> None:
        self.questions = questions

    def customer_dag_ids(self) -> set[str]:
        return {"managed_upgrade__acme", "managed_upgrade__globex", "managed_upgrade__newco"}

    def open_questions(self) -> list[OpenQuestion]:
        return self.questions


def _record_run(ledger: Ledger, customer_id: str, run_id: str, until: datetime, conf: dict[str, Any]) -> None:
    config = customer_config(customer_id, "acme" if customer_id == "acme" else "globex")
    dag_id = f"managed_upgrade__{customer_id}"
    plan = run_plan(config, START)
    ledger.record_run(dag_id, run_id, customer_id, conf)
    ledger.keep_run_config(dag_id, run_id, snapshot_row(config, START), taken_by="test")
    ledger.save_plan(dag_id, run_id, plan.to_rows(dag_id, run_id))
    for event in run_events(plan, until, slip=1.6):
        ledger.record_event(dag_id, run_id, event["activity_key"], event["event"], at=event["at"])


@pytest.fixture
def client(ledger_dsn: str, auth):
    from managed_upgrade_airflow.views import app as views_app
    from managed_upgrade_airflow.views.access import get_auth_manager

    connection = psycopg2.connect(ledger_dsn)
    ledger = Ledger(connection)
    _record_run(ledger, "acme", ACME_RUN, NOW, {"deadline": "2027-03-31"})
    _record_run(ledger, "globex", "manual__globex", NOW, {})
    questions = [
        OpenQuestion("managed_upgrade__acme", ACME_RUN, "preparation.review_test_case_verification", -1,
                     "Review the test cases", ("carla",), START + timedelta(days=9)),
        OpenQuestion("managed_upgrade_review", "fix.q1", "question", -1, "Fix or accept?", ("carla",),
                     START + timedelta(days=5), {"dag_id": "managed_upgrade__acme", "run_id": ACME_RUN,
                                                 "task_id": "dev.fix_and_retest", "customer_id": "acme"}),
        OpenQuestion("managed_upgrade__globex", "manual__globex", "initiation.respond_to_request", -1,
                     "Respond", ("carla", "gus"), START),
    ]  # fmt: skip
    app = views_app.create_app()
    manager, _ = auth
    app.dependency_overrides[get_auth_manager] = lambda: lambda: manager
    app.dependency_overrides[views_app.get_clock] = lambda: lambda: NOW
    app.dependency_overrides[views_app.get_ledger] = lambda: ledger
    app.dependency_overrides[views_app.get_airflow_reads] = lambda: FixedAirflow(questions)
    app.dependency_overrides[views_app.get_settings] = views_app.ViewSettings
    with TestClient(app) as test_client:
        yield test_client
    connection.close()


ROUTES = [
    "/portfolio",
    "/portfolio.csv",
    "/my-actions",
    f"/runs/managed_upgrade__acme/{ACME_RUN}",
    "/customers/acme/milestones.ics",
]


@pytest.mark.parametrize("route", ROUTES)
def test_anonymous_and_forged_callers_get_401(client, route):
    assert client.get(route).status_code == 401
    forged = client.get(route, headers={"Authorization": "Bearer not-a-jwt"})
    assert forged.status_code == 401 and forged.headers["WWW-Authenticate"] == "Bearer"


def test_a_revoked_token_is_refused(client, auth):
    manager, token = auth
    jwt = token("carla")
    assert client.get("/portfolio", headers={"Authorization": f"Bearer {jwt}"}).status_code == 200
    manager.revoke_token(jwt)
    assert client.get("/portfolio", headers={"Authorization": f"Bearer {jwt}"}).status_code == 401


def test_the_uis_cookie_authenticates_like_a_bearer_token(client, auth):
    _, token = auth
    client.cookies.set("_token", token("carla"))
    response = client.get(f"/runs/managed_upgrade__acme/{ACME_RUN}")
    client.cookies.clear()

    assert response.status_code == 200 and "Planned vs actual: ACME Corporation" in response.text


def test_another_customers_run_page_calendar_are_forbidden(client, auth):
    _, token = auth
    headers = {"Authorization": f"Bearer {token('carla')}"}

    assert client.get("/runs/managed_upgrade__globex/manual__globex", headers=headers).status_code == 403
    assert client.get("/customers/globex/milestones.ics", headers=headers).status_code == 403
    assert client.get("/runs/some_dag/r1", headers=headers).status_code == 404


def test_the_portfolio_lists_only_readable_customers_and_its_csv_parses_back(client, auth):
    _, token = auth
    headers = {"Authorization": f"Bearer {token('carla')}"}

    page = client.get("/portfolio", headers=headers)
    export = client.get("/portfolio.csv", headers=headers)

    assert (
        page.status_code == 200 and "managed_upgrade__acme" in page.text and "globex" not in page.text.lower()
    )
    assert export.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(export.text, newline="")))
    assert [line["customer_id"] for line in lines] == ["acme"]
    assert lines[0]["run_id"] == ACME_RUN and lines[0]["status"] == "running"
    assert int(lines[0]["sla_misses"]) > 0 and lines[0]["at_risk"] in {"yes", "no"}
    gus = list(csv.DictReader(io.StringIO(client.get("/portfolio.csv", headers={
        "Authorization": f"Bearer {token('gus')}"}).text, newline="")))  # fmt: skip
    assert [line["customer_id"] for line in gus] == ["globex"]


def test_the_calendar_of_a_readable_customer_parses_back(client, auth):
    _, token = auth
    response = client.get(
        "/customers/acme/milestones.ics", headers={"Authorization": f"Bearer {token('carla')}"}
    )

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/calendar")
    events = Calendar.from_ical(response.content).walk("VEVENT")
    assert len(events) == 8 and all(ACME_RUN in str(event["UID"]) for event in events)


def test_my_open_actions_are_the_callers_questions_in_readable_dags_oldest_first(client, auth):
    _, token = auth
    carla = client.get("/my-actions", headers={"Authorization": f"Bearer {token('carla')}"})
    gus = client.get("/my-actions", headers={"Authorization": f"Bearer {token('gus')}"})

    assert carla.status_code == 200
    assert carla.text.index("Fix or accept?") < carla.text.index("Review the test cases")
    assert "Respond" not in carla.text  # assigned, but globex is not hers to read
    assert "/dags/managed_upgrade_review/runs/fix.q1/tasks/question/required_actions" in carla.text
    assert "Respond" in gus.text and "Fix or accept?" not in gus.text


def test_the_token_check_is_airflows_own():
    """The JWT is validated by the auth manager's own code path, the one the core API uses."""
    from managed_upgrade_airflow import compat

    manager = _policy_manager()
    assert asyncio.run(compat.user_from_token(manager, "garbage")) is None
