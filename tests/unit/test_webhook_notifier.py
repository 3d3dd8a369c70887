"""The webhook notifier reads its connection one way, and hands the HTTP provider's hook exactly that."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import Connection

from managed_upgrade_airflow.notifiers.webhook_notifier import WebhookDeliveryError, webhook_hook, webhook_url

SLACK = "https://hooks.slack.example/services/T000/B000/secret"


def connection(**fields: Any) -> Connection:
    extra = fields.pop("extra", None)
    return Connection(
        conn_id="alerts", conn_type="http", extra=json.dumps(extra) if extra else None, **fields
    )


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"host": SLACK}, SLACK),
        ({"host": f" {SLACK} ", "port": 8443, "schema": "http"}, SLACK),  # a full URL is taken whole
        ({"host": "alerts.example", "extra": {"endpoint": "hooks/crm"}}, "https://alerts.example/hooks/crm"),
        ({"host": "alerts.example", "schema": "http", "port": 8080}, "http://alerts.example:8080"),
        (
            {"host": "alerts.example", "schema": "crm", "extra": {"endpoint": "/x"}},
            "https://alerts.example/x",
        ),
    ],
)
def test_the_url_comes_from_the_connection(fields: dict[str, Any], url: str) -> None:
    assert webhook_url(connection(**fields)) == url


def test_a_connection_without_host_says_what_to_set() -> None:
    with pytest.raises(WebhookDeliveryError, match="connection alerts has no host; set host to the"):
        webhook_url(connection(schema="https"))


def test_the_hook_posts_to_that_url_whatever_its_own_reading_would_be() -> None:
    conn = connection(host="alerts.example", port=8443, extra={"endpoint": "hooks/crm"})
    url = webhook_url(conn)
    assert url == "https://alerts.example:8443/hooks/crm"  # the hook alone: http, and no endpoint
    assert webhook_hook(conn, url).url_from_endpoint(None) == url
    slack = connection(host=SLACK, port=443)
    assert webhook_hook(slack, webhook_url(slack)).url_from_endpoint(None) == SLACK  # no port added


def test_the_hooks_session_keeps_the_other_extras_but_neither_endpoint_nor_login() -> None:
    conn = connection(
        host="alerts.example",
        login="ops",
        password="token",  # pragma: allowlist secret
        extra={"endpoint": "hooks/crm", "X-Team": "platinum", "verify": False},
    )
    session = webhook_hook(conn, webhook_url(conn)).get_conn()
    try:
        assert session.headers["X-Team"] == "platinum"
        assert "endpoint" not in session.headers
        assert session.verify is False
        assert session.auth is None  # the password goes as a bearer token, never as basic auth
    finally:
        session.close()
