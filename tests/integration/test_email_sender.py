"""Customer e-mails reach a real SMTP server (aiosmtpd on 127.0.0.1) as text + HTML, to the right people."""

from __future__ import annotations

import email
import json
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from managed_upgrade.config import load_customer_config
from managed_upgrade.config.run_settings import settings_from_conf
from managed_upgrade.messages.customer_emails import CustomerEmail, request_received_email
from managed_upgrade_airflow.email_sender import EmailDeliveryError, send_customer_email

pytestmark = pytest.mark.integration

CUSTOMERS = Path(__file__).resolve().parents[2] / "include" / "customers"
SENDER = "platinum-services@vendor.example"


class _Sink:
    """Keeps every message the server accepted; refuses recipients at refused.example."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_sink() -> Iterator[tuple[_Sink, int]]:
    sink = _Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def _smtp_connection(monkeypatch, conn_id: str, port: int, **extra) -> None:
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 5, "retry_limit": 0, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


@pytest.fixture(scope="module")
def message() -> CustomerEmail:
    config = load_customer_config(CUSTOMERS / "acme.yaml")
    case = config.request_case
    settings, _ = settings_from_conf(
        {
            "case_id": case.case_id,
            "earliest_start": case.earliest_start,
            "ideal_start": case.ideal_start,
            "deadline": case.deadline,
            "deadline_reason": case.deadline_reason,
            "target_version": config.versions.target,
        }
    )
    return request_received_email(config, settings, information_gathered="Größe <ok> & VPN ready")


def _parsed(envelope: Envelope) -> EmailMessage:
    return email.message_from_bytes(envelope.content, policy=default_policy)  # type: ignore[return-value]


def test_sends_text_and_html_to_customer_with_consultant_and_pm_in_cc(smtp_sink, monkeypatch, message):
    sink, port = smtp_sink
    _smtp_connection(monkeypatch, "smtp_default", port, from_email=SENDER)
    result = send_customer_email(message)

    assert len(sink.envelopes) == 1
    envelope = sink.envelopes[0]
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == [
        "alice.admin@acme.example",
        "carla@platinum.example",
        "pete@platinum.example",
    ]
    received = _parsed(envelope)
    assert received["Subject"] == message.subject
    assert received["To"] == "alice.admin@acme.example"
    assert received["Cc"] == "carla@platinum.example, pete@platinum.example"
    assert received["Message-ID"] == result["message_id"]
    assert received.get_content_type() == "multipart/alternative"
    text = received.get_body(preferencelist=("plain",)).get_content()
    html = received.get_body(preferencelist=("html",)).get_content()
    assert "will be in touch within 1 business day" in text
    assert "Größe <ok> & VPN ready" in text
    assert "Größe &lt;ok&gt; &amp; VPN ready" in html

    assert result == {
        "kind": "request_received",
        "message_id": result["message_id"],
        "subject": message.subject,
        "from": SENDER,
        "to": ["alice.admin@acme.example"],
        "cc": ["carla@platinum.example", "pete@platinum.example"],
        "smtp_conn_id": "smtp_default",
    }
    assert result["message_id"].endswith("@vendor.example>")


def test_configured_connection_and_explicit_sender(smtp_sink, monkeypatch, message):
    sink, port = smtp_sink
    _smtp_connection(monkeypatch, "customer_mail", port)
    result = send_customer_email(message, smtp_conn_id="customer_mail", from_email="pm@vendor.example")
    assert sink.envelopes[0].mail_from == "pm@vendor.example"
    assert result["smtp_conn_id"] == "customer_mail"


def test_missing_sender_names_the_connection(smtp_sink, monkeypatch, message):
    sink, port = smtp_sink
    _smtp_connection(monkeypatch, "smtp_default", port)
    with pytest.raises(EmailDeliveryError, match="from_email of connection smtp_default"):
        send_customer_email(message)
    assert sink.envelopes == []


def test_unreachable_server_names_connection_and_recipients(monkeypatch, message):
    _smtp_connection(monkeypatch, "smtp_default", _free_port(), from_email=SENDER)
    with pytest.raises(EmailDeliveryError) as failure:
        send_customer_email(message)
    text = str(failure.value)
    assert "SMTP connection smtp_default" in text
    assert "alice.admin@acme.example" in text and "pete@platinum.example" in text


def test_unknown_connection_is_named(monkeypatch, message):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_SMTP", raising=False)
    with pytest.raises(EmailDeliveryError, match="SMTP connection no_such_smtp"):
        send_customer_email(message, smtp_conn_id="no_such_smtp")


def test_refused_recipient_fails_and_is_named(smtp_sink, monkeypatch, message):
    sink, port = smtp_sink
    _smtp_connection(monkeypatch, "smtp_default", port, from_email=SENDER)
    partly_bad = CustomerEmail(
        kind=message.kind, subject=message.subject, text=message.text, html=message.html,
        to=message.to, cc=("nobody@refused.example",),
    )  # fmt: skip
    with pytest.raises(EmailDeliveryError, match=r"refused nobody@refused\.example \(550"):
        send_customer_email(partly_bad)
    assert sink.envelopes[0].rcpt_tos == ["alice.admin@acme.example"]
