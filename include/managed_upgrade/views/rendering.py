"""The views' HTML, from templates next to this module, so the pages work offline and escape everything.

Same rules as the messages' templates (:mod:`managed_upgrade.messages.templating`): a sandboxed
environment, every value escaped, undefined names are errors, and values from configs, the ledger or
Airflow are data, never template source. Pages are self-contained (inline CSS, SVG bars, a few lines
of inline script to sort and filter tables): no CDN, nothing fetched by the browser.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def segment(value: object) -> str:
    """``value`` as one URL path segment (``/`` and every reserved character percent-encoded)."""
    return quote(str(value), safe="")


def when(value: datetime | date | None, zone: str | None = None) -> str:
    """An instant as ``YYYY-MM-DD HH:MM`` in ``zone`` (default UTC, named), a date as ``YYYY-MM-DD``."""
    if value is None:
        return "-"
    if not isinstance(value, datetime):
        return value.isoformat()
    tz = ZoneInfo(zone) if zone else UTC
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M") + ("" if zone else " UTC")


def iso(value: datetime | date | None) -> str:
    """Machine-readable value for sorting (``data-sort``) and ``<time datetime>``."""
    return "" if value is None else value.isoformat()


def duration(value: timedelta) -> str:
    """A wait as people say it: ``3d 4h``, ``5h 10m``, ``2m 5s``."""
    seconds = max(int(value.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"


def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    environment.filters.update(segment=segment, when=when, iso=iso, duration=duration)
    return environment


ENVIRONMENT = _environment()


def render_page(name: str, /, *, ui_root: str, app_root: str, **context: Any) -> str:
    """Page ``name`` (``<name>.html.j2``); links start at ``ui_root`` (Airflow UI) or ``app_root`` (ours)."""
    return ENVIRONMENT.get_template(f"{name}.html.j2").render(
        ui_root=ui_root.rstrip("/"), app_root=app_root.rstrip("/"), **context
    )
