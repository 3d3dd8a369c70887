"""The process model matches the vendor's seed table row by row and rejects malformed models clearly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from managed_upgrade.process.model import (
    DEFAULT_PROCESS_PATH,
    ProcessModel,
    ProcessModelError,
    load_process_model,
    parse_process_model,
)

# The seed's "Process Detail" table, transcribed: (milestone, activity, task, owner, duration, bullets).
# Blank owner/duration cells are merged with the row above (the seed gives one duration per group).
SEED_ROWS = [
    ("Initiation", "Upgrade Request", "Create Request Case", "Customer", "N/A",
     ["Submits case in customer's CRM support portal"]),
    ("Initiation", "Upgrade Request", "Respond to Request", "Platinum Consultant", "1 day",
     ["Acknowledges receipt",
      "Works with customer to get required upgrade request information",
      "Informs customer the Platinum Project Manager will be in touch within 1 day"]),
    ("Initiation", "Upgrade Request", "Acknowledge Request Formally", "Platinum Project Manager", "1 day",
     ["Emails customer acknowledging receipt of the Platinum Service Request",
      "Provides high-level overview of next steps"]),
    ("Initiation", "Analyse", "Analyse the Questionnaire and the system", "Platinum Consultant", "4 days",
     ["Analyse the Questionnaire and follow-up if more details are required",
      "Analyse the Development Environment and understand the installation and the modules"]),
    ("Preparation", "Test Case Verification", "Verify Test Cases in the Development Environement",
     "Platinum Consultant", "4 days",
     ["Runs test cases provided by customer against the Development Environment"]),
    ("Preparation", "Upgrade Preparation", "Stage Upgrade Files", "", "3 days",
     ["Downloads upgrade files and transfer to Development/UAT/Production Environment"]),
    ("Preparation", "Upgrade Preparation", "Backup Configuration Files", "", "",
     ["Performs backups of installation folder structure and database holding configuration files "
      "of all environments"]),
    ("Execution", "Development", "Upgrade Development Environment", "Platinum Consultant", "12 days",
     ["Upgrades development environment", "Re-apply settings as needed"]),
    ("Execution", "Development", "Test", "", "", ["Performs sanity test"]),
    ("Execution", "Development", "Fix Issues and Retest", "", "", ["Fixes issues as needed and retests"]),
    ("Execution", "Development", "Hand over Development Environment", "", "",
     ["Hands over the development environment to the customer for testing and sign off"]),
    ("Execution", "UAT", "Upgrade UAT environment", "Platinum Consultant", "8 days",
     ["Upgrades UAT environment", "Re-apply settings as needed"]),
    ("Execution", "UAT", "Transfer fixes from Development", "", "",
     ["Transports fixes as a result of sanity testing to UAT"]),
    ("Execution", "UAT", "Test", "", "", ["Performs sanity test"]),
    ("Execution", "Production", "Upgrade Prod environment", "Platinum Consultant", "8 days",
     ["Upgrades Prod environment", "Re-apply settings as needed"]),
    ("Execution", "Production", "Transfer fixes from Development", "", "",
     ["Transports fixes as a result of sanity testing to Prod"]),
    ("Execution", "Production", "Test", "", "", ["Performs sanity test"]),
]  # fmt: skip

# Which activities implement each seed row (a row's bullets may be split over several activities).
SEED_ROW_ACTIVITIES = [
    ("initiation.create_request_case",),
    ("initiation.respond_to_request",),
    ("initiation.acknowledge_request_formally",),
    ("initiation.analyse_questionnaire_and_system",),
    ("preparation.verify_test_cases_dev",),
    ("preparation.stage_upgrade_files",),
    ("preparation.backup_configuration_files",),
    ("dev.upgrade_environment", "dev.reapply_settings"),
    ("dev.sanity_test",),
    ("dev.fix_and_retest",),
    ("dev.hand_over_environment",),
    ("uat.upgrade_environment", "uat.reapply_settings"),
    ("uat.transfer_fixes",),
    ("uat.sanity_test",),
    ("prod.upgrade_environment", "prod.reapply_settings"),
    ("prod.transfer_fixes",),
    ("prod.sanity_test",),
]

SEED_OWNERS = {"Customer": "customer", "Platinum Consultant": "consultant",
               "Platinum Project Manager": "project_manager"}  # fmt: skip

ENVIRONMENTS = ("dev", "uat", "prod")


@pytest.fixture(scope="module")
def model() -> ProcessModel:
    return load_process_model()


def _seed_rows_with_merged_cells() -> list[tuple[str, str, str, str, str, list[str]]]:
    rows, owner = [], ""
    for milestone, activity, task, row_owner, duration, bullets in SEED_ROWS:
        owner = row_owner or owner
        rows.append((milestone, activity, task, owner, duration, bullets))
    return rows


def _ancestors(model: ProcessModel, key: str) -> set[str]:
    found: set[str] = set()
    pending = list(model.activity(key).after)
    while pending:
        upstream = pending.pop()
        if upstream not in found:
            found.add(upstream)
            pending.extend(model.activity(upstream).after)
    return found


def test_stages_are_the_dag_task_groups_in_order(model: ProcessModel) -> None:
    assert [stage.id for stage in model.stages] == [
        "initiation",
        "preparation",
        "dev",
        "uat",
        "prod",
        "closure",
    ]


@pytest.mark.parametrize("row_index", range(len(SEED_ROWS)))
def test_seed_row_is_in_the_model(model: ProcessModel, row_index: int) -> None:
    milestone, seed_activity, task, owner, _, bullets = _seed_rows_with_merged_cells()[row_index]
    keys = SEED_ROW_ACTIVITIES[row_index]
    main = model.activity(keys[0])

    assert main.seed is True
    assert (main.seed_title or main.title) == task
    assert main.seed_activity == seed_activity
    assert model.stage(main.stage).milestone == milestone
    assert main.owner == SEED_OWNERS[owner]
    assert [line for key in keys for line in model.activity(key).description] == bullets


def test_only_the_typo_is_corrected_in_titles(model: ProcessModel) -> None:
    corrected = {a.key: (a.seed_title, a.title) for a in model.activities if a.seed_title}
    assert corrected == {
        "preparation.verify_test_cases_dev": (
            "Verify Test Cases in the Development Environement",
            "Verify Test Cases in the Development Environment",
        )
    }


def test_seed_flag_marks_exactly_the_seed_rows(model: ProcessModel) -> None:
    seed_keys = {keys[0] for keys in SEED_ROW_ACTIVITIES}
    assert {a.key for a in model.activities if a.seed} == seed_keys


def test_seed_durations_are_the_budgets(model: ProcessModel) -> None:
    previous_unit = None
    for row, keys in zip(_seed_rows_with_merged_cells(), SEED_ROW_ACTIVITIES, strict=True):
        task, owner, duration = row[2], row[3], row[4]
        units = {model.activity(key).budget_unit_id for key in keys}
        assert len(units) == 1, f"{task}: one seed row, one budget"
        unit_id = units.pop()
        if duration == "N/A":
            assert unit_id is None, task
        elif duration:
            unit = model.budget_unit(unit_id)
            assert unit.days == int(duration.split()[0]), task
            assert unit.owner == SEED_OWNERS[owner], task
        else:  # merged cell: shares the budget of the row above
            assert unit_id == previous_unit, task
        previous_unit = unit_id


def test_budget_units_cover_the_seed_groups(model: ProcessModel) -> None:
    assert {u.id: (u.days, u.owner, u.is_group) for u in model.budget_units} == {
        "respond_to_request": (1, "consultant", False),
        "acknowledge_request_formally": (1, "project_manager", False),
        "analyse": (4, "consultant", True),
        "test_case_verification": (4, "consultant", True),
        "upgrade_preparation": (3, "consultant", True),
        "development": (12, "consultant", True),
        "uat": (8, "consultant", True),
        "prod": (8, "consultant", True),
    }
    assert model.budget_unit("development").activity_keys == tuple(
        f"dev.{a}"
        for a in ("backup_environment", "upgrade_environment", "reapply_settings", "sanity_test",
                  "fix_and_retest", "hand_over_environment", "customer_sign_off")
    )  # fmt: skip
    # Sequential budgets fit the seed's "6-10 weeks" (30-50 business days).
    assert 30 <= sum(u.days for u in model.budget_units) <= 50


def test_contracted_activities_owners_and_kinds(model: ProcessModel) -> None:
    rows = {a.key: (a.owner, a.kind, a.answered_by, a.budget_unit_id) for a in model.activities}
    assert rows["initiation.create_request_case"] == ("customer", "automated", None, None)
    assert rows["initiation.respond_to_request"] == (
        "consultant",
        "human_gate",
        "consultant",
        "respond_to_request",
    )
    assert rows["initiation.inventory_dev_system"] == ("consultant", "automated", None, "analyse")
    assert rows["preparation.review_test_case_verification"][1:] == ("human_gate", "consultant",
                                                                     "test_case_verification")  # fmt: skip
    assert rows["closure.verify_target_versions"] == ("consultant", "automated", None, None)
    assert rows["closure.send_completion"] == ("project_manager", "automated", None, None)
    for env in ENVIRONMENTS:
        assert rows[f"{env}.customer_sign_off"] == ("customer", "human_gate", "consultant",
                                                    "development" if env == "dev" else env)  # fmt: skip
    uat_ids, prod_ids = ([a.id for a in model.stage(env).activities] for env in ("uat", "prod"))
    assert uat_ids == prod_ids == [
        "backup_environment", "upgrade_environment", "reapply_settings", "transfer_fixes", "sanity_test",
        "fix_and_retest", "hand_over_environment", "customer_sign_off",
    ]  # fmt: skip


def test_clock_pauses_only_where_the_customer_has_the_ball(model: ProcessModel) -> None:
    assert {a.key for a in model.activities if a.waits_on_customer} == {
        f"{env}.customer_sign_off" for env in ENVIRONMENTS
    }
    assert model.activity("initiation.analyse_questionnaire_and_system").waits_on_customer is False


def test_workflow_order(model: ProcessModel) -> None:
    order = [a.key for a in model.topological_order()]
    assert order == [a.key for a in model.activities]  # the file is written in workflow order
    for env in ENVIRONMENTS:
        assert model.activity(f"{env}.upgrade_environment").after == (f"{env}.backup_environment",)
        ancestors = _ancestors(model, f"{env}.upgrade_environment")
        assert {"preparation.stage_upgrade_files", "preparation.backup_configuration_files"} <= ancestors
    for activity in model.stage("uat").activities:
        assert "dev.customer_sign_off" in _ancestors(model, activity.key)
    for activity in model.stage("prod").activities:
        assert "uat.customer_sign_off" in _ancestors(model, activity.key)
    for activity in model.stage("closure").activities:
        assert "prod.customer_sign_off" in _ancestors(model, activity.key)
    assert model.activity("initiation.create_request_case").after == ()


def test_topological_order_follows_dependencies_not_file_order() -> None:
    data = _process_data()
    dev = data["stages"][2]["activities"]
    dev[0], dev[1] = dev[1], dev[0]  # upgrade listed before its backup
    order = [a.key for a in parse_process_model(data).topological_order()]
    assert order.index("dev.backup_environment") < order.index("dev.upgrade_environment")


def test_overrides_change_budgets_without_touching_the_original(model: ProcessModel) -> None:
    changed = model.with_overrides({"development": 15, "respond_to_request": 2})
    assert changed.budget_unit("development").days == 15
    assert changed.budget_unit("respond_to_request").days == 2
    assert changed.activity("initiation.respond_to_request").duration_days == 2
    assert model.budget_unit("development").days == 12
    assert model.with_overrides({}) is model


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"devlopment": 15},
            "duration_overrides: devlopment: unknown budget; known: acknowledge_request_formally,",
        ),
        ({"development": -1}, "duration_overrides: development: must be a whole number of days >= 0"),
        ({"uat": "8"}, "duration_overrides: uat: must be a whole number of days >= 0"),
    ],
)
def test_overrides_are_checked(model: ProcessModel, overrides: dict, message: str) -> None:
    with pytest.raises(ProcessModelError) as caught:
        model.with_overrides(overrides)
    assert message in str(caught.value)


def test_unknown_activity_key_names_the_known_ones(model: ProcessModel) -> None:
    with pytest.raises(
        KeyError, match=r"unknown activity 'dev\.upgrade'; known: initiation\.create_request_case"
    ):
        model.activity("dev.upgrade")


def _process_data() -> dict:
    return yaml.safe_load(DEFAULT_PROCESS_PATH.read_text())


def _set(path: tuple, value: object):
    def change(data: dict) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            _set(("stages", 2, "activities", 1, "after", 0), "dev.upgrade"),
            "stages[2].activities[1].after[0]: unknown activity 'dev.upgrade'",
            id="unknown-dependency",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "owner"), "boss"),
            "stages[0].activities[1].owner: Input should be 'customer', 'consultant' or 'project_manager' "
            "(got 'boss')",
            id="unknown-owner",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "kind"), "manual"),
            "stages[0].activities[1].kind: Input should be 'automated' or 'human_gate' (got 'manual')",
            id="unknown-kind",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "budget_group"), "analyse"),
            "stages[0].activities[1].budget_group: has both its own duration_days and a budget_group; "
            "keep one",
            id="days-and-group",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 0, "after"), ["initiation.respond_to_request"]),
            "stages: dependency cycle: initiation.create_request_case -> initiation.respond_to_request -> "
            "initiation.create_request_case",
            id="cycle",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "after"), ["initiation.respond_to_request"]),
            "stages[0].activities[1].after[0]: an activity cannot wait for itself",
            id="self-dependency",
        ),
        pytest.param(
            lambda d: d["stages"][1]["activities"].append(dict(d["stages"][1]["activities"][0])),
            "stages[1].activities[4].id: duplicate activity 'preparation.verify_test_cases_dev'",
            id="duplicate-activity",
        ),
        pytest.param(
            lambda d: d["stages"].append(dict(d["stages"][5])),
            "stages[6].id: duplicate stage 'closure'",
            id="duplicate-stage",
        ),
        pytest.param(
            lambda d: d["budget_groups"].append(
                {"id": "spare", "title": "Spare", "days": 1, "owner": "consultant"}
            ),
            "budget_groups[6]: budget group 'spare' has no activities",
            id="empty-group",
        ),
        pytest.param(
            _set(("budget_groups", 1, "id"), "analyse"),
            "budget_groups[1].id: duplicate budget group 'analyse'",
            id="duplicate-group",
        ),
        pytest.param(
            _set(("stages", 1, "activities", 0, "budget_group"), "testing"),
            "stages[1].activities[0].budget_group: unknown budget group 'testing'",
            id="unknown-group",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "answered_by"), None),
            "stages[0].activities[1].answered_by: a human_gate needs the role that answers it",
            id="gate-without-responder",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "answered_by"), "customer"),
            "stages[0].activities[1].answered_by: Input should be 'consultant' or 'project_manager'",
            id="customer-cannot-answer",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "colour"), "red"),
            "stages[0].activities[1].colour: unknown field; check its spelling or remove it",
            id="unknown-field",
        ),
        pytest.param(
            _set(("stages", 0, "activities", 1, "duration_days"), "1"),
            "stages[0].activities[1].duration_days: Input should be a valid integer (got '1')",
            id="days-as-text",
        ),
        pytest.param(
            _set(("budget_groups", 3, "days"), -2),
            "budget_groups[3].days: Input should be greater than or equal to 0 (got -2)",
            id="negative-days",
        ),
        pytest.param(
            _set(("stages", 2, "activities", 0, "id"), "back up; rm -rf /"),
            "stages[2].activities[0].id: not a valid id: use 1-63 lower-case letters, digits or '_', "
            "starting with a letter "
            "(got 'back up; rm -rf /')",
            id="unsafe-id",
        ),
        pytest.param(
            _set(("stages", 3, "activities", 0, "stage"), "prod"),
            "stages[3].activities[0].stage: is set by the enclosing stage 'uat'; remove it",
            id="stage-written-wrong",
        ),
    ],
)
def test_malformed_model_is_rejected_naming_the_field(change, message: str) -> None:
    data = _process_data()
    change(data)
    with pytest.raises(ProcessModelError) as caught:
        parse_process_model(data)
    assert f"process.yaml: {message}" in str(caught.value)


def test_every_problem_is_reported_not_just_the_first() -> None:
    data = _process_data()
    data["stages"][2]["activities"][1]["after"] = ["dev.upgrade"]
    data["stages"][3]["activities"][0]["budget_group"] = "nope"
    with pytest.raises(ProcessModelError) as caught:
        parse_process_model(data)
    assert caught.value.problems == (
        "process.yaml: stages[2].activities[1].after[0]: unknown activity 'dev.upgrade'",
        "process.yaml: stages[3].activities[0].budget_group: unknown budget group 'nope'",
    )


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "process.yaml"
    broken.write_text("stages:\n  - id: initiation\n    title: [unclosed\n")
    with pytest.raises(ProcessModelError) as caught:
        load_process_model(broken)
    assert str(caught.value).startswith(f"{broken}: line 4, column 1: invalid YAML:")


def test_duplicate_yaml_key_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    text = DEFAULT_PROCESS_PATH.read_text().replace("    days: 12\n", "    days: 12\n    days: 20\n")
    broken = tmp_path / "process.yaml"
    broken.write_text(text)
    with pytest.raises(ProcessModelError, match=r"found duplicate key 'days' \(first defined on line \d+\)"):
        load_process_model(broken)


def test_loading_is_cached_per_path(tmp_path: Path) -> None:
    assert load_process_model() is load_process_model(DEFAULT_PROCESS_PATH)
    copy_path = tmp_path / "process.yaml"
    copy_path.write_text(DEFAULT_PROCESS_PATH.read_text())
    other = load_process_model(copy_path)
    assert other is not load_process_model() and other == load_process_model()


def test_model_is_immutable(model: ProcessModel) -> None:
    with pytest.raises(ValueError, match="frozen"):
        model.activity("dev.sanity_test").title = "Other"  # type: ignore[misc]
    assert copy.deepcopy(model) == model
