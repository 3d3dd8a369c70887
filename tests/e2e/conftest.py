"""Fixtures that run a real local Airflow (and a mail sink) for the end-to-end tests.

`airflow` starts api-server, scheduler, dag-processor and triggerer once per session in a fresh
home on a free loopback port, serving the repository's dags/ by default (then the simulated
estate is brought up first, so its connections are part of Airflow's environment). A test module
that needs another DAG folder or extra users parametrizes it:

    pytestmark = pytest.mark.parametrize(
        "airflow", [HarnessOverrides(dags_folder=..., extra_users=("bob:user",))], indirect=True
    )

`HarnessOverrides(executor="celery")` runs the CeleryExecutor instead (a private Redis and two
Celery workers, see scripts/airflow_local/celery_workers.py); a failed test then also shows the
logs of the broker and of each worker.

A module that provisions installations of its own before Airflow starts (customers in its own
`customers_folder`) overrides the session fixture `harness_connections` to hand their connections
to Airflow.

`api` is an `AirflowClient` acting as any harness user (its `wait_for_pending_hitl` returns a gate
only once it is safe to answer); `smtp_sink` (session-wide here, overriding the per-test one of
tests/conftest.py) collects every email the tasks send: its port is the `smtp_default` connection
of the running Airflow.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from airflow_local import harness, metadata_db
from airflow_local.client import AirflowClient
from airflow_local.settings import HarnessOverrides, HarnessSettings

# Only these pass from the caller's environment; home and port are always fresh for a session.
INHERITED_SETTINGS = ("ESTATE_ROOT", "AIRFLOW_LOCAL_STARTUP_TIMEOUT")
LOGGED_COMPONENTS = ("scheduler", "api-server", "dag-processor", "triggerer")


class SmtpSink:
    """An SMTP server on 127.0.0.1 that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, matches: Callable[[EmailMessage], bool], timeout: float = 60.0) -> EmailMessage:
        """The first received message `matches` accepts; fails listing the subjects seen otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = next((message for message in self.messages if matches(message)), None)
            if found is not None:
                return found
            time.sleep(0.2)
        subjects = [message["Subject"] for message in self.messages]
        raise AssertionError(f"no matching email within {timeout:.0f} s; received subjects: {subjects}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def harness_connections() -> dict[str, dict[str, Any]]:
    """Airflow connections (conn_id -> connection as Airflow's JSON form) served beside the estate's.

    Empty by default. Override it (session scope) in a test module whose Airflow must reach
    installations the module provisions itself; they are set up before Airflow starts.
    """
    return {}


@pytest.fixture(scope="session")
def airflow(
    request: pytest.FixtureRequest,
    smtp_sink: SmtpSink,
    tmp_path_factory: pytest.TempPathFactory,
    harness_connections: dict[str, dict[str, Any]],
) -> Iterator[harness.LocalAirflow]:
    """A running local Airflow for the session (or for each distinct `HarnessOverrides` param)."""
    overrides: HarnessOverrides = getattr(request, "param", None) or HarnessOverrides()
    if overrides.dags_folder is None:
        # The product's DAGs reach the simulated estate; its connections are read at start-up.
        request.getfixturevalue("estate")
    environ = {name: os.environ[name] for name in INHERITED_SETTINGS if name in os.environ}
    token = uuid.uuid4().hex[:10]
    ledger_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname=ledger_e2e_{token}"
    # PostgreSQL, as in a deployment: under several concurrent upgrades SQLite locks long enough
    # to end the scheduler (the demo, one upgrade, keeps SQLite).
    metadata_dsn = f"host=127.0.0.1 port=5432 user=postgres dbname=airflow_e2e_{token}"
    environ |= {
        "AIRFLOW_LOCAL_LEDGER_DSN": ledger_dsn,
        "AIRFLOW_LOCAL_METADATA_DSN": metadata_dsn,
        "AIRFLOW_LOCAL_HOME": str(tmp_path_factory.mktemp("airflow-home")),
        "AIRFLOW_LOCAL_PORT": str(free_port()),
        "AIRFLOW_LOCAL_SMTP_PORT": str(smtp_sink.port),
    }
    settings = dataclasses.replace(
        HarnessSettings.from_environment(overrides, environ),
        database_template_dir=tmp_path_factory.getbasetemp().parent,
    )
    try:
        try:
            # The components inherit this process's environment: Airflow's env-var backend serves these.
            with pytest.MonkeyPatch.context() as patch:
                for conn_id, connection in harness_connections.items():
                    patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
                running = harness.up(settings, report=lambda line: None, die_with_caller=True)
        except harness.HarnessError as error:
            pytest.fail(f"local Airflow did not start (home {settings.home}):\n{error}", pytrace=False)
        yield running
    finally:
        harness.down(settings)
        for throwaway in (ledger_dsn, metadata_dsn):
            metadata_db.drop_database(throwaway)


@pytest.fixture(scope="session")
def api(airflow: harness.LocalAirflow) -> Iterator[AirflowClient]:
    with AirflowClient(
        airflow.base_url, airflow.passwords, hitl_settle=airflow.wait_until_hitl_parked
    ) as client:
        yield client


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed end-to-end test shows the tails of the component logs beside its traceback."""
    report = yield
    running = getattr(item, "funcargs", {}).get("airflow")
    if report.failed and isinstance(running, harness.LocalAirflow):
        # With celery also the broker and every worker ("redis", "worker-<hostname>").
        others = [name for name in harness.component_names(running.settings) if name not in LOGGED_COMPONENTS]
        for component in (*LOGGED_COMPONENTS, *others):
            report.sections.append((f"airflow {component} log", running.log_tail(component)))
    return report


E2E_TIMEOUT_SECONDS = 1800
"""An end-to-end scenario (with its Airflow start-up) may take minutes; a hang still names its test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is None and "e2e" in item.path.parts:
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_SECONDS))
