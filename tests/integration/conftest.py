"""Integration tests meet the simulated estate as its hosts' login does.

Run as root, that login is the estate's unprivileged service user (``crm_estate.service_user``): it
cannot enter pytest's private temporary folders (``/tmp/pytest-of-root/...``, mode 0700). A test that
points something on a host at its ``tmp_path`` (a symlink out of an installation, say) needs the
service user to be able to follow it, as a real host's login could follow it to a real folder: here
``tmp_path`` and the folders above it are made enterable (``o+x``: enter, not list) for the test.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        for folder in (*reversed(tmp_path.parents), tmp_path):
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    return tmp_path
