"""The views and the answer form in a real browser: Debian's chromium, headless, driven by Playwright.

The same Airflow as ``test_customer_access.py`` (the FAB auth manager, per-customer roles, the
product's DAGs on the simulated estate). Ops triggers initech's upgrade as a rehearsal; the
autopilot answers its gates up to the Dev sign-off. Then, each in a browser of their own, logging
in through FAB's login page:

- carla (initech's consultant) finds the Dev sign-off under *My open actions*, follows its link to
  Airflow's answer form and signs it off there; the run moves on to UAT;
- the manager opens the portfolio and initech's planned-vs-actual page and finds initech's rows;
- gina (globex's consultant only) finds none of it and gets 403 on initech's page.

Screenshots of each page go to ``test-artifacts/screenshots/`` (kept by CI as artifacts).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright import sync_api as playwright_api

import crm_estate
from airflow_local import harness
from airflow_local.browser import headless_chromium
from airflow_local.client import AirflowClient, wait_until
from airflow_local.settings import REPO_ROOT, HarnessOverrides
from managed_upgrade.dag_ids import dag_id_for
from upgrade_demo.autopilot import drive_run

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("airflow", [HarnessOverrides(auth_manager="fab")], indirect=True),
]

CUSTOMER = "initech"
CONSULTANT, STRANGER, MANAGER = "carla", "gina", "manager"
"""carla consults for initech (include/customers/initech.yaml); gina only for globex."""
SIGN_OFF = "dev.customer_sign_off"
FEEDBACK = "Dev looks right to us; go ahead with UAT."
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PAGE_TIMEOUT_MS = 60_000
RUN_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def run_id(airflow: harness.LocalAirflow, api: AirflowClient) -> str:
    """initech's rehearsal, every gate answered by the autopilot until the Dev sign-off waits."""
    crm_estate.reset(customer_id=CUSTOMER)  # at its current version, whatever an earlier run left
    dag_id = dag_id_for(CUSTOMER)
    api.wait_for_dag(dag_id, timeout=240)
    api.unpause(dag_id)
    run_id = f"browser_{uuid.uuid4().hex[:8]}"
    api.trigger(dag_id, {"seconds_per_business_day": 20}, run_id=run_id, note="browser e2e")
    run, _ = drive_run(api, dag_id, run_id, timeout=RUN_TIMEOUT, stop_at=SIGN_OFF)
    assert run["state"] == "running", f"run ended before the Dev sign-off: {api.task_states(dag_id, run_id)}"
    api.wait_for_pending_hitl(dag_id, run_id, SIGN_OFF, user=CONSULTANT)
    return run_id


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with headless_chromium() as launched:
        yield launched


def logged_in(browser: object, airflow: harness.LocalAirflow, user: str) -> object:
    """A page of a fresh browser context in which ``user`` logged in through FAB's login form."""
    context = browser.new_context(base_url=airflow.base_url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    page.goto("/auth/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", airflow.passwords[user])
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    assert any(cookie["name"] == "_token" for cookie in context.cookies()), f"{user} got no session token"
    return page


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def row_of(page: object, text: str) -> object:
    return page.locator("tr[data-row]").filter(has_text=text)


def test_the_consultant_signs_off_dev_from_my_open_actions_and_the_run_moves_on(
    airflow: harness.LocalAirflow, api: AirflowClient, browser: object, run_id: str
) -> None:
    dag_id = dag_id_for(CUSTOMER)
    page = logged_in(browser, airflow, CONSULTANT)
    page.goto("/managed-upgrade/my-actions")
    row = row_of(page, CUSTOMER).filter(has_text="sign-off")
    playwright_api.expect(row).to_have_count(1)
    shot(page, "my-open-actions")

    row.get_by_role("link", name="answer").click()
    page.wait_for_url(lambda url: url.endswith("/required_actions"))
    signed_off = page.get_by_role("button", name="Signed off")
    signed_off.wait_for()
    # the optional feedback may stay empty; typed here to see it arrive
    page.locator("#element_feedback").fill(FEEDBACK)
    shot(page, "dev-sign-off-form")
    signed_off.click()

    answered = api.wait_for_task_state(dag_id, run_id, SIGN_OFF, {"success"}, timeout=300)
    assert answered["state"] == "success"
    responses = [
        d for d in api.run_gates(dag_id, run_id, pending_only=False) if d["gate"]["task_id"] == SIGN_OFF
    ]
    assert [(r["chosen_options"], r["responded_by_user"]["name"]) for r in responses] == [
        (["Signed off"], CONSULTANT)
    ], responses
    assert responses[0]["params_input"]["feedback"] == FEEDBACK, responses
    wait_until(
        lambda: [
            task
            for task, state in api.task_states(dag_id, run_id).items()
            if task.startswith("uat.") and state
        ],
        300,
        "a UAT task to start after the Dev sign-off",
    )
    gone = [d for d in api.run_gates(dag_id, run_id, user=CONSULTANT) if d["gate"]["task_id"] == SIGN_OFF]
    assert gone == []
    page.goto("/managed-upgrade/my-actions")
    playwright_api.expect(row_of(page, CUSTOMER).filter(has_text="Dev")).to_have_count(0)
    page.context.close()


def test_the_manager_sees_initech_in_the_portfolio_and_its_plan_against_reality(
    airflow: harness.LocalAirflow, browser: object, run_id: str
) -> None:
    page = logged_in(browser, airflow, MANAGER)
    page.goto("/managed-upgrade/portfolio")
    row = row_of(page, CUSTOMER)
    playwright_api.expect(row).to_have_count(1)
    playwright_api.expect(row).to_contain_text(run_id)
    shot(page, "portfolio")

    row.get_by_role("link", name="planned vs actual").click()
    page.wait_for_url(lambda url: url.endswith(f"/runs/{dag_id_for(CUSTOMER)}/{run_id}"))
    playwright_api.expect(page.locator("h1")).to_contain_text("Planned vs actual")
    activities = page.locator("#activities tr[data-row]")
    # the process's activities in seed order: the run starts with the request case
    playwright_api.expect(activities.nth(0)).to_contain_text("Create Request Case")
    playwright_api.expect(activities.filter(has_text="Customer Sign-off of")).to_have_count(3)
    assert activities.count() >= 20
    shot(page, "planned-vs-actual")
    page.context.close()


def test_a_consultant_of_another_customer_sees_none_of_it(
    airflow: harness.LocalAirflow, browser: object, run_id: str
) -> None:
    page = logged_in(browser, airflow, STRANGER)
    page.goto("/managed-upgrade/my-actions")
    playwright_api.expect(page.locator("h1")).to_contain_text("My open actions")
    playwright_api.expect(row_of(page, CUSTOMER)).to_have_count(0)
    page.goto("/managed-upgrade/portfolio")
    playwright_api.expect(page.locator("h1")).to_contain_text("portfolio")
    playwright_api.expect(row_of(page, CUSTOMER)).to_have_count(0)
    response = page.goto(f"/managed-upgrade/runs/{dag_id_for(CUSTOMER)}/{run_id}")
    assert response is not None and response.status == 403
    page.context.close()
