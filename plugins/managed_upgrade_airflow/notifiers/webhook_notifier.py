"""Posts an alert's JSON (Slack-compatible) to a webhook named by an Airflow connection.

The URL and token stay in the connection, never in a customer config: either the connection's
``host`` is the full ``http(s)://`` URL (a Slack incoming webhook), or the URL is built from
``schema`` (http/https, default https), ``host``, ``port`` and the extra ``endpoint`` (a path). A
``password`` is sent as a bearer token. The connection's other extras mean what they mean for any
connection of the HTTP provider (``proxies``, ``verify``, ``cert``; any other key is sent as a
header). Transient failures (network, 429, 5xx) are retried; a redirect is not followed.

The request goes through the HTTP provider's ``HttpHook``, handed the connection as read here: the
hook's own reading differs (plain http when no schema is set, a port added even to a full URL, a
password sent only with a login and as basic auth, the ``endpoint`` extra sent as a header). The
provider's ``HttpNotifier`` is not used: it reads the connection the hook's way, does not retry,
and cannot tell a refused alert from a transient failure.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    import requests
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import Connection

GLOBAL_WEBHOOK_CONN_ID = "managed_upgrade_alerts_webhook"
"""Connection used when a customer config names no ``alerts.webhook_conn_id``; skipped if undefined."""
TIMEOUT_SECONDS = 10.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
"""First wait between attempts; it doubles per attempt."""
ENDPOINT_EXTRA = "endpoint"
_SOCKET_MODULES = frozenset({"builtins", "socket", "ssl"})


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
    endpoint = str(conn.extra_dejson.get(ENDPOINT_EXTRA) or "")
    if endpoint and not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    return f"{scheme}://{host}{port}{endpoint}"


def webhook_hook(conn: Connection, url: str) -> HttpHook:
    """The provider's hook for ``conn``, reading it as this module does: ``url`` as its whole address,
    no login, the extras other than ``endpoint`` as they are."""
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import Connection

    extra = {key: value for key, value in conn.extra_dejson.items() if key != ENDPOINT_EXTRA}
    as_read_here = Connection(
        conn_id=conn.conn_id, conn_type="http", host=url, extra=json.dumps(extra) if extra else None
    )

    class WebhookHook(HttpHook):
        @classmethod
        def get_connection(cls, conn_id: str) -> Connection:
            return as_read_here

    return WebhookHook(method="POST", http_conn_id=conn.conn_id)


def _problem(exc: BaseException, url: str) -> str:
    """``ConnectionError: [Errno 111] Connection refused``: the socket's or TLS layer's own error where
    there is one, else the message with the URL's path masked (a Slack webhook's path is its secret)."""
    cause = exc.__cause__ or exc.__context__
    for _ in range(20):  # down the chain of causes
        if cause is None:
            break
        if isinstance(cause, OSError) and type(cause).__module__ in _SOCKET_MODULES:
            return f"{type(exc).__name__}: {cause}"
        cause = cause.__cause__ or cause.__context__
    path = urlsplit(url)._replace(scheme="", netloc="", fragment="").geturl()
    text = str(exc)
    return f"{type(exc).__name__}: {text.replace(path, '/...') if len(path) > 1 else text}"


class WebhookNotifier(BaseNotifier):
    """POST ``payload`` as JSON to the webhook of connection ``conn_id``; raises on failure."""

    def __init__(self, payload: dict[str, Any], conn_id: str = GLOBAL_WEBHOOK_CONN_ID) -> None:
        super().__init__()
        self.payload = payload
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        import requests
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
        hook = webhook_hook(conn, url)
        headers = {"Content-Type": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        options = {"timeout": TIMEOUT_SECONDS, "check_response": False, "allow_redirects": False}

        def post() -> requests.Response:
            response: requests.Response = hook.run(json=self.payload, headers=headers, extra_options=options)
            if response.status_code == 429 or response.status_code >= 500:
                raise _RetryableResponse(response.status_code, response.text[:200])
            return response

        transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=BACKOFF_SECONDS, max=8),
            retry=tenacity.retry_if_exception_type((*transient, _RetryableResponse)),
            reraise=True,
        )
        # the URL may carry a secret (Slack's path is one): errors name the connection and the host only
        where = f"webhook connection {self.conn_id} ({urlsplit(url).hostname})"
        try:
            response = retrying(post)
        except _RetryableResponse as exc:
            raise WebhookDeliveryError(f"{where} failed after {ATTEMPTS} attempts: {exc}") from exc
        except transient as exc:
            raise WebhookDeliveryError(
                f"{where} failed after {ATTEMPTS} attempts: {_problem(exc, url)}"
            ) from exc
        except requests.RequestException as exc:
            raise WebhookDeliveryError(f"{where} failed: {_problem(exc, url)}") from exc
        if response.status_code >= 400:
            raise WebhookDeliveryError(
                f"{where} refused the alert: HTTP {response.status_code}: {response.text[:200]}; "
                "check the connection's URL and token"
            )

    async def async_notify(self, context: Any) -> None:
        """For the triggerer (Deadline Alerts): the blocking HTTP exchange runs in a worker thread."""
        await asyncio.to_thread(self.notify, context)
