"""Posts an alert's JSON (Slack-compatible) to a webhook named by an Airflow connection.

The URL and token stay in the connection, never in a customer config: either the connection's
``host`` is the full ``http(s)://`` URL (a Slack incoming webhook), or the URL is built from
``schema`` (http/https, default https), ``host``, ``port`` and the extra ``endpoint`` (a path). A
``password`` is sent as a bearer token. Transient failures (network, 429, 5xx) are retried.
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.sdk import BaseNotifier

GLOBAL_WEBHOOK_CONN_ID = "managed_upgrade_alerts_webhook"
"""Connection used when a customer config names no ``alerts.webhook_conn_id``; skipped if undefined."""
TIMEOUT_SECONDS = 10.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
"""First wait between attempts; it doubles per attempt."""


class WebhookDeliveryError(RuntimeError):
    """The webhook did not accept the alert; names the connection and what went wrong."""


class _RetryableResponse(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")


def webhook_url(conn: Any) -> str:
    """The URL of a webhook connection (see the module docstring)."""
    host = (conn.host or "").strip()
    if host.startswith(("http://", "https://")):
        return host
    if not host:
        raise WebhookDeliveryError(
            f"connection {conn.conn_id} has no host; set host to the webhook's full https:// URL"
        )
    scheme = conn.schema if conn.schema in ("http", "https") else "https"
    port = f":{conn.port}" if conn.port else ""
    endpoint = str(conn.extra_dejson.get("endpoint") or "")
    if endpoint and not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    return f"{scheme}://{host}{port}{endpoint}"


class WebhookNotifier(BaseNotifier):
    """POST ``payload`` as JSON to the webhook of connection ``conn_id``; raises on failure."""

    def __init__(self, payload: dict[str, Any], conn_id: str = GLOBAL_WEBHOOK_CONN_ID) -> None:
        super().__init__()
        self.payload = payload
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        import httpx
        import tenacity
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except Exception as exc:
            raise WebhookDeliveryError(
                f"webhook connection {self.conn_id} is not available ({exc}); define it or remove it from "
                "the customer's alerts.webhook_conn_id"
            ) from exc
        url = webhook_url(conn)
        headers = {"Content-Type": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"

        def post(client: httpx.Client) -> httpx.Response:
            response = client.post(url, json=self.payload, headers=headers)
            if response.status_code == 429 or response.status_code >= 500:
                raise _RetryableResponse(response.status_code, response.text[:200])
            return response

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=BACKOFF_SECONDS, max=8),
            retry=tenacity.retry_if_exception_type((httpx.TransportError, _RetryableResponse)),
            reraise=True,
        )
        # the URL may carry a secret (Slack's path is one): errors name the connection and the host only
        where = f"webhook connection {self.conn_id} ({httpx.URL(url).host})"
        try:
            with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
                response = retrying(post, client)
        except _RetryableResponse as exc:
            raise WebhookDeliveryError(f"{where} failed after {ATTEMPTS} attempts: {exc}") from exc
        except httpx.HTTPError as exc:
            raise WebhookDeliveryError(
                f"{where} failed after {ATTEMPTS} attempts: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise WebhookDeliveryError(
                f"{where} refused the alert: HTTP {response.status_code}: {response.text[:200]}; "
                "check the connection's URL and token"
            )

    async def async_notify(self, context: Any) -> None:
        """For the triggerer (Deadline Alerts): the blocking HTTP exchange runs in a worker thread."""
        await asyncio.to_thread(self.notify, context)
