"""A small typed client of Airflow 3's public REST API, acting as any of the harness's users.

Tests and the demo drive Airflow the way people do: ops triggers, an assigned consultant answers
a human-in-the-loop task, a manager reads states. Each call names the user it acts as, so an
authorization check (only the assigned user may answer) is tested through the real API.
Errors carry method, URL, HTTP status and response body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from managed_upgrade.dag_ids import review_dag_id_of
from managed_upgrade.review.review_runs import parse_review_run_id

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
PAGE_SIZE = 100  # [api] maximum_page_limit default: larger limits are silently cut to it
POLL_SECONDS = 0.5
DEFAULT_USER = "admin"

T = TypeVar("T")


class AirflowApiError(RuntimeError):
    """A request answered with an unexpected HTTP status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:2000]}")
        self.method = method
        self.url = url
        self.status = status
        self.body = body


class UnknownUserError(LookupError):
    """The client has no password for the user a call should act as."""


class WaitTimeout(TimeoutError):
    """A condition polled through the API did not come true in time."""


def _segment(value: str) -> str:
    """Quote one path segment (run ids hold ':' and '+')."""
    return quote(value, safe="")


class AirflowClient:
    """Airflow REST API client; `passwords` maps user name to password (the harness's passwords.json).

    `hitl_settle(detail)`, if given, is called before `wait_for_pending_hitl` returns a request, to
    wait until answering it is safe (see `LocalAirflow.wait_until_hitl_parked`).
    """

    def __init__(
        self,
        base_url: str,
        passwords: Mapping[str, str],
        timeout: float = 30.0,
        hitl_settle: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._hitl_settle = hitl_settle
        self._passwords = dict(passwords)
        self._tokens: dict[str, str] = {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------

    def token(self, user: str) -> str:
        """A JWT for `user` (POST /auth/token), cached per user."""
        if user not in self._tokens:
            if user not in self._passwords:
                known = sorted(self._passwords)
                raise UnknownUserError(f"no password for user {user!r}; known users: {known}")
            body = {"username": user, "password": self._passwords[user]}
            response = self._http.post("/auth/token", json=body)
            self._check(response, (201,))
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def request(
        self,
        method: str,
        path: str,
        *,
        user: str = DEFAULT_USER,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        expected: Iterable[int] = (200,),
    ) -> Any:
        """Send one API request as `user`; the decoded JSON body (None if empty)."""
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        response = self._http.request(method, path, headers=headers, json=json, params=params)
        self._check(response, tuple(expected))
        return response.json() if response.content else None

    def _paged(self, path: str, key: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> list:
        items: list = []
        while True:
            page = self.request(
                "GET", path, params={**(params or {}), "limit": PAGE_SIZE, "offset": len(items)}, **kwargs
            )
            items.extend(page[key])
            if not page[key] or len(items) >= page["total_entries"]:
                return items

    @staticmethod
    def _check(response: httpx.Response, expected: tuple[int, ...]) -> None:
        if response.status_code not in expected:
            raise AirflowApiError(
                response.request.method, str(response.request.url), response.status_code, response.text
            )

    # --- DAGs -----------------------------------------------------------------------------------

    def dags(self, *, user: str = DEFAULT_USER) -> list[dict[str, Any]]:
        return self._paged("/api/v2/dags", "dags", user=user)

    def dag(self, dag_id: str, *, user: str = DEFAULT_USER) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{_segment(dag_id)}", user=user)

    def import_errors(self, *, user: str = DEFAULT_USER) -> list[dict[str, Any]]:
        """Files the dag-processor could not import: filename, stack_trace, bundle_name."""
        return self._paged("/api/v2/importErrors", "import_errors", user=user)

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the dag-processor has parsed and serialized `dag_id`; on timeout show import errors."""

        def parsed() -> dict[str, Any] | None:
            try:
                return self.dag(dag_id)
            except AirflowApiError as error:
                if error.status == 404:
                    return None
                raise

        try:
            return wait_until(parsed, timeout, f"DAG {dag_id} to be parsed")
        except WaitTimeout as error:
            errors = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in self.import_errors())
            raise WaitTimeout(f"{error}; import errors:\n{errors or '(none)'}") from None

    def set_paused(self, dag_id: str, paused: bool, *, user: str = "ops") -> dict[str, Any]:
        return self.request(
            "PATCH", f"/api/v2/dags/{_segment(dag_id)}", user=user, json={"is_paused": paused}
        )

    def unpause(self, dag_id: str, *, user: str = "ops") -> dict[str, Any]:
        return self.set_paused(dag_id, False, user=user)

    # --- runs and task instances ----------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        user: str = "ops",
        run_id: str | None = None,
        note: str | None = None,
        expected: Iterable[int] = (200,),
    ) -> dict[str, Any]:
        """Create a manual run now (`logical_date` null: several runs may start at the same time)."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        if note is not None:
            body["note"] = note
        return self.request(
            "POST", f"/api/v2/dags/{_segment(dag_id)}/dagRuns", user=user, json=body, expected=expected
        )

    def fail_run(self, dag_id: str, run_id: str, *, user: str = "ops", attempts: int = 3) -> dict[str, Any]:
        """Mark the run failed, as ops stops a run (``PATCH`` state ``failed``); the run afterwards.

        Sent again when Airflow answers 500 "Database error": PostgreSQL broke a deadlock between this
        update (the run's task instances, then the run) and the scheduler's loop (the run, then its task
        instances) by rolling this request back, so nothing of it was kept (apache/airflow#27473 class).
        """
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}"
        for _ in range(attempts - 1):
            try:
                return self.request("PATCH", path, user=user, json={"state": "failed"})
            except AirflowApiError as error:
                if error.status != 500 or "Database error" not in error.body:
                    raise
            time.sleep(1.0)
        return self.request("PATCH", path, user=user, json={"state": "failed"})

    def dag_run(self, dag_id: str, run_id: str, *, user: str = DEFAULT_USER) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}", user=user)

    def task_instances(self, dag_id: str, run_id: str, *, user: str = DEFAULT_USER) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances"
        return self._paged(path, "task_instances", user=user)

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1, user: str = DEFAULT_USER
    ) -> dict[str, Any]:
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/{_segment(task_id)}"
        if map_index >= 0:
            path += f"/{map_index}"
        return self.request("GET", path, user=user)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """task_id -> state (map index appended as `task_id[i]` for mapped tasks)."""
        return {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
            for ti in self.task_instances(dag_id, run_id)
        }

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout: float = 300.0, states: Iterable[str] = TERMINAL_RUN_STATES
    ) -> dict[str, Any]:
        """Wait until the run reaches one of `states`; on timeout the message lists every task's state."""
        wanted = frozenset(states)

        def reached() -> dict[str, Any] | None:
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in wanted else None

        try:
            return wait_until(reached, timeout, f"run {dag_id}/{run_id} to reach {sorted(wanted)}")
        except WaitTimeout as error:
            raise WaitTimeout(f"{error}; task states: {self.task_states(dag_id, run_id)}") from None

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: Iterable[str], timeout: float = 120.0
    ) -> dict[str, Any]:
        wanted = frozenset(states)

        def reached() -> dict[str, Any] | None:
            ti = self.task_instance(dag_id, run_id, task_id)
            return ti if ti["state"] in wanted else None

        try:
            return wait_until(
                reached, timeout, f"task {task_id} of {dag_id}/{run_id} to be in {sorted(wanted)}"
            )
        except WaitTimeout as error:
            raise WaitTimeout(f"{error}; task states: {self.task_states(dag_id, run_id)}") from None

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, *, map_index: int = -1
    ) -> str:
        """The task's log as text, one event per line."""
        path = (
            f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/"
            f"{_segment(task_id)}/logs/{try_number}"
        )
        body = self.request("GET", path, params={"full_content": "true", "map_index": map_index})
        lines = []
        for entry in body["content"]:
            if isinstance(entry, str):
                lines.append(entry)
            else:
                level = entry.get("level", "")
                lines.append(f"{entry.get('timestamp', '')} {level} {entry.get('event', '')}".strip())
        return "\n".join(lines)

    # --- human in the loop ----------------------------------------------------------------------

    def hitl_details(
        self,
        dag_id: str = "~",
        run_id: str = "~",
        *,
        pending_only: bool = True,
        user: str = DEFAULT_USER,
    ) -> list[dict[str, Any]]:
        """Human-in-the-loop requests (`~` = any DAG / run); by default only unanswered ones."""
        params = {"response_received": "false"} if pending_only else {}
        path = f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/hitlDetails"
        return self._paged(path, "hitl_details", params=params, user=user)

    def run_gates(
        self, dag_id: str, run_id: str, *, pending_only: bool = True, user: str = DEFAULT_USER
    ) -> list[dict[str, Any]]:
        """The (by default only unanswered) questions of a customer run: its HITL tasks and review questions.

        Review questions (analysis, fix rounds, sign-offs) are runs of the customer's review DAG
        (``managed_upgrade_review__<customer_id>``) named after the customer run. Each detail gets
        ``gate``: the customer run (``dag_id``, ``run_id``), its ``task_id`` asking, the ``question``
        number (``None`` for the run's own HITL tasks) and where to answer (``answer_dag_id``,
        ``answer_run_id``, ``answer_task_id``, ``map_index``); see :meth:`answer_gate`.
        """
        gates = []
        for detail in self.hitl_details(dag_id, run_id, pending_only=pending_only, user=user):
            instance = detail["task_instance"]
            detail["gate"] = _gate(dag_id, run_id, instance["task_id"], None, instance)
            gates.append(detail)
        review_dag_id = review_dag_id_of(dag_id)
        reviews = (
            []
            if review_dag_id is None
            else self.hitl_details(review_dag_id, "~", pending_only=pending_only, user=user)
        )
        for detail in reviews:
            instance = detail["task_instance"]
            asked = parse_review_run_id(instance["dag_run_id"], dag_id, run_id)
            if asked is not None:
                detail["gate"] = _gate(dag_id, run_id, asked[0], asked[1], instance)
                gates.append(detail)
        return gates

    def wait_for_pending_hitl(
        self, dag_id: str, run_id: str, task_id: str, timeout: float = 120.0, *, user: str = DEFAULT_USER
    ) -> dict[str, Any]:
        """Wait until `task_id` of the run asks for input (itself or through a review question).

        Returns the HITL detail (options, assigned users, ``gate``: where to answer it).
        """

        def pending() -> dict[str, Any] | None:
            for detail in self.run_gates(dag_id, run_id, user=user):
                if detail["gate"]["task_id"] == task_id:
                    return detail
            return None

        try:
            detail = wait_until(pending, timeout, f"{task_id} of {dag_id}/{run_id} to wait for input")
        except WaitTimeout as error:
            raise WaitTimeout(f"{error}; task states: {self.task_states(dag_id, run_id)}") from None
        if self._hitl_settle is not None:
            self._hitl_settle(detail)
        return detail

    def answer_gate(
        self,
        detail: Mapping[str, Any],
        chosen_options: list[str],
        params_input: Mapping[str, Any] | None = None,
        *,
        user: str,
        expected: Iterable[int] = (200,),
    ) -> dict[str, Any]:
        """Answer a question found by :meth:`run_gates` / :meth:`wait_for_pending_hitl`."""
        gate = detail["gate"]
        return self.answer_hitl(
            gate["answer_dag_id"],
            gate["answer_run_id"],
            gate["answer_task_id"],
            chosen_options,
            params_input,
            user=user,
            map_index=gate["map_index"],
            expected=expected,
        )

    def answer_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen_options: list[str],
        params_input: Mapping[str, Any] | None = None,
        *,
        user: str,
        map_index: int = -1,
        expected: Iterable[int] = (200,),
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop task as `user` (403 if not assigned, 409 if already answered).

        Get the request from `wait_for_pending_hitl` first: with a settle hook it is safe to answer
        at once (an answer within about a second of the task parking can fail it in Airflow 3.3.2).
        """
        path = (
            f"/api/v2/dags/{_segment(dag_id)}/dagRuns/{_segment(run_id)}/taskInstances/"
            f"{_segment(task_id)}/{map_index}/hitlDetails"
        )
        body = {"chosen_options": list(chosen_options), "params_input": dict(params_input or {})}
        return self.request("PATCH", path, user=user, json=body, expected=expected)


def _gate(
    dag_id: str, run_id: str, task_id: str, question: int | None, instance: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "question": question,
        "answer_dag_id": instance["dag_id"],
        "answer_run_id": instance["dag_run_id"],
        "answer_task_id": instance["task_id"],
        "map_index": instance.get("map_index", -1),
    }


def wait_until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call `probe` until it returns something other than None; WaitTimeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_SECONDS)
