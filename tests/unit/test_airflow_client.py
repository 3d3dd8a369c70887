"""The REST client's own decisions, against a scripted HTTP peer (Airflow's answers replayed)."""

from __future__ import annotations

import json

import httpx
import pytest

from airflow_local import client as client_module
from airflow_local.client import AirflowApiError, AirflowClient

DEADLOCK = json.dumps({"detail": {"reason": "Database error", "statement": "hidden", "orig_error": "hidden"}})


def scripted(answers: list[tuple[int, str]], seen: list[str]) -> AirflowClient:
    """A client whose PATCHes get ``answers`` in turn (a token is always granted)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        seen.append(f"{request.method} {request.url.path} {request.content.decode()}")
        status, body = answers.pop(0)
        return httpx.Response(status, text=body)

    api = AirflowClient("http://airflow.test", {"ops": "pw"})
    api._http = httpx.Client(base_url="http://airflow.test", transport=httpx.MockTransport(handle))
    return api


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)


def test_failing_a_run_is_sent_again_after_a_deadlock_rolled_it_back() -> None:
    seen: list[str] = []
    api = scripted([(500, DEADLOCK), (500, DEADLOCK), (200, '{"state": "failed"}')], seen)

    assert api.fail_run("managed_upgrade__acme", "manual__1") == {"state": "failed"}
    assert seen == ['PATCH /api/v2/dags/managed_upgrade__acme/dagRuns/manual__1 {"state":"failed"}'] * 3


def test_failing_a_run_gives_up_after_its_attempts_and_on_any_other_error() -> None:
    api = scripted([(500, DEADLOCK)] * 3, [])
    with pytest.raises(AirflowApiError, match="HTTP 500"):
        api.fail_run("d", "r")

    seen: list[str] = []
    api = scripted([(404, '{"detail": "not found"}'), (200, "{}")], seen)
    with pytest.raises(AirflowApiError, match="HTTP 404"):
        api.fail_run("d", "r")
    assert len(seen) == 1

    seen = []
    api = scripted([(500, "Internal Server Error"), (200, "{}")], seen)
    with pytest.raises(AirflowApiError, match="HTTP 500"):
        api.fail_run("d", "r")
    assert len(seen) == 1
