"""Where this deployment's Airflow API server (and its UI) answers, for the links in alerts."""

from __future__ import annotations


def api_base_url() -> str:
    """``[api] base_url``, else ``http://<[api] host>:<[api] port>`` (localhost for a wildcard host)."""
    from airflow.sdk import conf

    base_url = conf.get("api", "base_url", fallback=None)
    if base_url:
        return base_url.rstrip("/")
    host = conf.get("api", "host", fallback="localhost") or "localhost"
    port = conf.get("api", "port", fallback="8080") or "8080"
    return f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
