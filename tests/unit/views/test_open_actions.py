"""My open actions: questions of customer and review DAGs under their customer, by assignee and access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from upgrade_history import run_facts

from managed_upgrade.views.open_actions import (
    CustomerRef,
    OpenQuestion,
    answer_path,
    customer_of,
    my_open_actions,
)

START = datetime(2027, 1, 11, 8, tzinfo=UTC)
RUN = "manual__2027-01-11T08:00:00+00:00"
PARENT = {
    "dag_id": "managed_upgrade__acme",
    "run_id": RUN,
    "task_id": "dev.fix_and_retest",
    "customer_id": "acme",
}


def _question(dag_id: str, run_id: str = "r1", task_id: str = "question", **extra) -> OpenQuestion:
    values = {
        "map_index": -1,
        "subject": "Retest?",
        "assignees": ("carla",),
        "created_at": START,
        "run_conf": None,
    }
    return OpenQuestion(dag_id=dag_id, run_id=run_id, task_id=task_id, **{**values, **extra})


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (
            _question("managed_upgrade__acme", RUN, "initiation.respond_to_request"),
            CustomerRef("acme", "managed_upgrade__acme", RUN, "initiation.respond_to_request"),
        ),
        (
            _question("managed_upgrade_review", run_conf=PARENT),
            CustomerRef("acme", "managed_upgrade__acme", RUN, "dev.fix_and_retest"),
        ),
        (
            _question("managed_upgrade_review__acme", run_conf=PARENT),
            CustomerRef("acme", "managed_upgrade__acme", RUN, "dev.fix_and_retest"),
        ),
        (
            _question("managed_upgrade_review__acme", run_conf={}),
            CustomerRef("acme", "managed_upgrade__acme", None, None),
        ),
        (_question("managed_upgrade_review__globex", run_conf=PARENT), None),  # conf names another customer
        (_question("managed_upgrade_review", run_conf={}), None),
        (_question("some_other_dag"), None),
    ],
)
def test_both_review_dag_forms_and_gates_map_to_the_customer(question, expected):
    assert customer_of(question) == expected


def test_the_answer_form_link_encodes_ids_and_names_the_map_index():
    plain = _question(
        "managed_upgrade_review", "fix.q1__managed_upgrade__acme__manual__2027-01-11T08:00:00+00:00"
    )
    mapped = _question("managed_upgrade__acme", RUN, "dev.sanity_test", map_index=2)

    assert answer_path(plain) == (
        "/dags/managed_upgrade_review/runs/fix.q1__managed_upgrade__acme__manual__2027-01-11T08%3A00%3A00%2B00%3A00"
        "/tasks/question/required_actions"
    )
    assert answer_path(mapped).endswith("/tasks/dev.sanity_test/mapped/2/required_actions")


def test_only_questions_assigned_to_the_caller_in_dags_they_read_oldest_first():
    now = START + timedelta(days=3)
    questions = [
        _question("managed_upgrade_review", "q-new", created_at=START + timedelta(days=2), run_conf=PARENT),
        _question("managed_upgrade__acme", RUN, "initiation.respond_to_request", created_at=START),
        _question(
            "managed_upgrade__acme", RUN, "initiation.acknowledge_request_formally", assignees=("pete",)
        ),
        _question("managed_upgrade__globex", "g", "initiation.respond_to_request"),
        _question(
            "managed_upgrade_review__globex", "q-g", run_conf={**PARENT, "dag_id": "managed_upgrade__globex"}
        ),
    ]
    readable = {"managed_upgrade__acme", "managed_upgrade_review", "managed_upgrade_review__globex"}
    facts = run_facts("acme", START, now, run_id=RUN)

    actions = my_open_actions(
        questions, user_ids={"carla"}, readable_dag_ids=readable, runs={facts.key: facts}, now=now
    )

    assert [(action.customer_id, action.activity_key) for action in actions] == [
        ("acme", "initiation.respond_to_request"),
        ("acme", "dev.fix_and_retest"),
    ]
    first = actions[0]
    assert first.waited == timedelta(days=3) and first.waited_business_days is not None
    assert first.stage == "initiation" and first.sla in {"finished", "running", "missed"}
    assert actions[1].stage == "dev"


def test_a_question_without_ledger_facts_still_shows_with_unknown_sla():
    question = _question("managed_upgrade__acme", RUN, "initiation.respond_to_request")
    (action,) = my_open_actions(
        [question], user_ids={"carla"}, readable_dag_ids={"managed_upgrade__acme"}, runs={}, now=START
    )

    assert action.sla == "unknown" and action.waited_business_days is None


def test_the_caller_matches_by_user_name_when_the_auth_manager_ids_are_numbers():
    question = _question("managed_upgrade__acme", RUN, "initiation.respond_to_request")
    found = my_open_actions(
        [question], user_ids={"7", "carla"}, readable_dag_ids={"managed_upgrade__acme"}, runs={}, now=START
    )
    assert [action.subject for action in found] == ["Retest?"]
