"""SLA alerts reach a real SMTP server and a real HTTP webhook; one failing channel leaves the other sent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from managed_upgrade.config import CustomerConfig, load_customer_config
from managed_upgrade.sla.alerts import Alert, email_subject
from managed_upgrade_airflow.notifiers import webhook_notifier
from managed_upgrade_airflow.notifiers.alert_delivery import send_alert
from managed_upgrade_airflow.notifiers.webhook_notifier import (
    ATTEMPTS,
    GLOBAL_WEBHOOK_CONN_ID,
    WebhookDeliveryError,
    WebhookNotifier,
)

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
GLOBEX = load_customer_config(CUSTOMERS / "globex.yaml")
SMTP_SENDER = "platinum-services@vendor.example"
"""``from_email`` of the ``smtp_default`` connection that the ``smtp_sink`` fixture sets."""
CUSTOMER_WEBHOOK = "globex_alerts_webhook"
TOKEN = "s3cr3t-token"
URL = "http://airflow.example/dags/managed_upgrade__globex/runs/manual__1/tasks/dev.upgrade_dev"

MISS = Alert(
    kind="sla_miss",
    customer_id="globex",
    customer_name=GLOBEX.name,
    dag_id="managed_upgrade__globex",
    run_id="manual__1",
    budget_unit="development",
    title="Development",
    owner_role="consultant",
    owner_users=("gina",),
    planned_finish=datetime(2027, 1, 26, 23, 0, tzinfo=UTC),
    now=datetime(2027, 1, 27, 11, 0, tzinfo=UTC),
    overrun_days=0.5,
    task_url=URL,
    timezone="Europe/Berlin",
)


@dataclasses.dataclass
class WebhookReceiver:
    """A local HTTP server recording each POST; answers with ``statuses`` in turn (then 200)."""

    url: str
    port: int
    requests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    statuses: list[int] = dataclasses.field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.requests.append(
                {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
            )
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/moved")
            self.end_headers()
            self.wfile.write(b"ok" if status < 400 else b"receiver broke")

        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{port}/hooks/alerts", port=port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def addresses(header: str | None) -> list[str]:
    return [part.strip() for part in (header or "").split(",") if part.strip()]


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, connection: dict[str, Any]) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


def with_alerts(config: CustomerConfig, **alerts: Any) -> CustomerConfig:
    return config.model_copy(update={"alerts": config.alerts.model_copy(update=alerts)})


@pytest.fixture
def customer_webhook(webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> CustomerConfig:
    """Globex with its own webhook connection (full URL in host, token as password) and an alerts cc."""
    monkeypatch.delenv(f"AIRFLOW_CONN_{GLOBAL_WEBHOOK_CONN_ID.upper()}", raising=False)
    set_connection(
        monkeypatch, CUSTOMER_WEBHOOK, {"conn_type": "http", "host": webhook.url, "password": TOKEN}
    )
    return with_alerts(GLOBEX, webhook_conn_id=CUSTOMER_WEBHOOK, cc=("ops@platinum.example",))


def test_a_miss_is_mailed_to_owner_and_managers_and_posted_to_the_customers_webhook(
    smtp_sink, webhook: WebhookReceiver, customer_webhook: CustomerConfig
) -> None:
    assert send_alert(MISS, customer_webhook) == {"email": "sent", "webhook": "sent"}

    (message,) = smtp_sink.messages
    assert smtp_sink.recipients == [
        ["gina@platinum.example", "pete@platinum.example", "ops@platinum.example"]
    ]
    assert (message["From"], message["To"], message["Cc"]) == (
        SMTP_SENDER,
        "gina@platinum.example, pete@platinum.example",
        "ops@platinum.example",
    )
    assert message["Subject"] == "[SLA miss] Globex GmbH: Development is 0.5 business days over budget"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    for fact in ("Globex GmbH (globex)", "Development (development)", "Consultant (gina)",
                 "2027-01-27 00:00 CET (2027-01-26 23:00 UTC)", "2027-01-27 12:00 CET (11:00 UTC)",
                 "0.5 business days", URL):  # fmt: skip
        assert fact in body

    (request,) = webhook.requests
    assert request["path"] == "/hooks/alerts"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    payload = request["json"]
    assert payload["text"].startswith(email_subject(MISS))
    assert payload["blocks"][0]["text"]["text"] == email_subject(MISS)
    assert "*Owner*\nConsultant (gina)" in [field["text"] for field in payload["blocks"][2]["fields"]]
    assert payload["alert"]["budget_unit"] == "development" and payload["alert"]["overrun_days"] == 0.5


def test_a_failing_webhook_is_reported_after_retries_while_the_email_is_still_sent(
    smtp_sink, webhook: WebhookReceiver, customer_webhook: CustomerConfig
) -> None:
    webhook.statuses = [500] * ATTEMPTS
    outcomes = send_alert(MISS, customer_webhook)

    assert outcomes["email"] == "sent" and len(smtp_sink.messages) == 1
    assert outcomes["webhook"].startswith(
        f"error: webhook connection {CUSTOMER_WEBHOOK} (127.0.0.1) failed after {ATTEMPTS} attempts: HTTP 500"
    )
    assert TOKEN not in outcomes["webhook"]
    assert len(webhook.requests) == ATTEMPTS


def test_a_transient_webhook_error_is_retried(
    smtp_sink, webhook: WebhookReceiver, customer_webhook: CustomerConfig
) -> None:
    webhook.statuses = [503]
    assert send_alert(MISS, customer_webhook) == {"email": "sent", "webhook": "sent"}
    assert len(webhook.requests) == 2


def test_a_rejected_alert_is_not_retried_and_says_what_to_check(
    smtp_sink, webhook: WebhookReceiver, customer_webhook: CustomerConfig
) -> None:
    webhook.statuses = [403]
    outcomes = send_alert(MISS, customer_webhook)
    assert outcomes["webhook"] == (
        f"error: webhook connection {CUSTOMER_WEBHOOK} (127.0.0.1) refused the alert: HTTP 403: "
        "receiver broke; check the connection's URL and token"
    )
    assert len(webhook.requests) == 1


def test_a_failing_smtp_server_leaves_the_webhook_sent(
    webhook: WebhookReceiver, customer_webhook: CustomerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    set_connection(
        monkeypatch, "smtp_broken",
        {"conn_type": "smtp", "host": "127.0.0.1", "port": closed_port,
         "extra": {"disable_tls": True, "disable_ssl": True, "from_email": SMTP_SENDER, "timeout": 2,
                   "retry_limit": 0}},
    )  # fmt: skip
    outcomes = send_alert(MISS, customer_webhook, smtp_conn_id="smtp_broken")
    assert outcomes["webhook"] == "sent"
    assert outcomes["email"].startswith("error: sending sla_miss alert '[SLA miss] Globex GmbH")
    assert "via SMTP connection smtp_broken" in outcomes["email"]


def test_without_a_customer_webhook_the_global_connection_is_used_built_from_its_fields(
    smtp_sink, webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(
        monkeypatch, GLOBAL_WEBHOOK_CONN_ID,
        {"conn_type": "http", "schema": "http", "host": "127.0.0.1", "port": webhook.port,
         "extra": {"endpoint": "global/alerts"}},
    )  # fmt: skip
    assert send_alert(MISS, GLOBEX) == {"email": "sent", "webhook": "sent"}
    (request,) = webhook.requests
    assert request["path"] == "/global/alerts" and "Authorization" not in request["headers"]
    assert "endpoint" not in {name.lower() for name in request["headers"]}


def closed_port() -> int:
    """A port nothing listens on once the probe is closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_webhook_is_retried_and_named_without_its_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhook_notifier, "BACKOFF_SECONDS", 0.01)
    url = f"http://127.0.0.1:{closed_port()}/services/T000/B000/secret-path"
    set_connection(monkeypatch, CUSTOMER_WEBHOOK, {"conn_type": "http", "host": url, "password": TOKEN})
    with pytest.raises(WebhookDeliveryError) as raised:
        WebhookNotifier({"text": "hi"}, CUSTOMER_WEBHOOK).notify({})
    message = str(raised.value)
    assert message == (
        f"webhook connection {CUSTOMER_WEBHOOK} (127.0.0.1) failed after {ATTEMPTS} attempts: "
        "ConnectionError: [Errno 111] Connection refused"
    )
    assert "secret-path" not in message and TOKEN not in message


def test_a_webhook_that_never_answers_times_out_on_every_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_notifier, "TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(webhook_notifier, "BACKOFF_SECONDS", 0.01)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks/alerts"
        set_connection(monkeypatch, CUSTOMER_WEBHOOK, {"conn_type": "http", "host": url})
        with pytest.raises(WebhookDeliveryError) as raised:
            WebhookNotifier({"text": "hi"}, CUSTOMER_WEBHOOK).notify({})
    assert str(raised.value) == (
        f"webhook connection {CUSTOMER_WEBHOOK} (127.0.0.1) failed after {ATTEMPTS} attempts: "
        "ReadTimeout: timed out"
    )


def test_a_redirect_is_not_followed(webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    webhook.statuses = [307]  # would replay the alert, token included, wherever it points
    set_connection(monkeypatch, CUSTOMER_WEBHOOK, {"conn_type": "http", "host": webhook.url})
    WebhookNotifier({"text": "hi"}, CUSTOMER_WEBHOOK).notify({})
    assert len(webhook.requests) == 1


def test_without_any_webhook_connection_only_email_is_sent(
    smtp_sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(f"AIRFLOW_CONN_{GLOBAL_WEBHOOK_CONN_ID.upper()}", raising=False)
    assert send_alert(MISS, GLOBEX) == {"email": "sent"}
    assert send_alert(MISS, with_alerts(GLOBEX, email=False)) == {}
    assert len(smtp_sink.messages) == 1


def test_a_missing_customer_webhook_connection_is_named_in_the_error(
    smtp_sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = send_alert(MISS, with_alerts(GLOBEX, webhook_conn_id="nowhere_webhook"))
    assert outcomes["email"] == "sent"
    assert outcomes["webhook"].startswith("error: webhook connection nowhere_webhook is not available")


def test_a_reminder_from_a_trigger_thread_reaches_the_customer(
    smtp_sink, webhook: WebhookReceiver, customer_webhook: CustomerConfig
) -> None:
    reminder = dataclasses.replace(
        MISS, kind="customer_reminder", budget_unit="customer_sign_off_dev",
        title="Customer Sign-off (Development)", owner_role="customer", owner_users=(), number=1,
    )  # fmt: skip

    async def in_a_trigger() -> dict[str, str]:
        return await asyncio.to_thread(send_alert, reminder, customer_webhook)

    assert asyncio.run(in_a_trigger()) == {"email": "sent", "webhook": "sent"}
    (message,) = smtp_sink.messages
    assert message["To"] == "g.weber@globex.example, it-ops@globex.example"
    assert message["Cc"] == "carla@platinum.example, gina@platinum.example"
    assert message["Subject"].startswith("Reminder 1: Globex GmbH managed upgrade is waiting for you")
    assert webhook.requests[0]["json"]["alert"]["number"] == 1


# --- a failed activity ------------------------------------------------------------------------------


def failure_context(task_id: str, error: BaseException, map_index: int = -1) -> dict[str, Any]:
    """What the task runner hands ``on_failure_callback`` (the parts the notifier reads)."""
    ti = SimpleNamespace(task_id=task_id, dag_id=GLOBEX.dag_id, run_id="manual__1", map_index=map_index)
    return {"ti": ti, "task": SimpleNamespace(task_display_name=task_id), "exception": error}


def test_a_failed_activity_reaches_its_owner_and_the_managers_on_every_channel(
    smtp_sink, webhook: WebhookReceiver, customer_webhook: CustomerConfig
) -> None:
    from managed_upgrade_airflow.notifiers.failure_notifier import ActivityFailureNotifier

    notifier = ActivityFailureNotifier(customer_webhook, customer_webhook.process_model())
    notifier(failure_context("uat.upgrade_environment", RuntimeError("installer failed at migrate_db")))

    (message,) = smtp_sink.messages
    assert (
        message["Subject"]
        == "[Failed] Globex GmbH: Upgrade UAT environment failed; the managed upgrade has stopped"
    )
    consultants = customer_webhook.user_emails(customer_webhook.users.consultant)
    assert addresses(message["To"]) == [*consultants, "pete@platinum.example"]
    body = message.get_content()
    assert "RuntimeError: installer failed at migrate_db" in body
    assert "/dags/managed_upgrade__globex/runs/manual__1/tasks/uat.upgrade_environment" in body
    (request,) = webhook.requests
    assert request["json"]["alert"]["kind"] == "activity_failed"
    assert request["json"]["alert"]["error"] == "RuntimeError: installer failed at migrate_db"


def test_a_failed_customer_step_goes_to_the_consultants_never_to_the_customer(
    smtp_sink, webhook: WebhookReceiver, customer_webhook: CustomerConfig
) -> None:
    from managed_upgrade_airflow.notifiers.failure_notifier import ActivityFailureNotifier

    model = customer_webhook.process_model()
    customer_step = next(activity for activity in model.activities if activity.owner == "customer")
    ActivityFailureNotifier(customer_webhook, model)(failure_context(customer_step.key, ValueError("no")))

    (message,) = smtp_sink.messages
    recipients = set(addresses(message["To"])) | set(addresses(message["Cc"]))
    assert not recipients & set(customer_webhook.contact_emails("customer"))
    assert set(customer_webhook.user_emails(customer_webhook.users.consultant)) <= recipients


def test_a_failure_alert_that_cannot_be_sent_does_not_raise(
    webhook: WebhookReceiver, customer_webhook: CustomerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from managed_upgrade_airflow.notifiers.failure_notifier import ActivityFailureNotifier

    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)  # no mail server configured at all
    webhook.statuses = [500] * ATTEMPTS
    notifier = ActivityFailureNotifier(customer_webhook, customer_webhook.process_model())
    notifier(failure_context("prod.backup_environment", OSError("disk full"), map_index=2))
    assert len(webhook.requests) == ATTEMPTS
    assert webhook.requests[0]["json"]["alert"]["title"].endswith("[2]")
