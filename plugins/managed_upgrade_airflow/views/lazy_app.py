"""An ASGI app that builds the views' FastAPI app on its first request, so loading the plugin stays cheap.

Airflow imports the plugin file in every component (scheduler, workers, triggerer, dag-processor);
only the api-server ever serves the views. FastAPI, Jinja and the views' modules load there, once.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyApp:
    """Calls ``factory()`` (an import path ``module:function``) once, then hands every request to its app."""

    def __init__(self, factory: str) -> None:
        self.factory = factory
        self._app: AsgiApp | None = None
        self._lock = threading.Lock()

    def _load(self) -> AsgiApp:
        with self._lock:
            if self._app is None:
                import importlib

                module_name, _, function = self.factory.partition(":")
                self._app = getattr(importlib.import_module(module_name), function)()
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or self._load()
        await app(scope, receive, send)
