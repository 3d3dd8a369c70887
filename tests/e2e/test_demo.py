"""`make demo AUTO=1`, the README's main command: the demo customer's whole upgrade on a fresh Airflow.

Runs the demo exactly as a user does (the module `make demo` runs, with `--auto`), in a home and on
a port of its own so it does not meet the session's Airflow, then stops what it started
(`make demo-down`).
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_local import harness
from airflow_local.settings import REPO_ROOT, HarnessSettings
from upgrade_demo import mail_sink

pytestmark = pytest.mark.e2e

DEMO_TIMEOUT_SECONDS = 1200
GATES_OF_A_CLEAN_RUN = {
    "initiation.respond_to_request",
    "initiation.acknowledge_request_formally",
    "initiation.analyse_questionnaire_and_system",
    "preparation.review_test_case_verification",
    "dev.customer_sign_off",
    "uat.customer_sign_off",
    "prod.customer_sign_off",
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_make_demo_auto_upgrades_the_demo_customer_and_answers_every_gate(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AIRFLOW_LOCAL_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_LOCAL_PORT": str(free_port()),
    }
    env.pop("AIRFLOW_LOCAL_SMTP_PORT", None)
    settings = HarnessSettings.from_environment(environ=env)
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "upgrade_demo", "--auto", "--seconds-per-business-day", "20"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT_SECONDS,
            check=False,
        )
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-6000:]
        assert re.search(r"== run success after \d+ s, 7 gates answered", demo.stdout), output[-3000:]
        answered = set(re.findall(r"answered (\S+) as (?:carla|pete):", demo.stdout))
        assert answered == GATES_OF_A_CLEAN_RUN, output[-3000:]
        mails = list((settings.home / "mail" / "new").iterdir())
        subjects = [
            email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["Subject"]
            for path in mails
        ]
        assert any("Managed Upgrade complete" in subject for subject in subjects), subjects
    finally:
        harness.down(settings)
        mail_sink.stop(settings.home / "mail")
