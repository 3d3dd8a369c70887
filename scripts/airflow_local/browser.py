"""Debian's chromium, headless on loopback, driven by Playwright: the browser tests' and benchmarks'.

Playwright's own browser download does not work here, so the system browser is its executable.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class NoBrowserError(RuntimeError):
    """No chromium on PATH."""


def system_chromium() -> str:
    executable = shutil.which("chromium")
    if executable is None:
        raise NoBrowserError(
            "no chromium on PATH: run `make setup` (scripts/install-system-deps installs it)"
        )
    return executable


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A launched Playwright ``Browser`` (sync API), closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = system_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()
