"""The views' web app: planned vs actual per run, the portfolio (HTML, CSV, ICS) and "my open actions".

Every route needs an authenticated caller (401 otherwise) and shows only customers whose DAG the
caller may read (403 on a page of another customer's run, calendar or CSV line; absent from lists).
Clock, ledger, Airflow reads and auth manager are dependencies, so tests replace any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response

from managed_upgrade.dag_ids import DAG_ID_PREFIX, dag_id_for
from managed_upgrade.ledger import Ledger
from managed_upgrade.views.milestones_calendar import milestones_ics
from managed_upgrade.views.open_actions import customer_of, my_open_actions
from managed_upgrade.views.portfolio import (
    DEFAULT_BUDGET_SHARE,
    PortfolioRow,
    portfolio,
    portfolio_csv,
    portfolio_row,
)
from managed_upgrade.views.rendering import render_page
from managed_upgrade.views.schedule import run_schedule
from managed_upgrade_airflow.ledger_access import open_ledger
from managed_upgrade_airflow.views.access import Viewer, get_viewer
from managed_upgrade_airflow.views.airflow_reads import AirflowReads, MetadataReads
from managed_upgrade_airflow.views.run_reads import customers, read_runs

URL_PREFIX = "/managed-upgrade"
"""Where the api-server mounts the app (``fastapi_apps``' ``url_prefix``)."""


@dataclass(frozen=True)
class ViewSettings:
    """``[managed_upgrade] at_risk_budget_share``: a running budget used beyond it puts a run at risk."""

    budget_share: float = DEFAULT_BUDGET_SHARE


def get_clock() -> Callable[[], datetime]:
    """What "now" is (tests fix it)."""
    return lambda: datetime.now(UTC)


def get_ledger() -> Iterator[Ledger]:
    """The ledger, on a connection held for one request."""
    with open_ledger() as ledger:
        yield ledger


def get_airflow_reads() -> AirflowReads:
    return MetadataReads()


def get_settings() -> ViewSettings:
    from airflow.sdk import conf

    share = conf.getfloat("managed_upgrade", "at_risk_budget_share", fallback=DEFAULT_BUDGET_SHARE)
    return ViewSettings(budget_share=share if 0 < share <= 1 else DEFAULT_BUDGET_SHARE)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
ClockDep = Annotated[Callable[[], datetime], Depends(get_clock)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]
AirflowDep = Annotated[AirflowReads, Depends(get_airflow_reads)]
SettingsDep = Annotated[ViewSettings, Depends(get_settings)]


def _roots(request: Request) -> tuple[str, str]:
    """Link roots: this app's mount path, and Airflow's UI root (the mount's parent)."""
    app_root = str(request.scope.get("root_path", "")).rstrip("/")
    return app_root, app_root.removesuffix(URL_PREFIX) if app_root.endswith(URL_PREFIX) else ""


def _page(request: Request, name: str, status_code: int = 200, **context: object) -> HTMLResponse:
    app_root, ui_root = _roots(request)
    html = render_page(name, ui_root=ui_root, app_root=app_root, **context)
    return HTMLResponse(html, status_code=status_code)


def _visible_customers(viewer: Viewer, ledger: Ledger, airflow: AirflowReads) -> list[str]:
    known = set(airflow.customer_dag_ids()) | set(ledger.dag_ids_with_runs())
    return sorted(viewer.readable({dag_id for dag_id in known if dag_id.startswith(DAG_ID_PREFIX)}))


def create_app() -> FastAPI:
    """The app the plugin mounts at :data:`URL_PREFIX`."""
    app = FastAPI(title="Managed upgrade views", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _error_page(request: Request, error: HTTPException) -> Response:
        heading = {401: "Not logged in", 403: "Not allowed", 404: "Not found"}.get(error.status_code, "Error")
        response = _page(request, "notice", error.status_code, heading=heading, message=str(error.detail))
        for name, value in (error.headers or {}).items():
            response.headers[name] = value
        return response

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def planned_vs_actual(
        request: Request, dag_id: str, run_id: str, viewer: ViewerDep, ledger: LedgerDep, clock: ClockDep
    ) -> HTMLResponse:
        """Planned vs actual of one customer run (the run's "Planned vs actual" tab)."""
        if not dag_id.startswith(DAG_ID_PREFIX):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{dag_id} is not a managed upgrade DAG")
        viewer.require(dag_id)
        runs = read_runs(ledger, [dag_id], run_id=run_id).get(dag_id, [])
        if not runs:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"the ledger has no run {run_id} of {dag_id}")
        (facts,) = runs
        schedule = run_schedule(facts, clock())
        if schedule is None:
            message = f"Run {run_id} of {dag_id}: {facts.config_problem}."
            return _page(request, "notice", heading="No plan yet", message=message)
        return _page(request, "schedule", schedule=schedule)

    def _portfolio_rows(
        viewer: Viewer, ledger: LedgerDep, airflow: AirflowReads, now: datetime, settings: ViewSettings
    ) -> list[PortfolioRow]:
        dag_ids = _visible_customers(viewer, ledger, airflow)
        return portfolio(
            customers(dag_ids, read_runs(ledger, dag_ids)), now, budget_share=settings.budget_share
        )

    @app.get("/portfolio", response_class=HTMLResponse)
    def portfolio_page(
        request: Request,
        viewer: ViewerDep,
        ledger: LedgerDep,
        airflow: AirflowDep,
        clock: ClockDep,
        settings: SettingsDep,
    ) -> HTMLResponse:
        """Every customer the caller may read: current and last upgrade, risk, actions, due flag."""
        now = clock()
        rows = _portfolio_rows(viewer, ledger, airflow, now, settings)
        return _page(request, "portfolio", rows=rows, now=now, budget_share=settings.budget_share)

    @app.get("/portfolio.csv")
    def portfolio_export(
        viewer: ViewerDep, ledger: LedgerDep, airflow: AirflowDep, clock: ClockDep, settings: SettingsDep
    ) -> Response:
        """The portfolio as CSV (one line per customer the caller may read)."""
        rows = _portfolio_rows(viewer, ledger, airflow, clock(), settings)
        return Response(
            portfolio_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="managed-upgrades.csv"'},
        )

    @app.get("/customers/{customer_id}/milestones.ics")
    def milestones(
        customer_id: str, viewer: ViewerDep, ledger: LedgerDep, clock: ClockDep, settings: SettingsDep
    ) -> Response:
        """The customer's planned milestones as an iCalendar feed."""
        dag_id = dag_id_for(customer_id)
        viewer.require(dag_id)
        now = clock()
        (customer,) = customers([dag_id], read_runs(ledger, [dag_id]))
        row = portfolio_row(customer, now, budget_share=settings.budget_share)
        return Response(
            milestones_ics(row, now),
            media_type="text/calendar; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{customer_id}-milestones.ics"'},
        )

    @app.get("/my-actions", response_class=HTMLResponse)
    def my_actions(
        request: Request, viewer: ViewerDep, ledger: LedgerDep, airflow: AirflowDep, clock: ClockDep
    ) -> HTMLResponse:
        """The questions assigned to the caller across their customers, oldest first."""
        now = clock()
        me = {viewer.user_id, viewer.name}
        questions = [q for q in airflow.open_questions() if me & set(q.assignees)]
        refs = [(question, customer_of(question)) for question in questions]
        dag_ids = {q.dag_id for q, _ in refs} | {ref.dag_id for _, ref in refs if ref is not None}
        readable = viewer.readable(dag_ids)
        wanted: dict[str, set[str]] = {}
        for _, ref in refs:
            if ref is not None and ref.run_id and ref.dag_id in readable:
                wanted.setdefault(ref.dag_id, set()).add(ref.run_id)
        runs = {
            facts.key: facts
            for dag_id, facts_list in read_runs(ledger, sorted(wanted)).items()
            for facts in facts_list
            if facts.run_id in wanted[dag_id]
        }
        actions = my_open_actions(questions, user_ids=me, readable_dag_ids=readable, runs=runs, now=now)
        return _page(request, "open_actions", actions=actions, now=now, user_name=viewer.name)

    return app
