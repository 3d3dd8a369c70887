"""The managed-upgrade process as typed data, so DAGs, plans and SLA clocks all read one source of truth.

``include/process.yaml`` lists the stages (DAG task groups), their activities (tasks) with owner role,
kind, dependencies and duration budget. :func:`load_process_model` parses and checks it; a broken file
raises :class:`ProcessModelError` with one ``"<file>: <field.path>: <problem>"`` line per problem.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, model_validator

from managed_upgrade.input_files import InputFileError, read_yaml_mapping
from managed_upgrade.vocabulary import Slug, field_error, field_errors, format_errors

DEFAULT_PROCESS_PATH = Path(__file__).resolve().parents[2] / "process.yaml"


class Role(StrEnum):
    """Who owns an activity, and whose contacts and users a customer config lists.

    Customers have no Airflow users; their gates are answered for them.
    """

    CUSTOMER = "customer"
    CONSULTANT = "consultant"
    PROJECT_MANAGER = "project_manager"


class GateResponder(StrEnum):
    """Roles with Airflow users who may answer a human gate (the same values as in :class:`Role`)."""

    CONSULTANT = Role.CONSULTANT.value
    PROJECT_MANAGER = Role.PROJECT_MANAGER.value


USER_ROLES: tuple[Role, ...] = (Role.CONSULTANT, Role.PROJECT_MANAGER)
"""The roles with Airflow users (a customer config's ``users``): those of :class:`GateResponder`."""

Kind = Literal["automated", "human_gate"]


class ProcessModelError(InputFileError):
    """``process.yaml`` is unreadable or inconsistent (or an override does not fit it)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetGroup(_Frozen):
    """One duration budget shared by several activities (the seed gives one duration for the group)."""

    id: Slug
    title: str = Field(min_length=1)
    days: StrictInt = Field(ge=0)
    owner: Role


class Activity(_Frozen):
    """One task of the process: who owns it, whether a human answers it, what it waits for."""

    stage: Slug = Field(description="Set from the enclosing stage; not written in process.yaml.")
    id: Slug
    title: str = Field(min_length=1)
    seed_title: str | None = Field(
        default=None, description="The seed's exact wording where `title` corrects it (e.g. a typo)."
    )
    seed: StrictBool = Field(description="True if the seed table has this row.")
    seed_activity: str | None = Field(default=None, description="The seed table's Activity column.")
    owner: Role
    kind: Kind
    answered_by: GateResponder | None = None
    waits_on_customer: StrictBool = False
    duration_days: StrictInt | None = Field(default=None, ge=0)
    budget_group: Slug | None = None
    after: tuple[str, ...] = ()
    description: tuple[str, ...] = Field(min_length=1)

    @property
    def key(self) -> str:
        """``"<stage>.<id>"``: unique in the model and the Airflow task id inside its task group."""
        return f"{self.stage}.{self.id}"

    @property
    def is_gate(self) -> bool:
        return self.kind == "human_gate"

    @property
    def budget_unit_id(self) -> str | None:
        """Id of the budget this activity counts against; ``None`` when it has no budget."""
        if self.budget_group is not None:
            return self.budget_group
        return self.id if self.duration_days is not None else None

    @model_validator(mode="after")
    def _check_fields_fit_together(self) -> Activity:
        problems = []
        if self.duration_days is not None and self.budget_group is not None:
            problems.append(("budget_group", "has both its own duration_days and a budget_group; keep one"))
        if self.kind == "human_gate" and self.answered_by is None:
            problems.append(("answered_by", "a human_gate needs the role that answers it"))
        if self.kind == "automated" and self.answered_by is not None:
            problems.append(("answered_by", "only a human_gate is answered; remove it"))
        if self.seed_title is not None and not self.seed:
            problems.append(("seed_title", "only a seed row has a seed_title"))
        if self.seed and not self.seed_activity:
            problems.append(("seed_activity", "a seed row names the seed table's Activity column"))
        if problems:
            raise field_errors(problems)
        return self


class Stage(_Frozen):
    """A DAG task group: a seed milestone or one environment's upgrade."""

    id: Slug
    title: str = Field(min_length=1)
    milestone: str = Field(min_length=1, description="The seed table's Milestone column.")
    activities: tuple[Activity, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _give_activities_their_stage(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("activities"), list | tuple):
            return data
        stage_id = data.get("id")
        activities = []
        for index, activity in enumerate(data["activities"]):
            if not isinstance(activity, dict):
                activities.append(activity)
                continue
            if activity.get("stage", stage_id) != stage_id:
                raise field_error(
                    f"activities[{index}].stage", f"is set by the enclosing stage {stage_id!r}; remove it"
                )
            activities.append({**activity, "stage": stage_id})
        return {**data, "activities": activities}


@dataclass(frozen=True)
class BudgetUnit:
    """A budget the SLA clock counts: a budget group or one activity with its own duration."""

    id: str
    title: str
    days: int
    owner: Role
    activity_keys: tuple[str, ...]
    is_group: bool


class ProcessModel(_Frozen):
    """The whole process: budget groups and the ordered stages with their activities."""

    budget_groups: tuple[BudgetGroup, ...] = ()
    stages: tuple[Stage, ...] = Field(min_length=1)

    @functools.cached_property
    def activities(self) -> tuple[Activity, ...]:
        """Every activity in file order."""
        return tuple(activity for stage in self.stages for activity in stage.activities)

    @functools.cached_property
    def activities_by_key(self) -> dict[str, Activity]:
        return {activity.key: activity for activity in self.activities}

    def activity(self, key: str) -> Activity:
        """The activity with key ``"<stage>.<id>"``; ``KeyError`` names the known keys."""
        try:
            return self.activities_by_key[key]
        except KeyError:
            raise KeyError(f"unknown activity {key!r}; known: {', '.join(self.activities_by_key)}") from None

    def stage(self, stage_id: str) -> Stage:
        """The stage with this id."""
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(f"unknown stage {stage_id!r}; known: {', '.join(s.id for s in self.stages)}")

    @functools.cached_property
    def budget_units(self) -> tuple[BudgetUnit, ...]:
        """Every budget, ordered by its first activity: groups and activities with their own days."""
        groups = {group.id: group for group in self.budget_groups}
        units: dict[str, BudgetUnit] = {}
        for activity in self.activities:
            unit_id = activity.budget_unit_id
            if unit_id is None:
                continue
            if activity.budget_group is None:
                units[unit_id] = BudgetUnit(
                    id=unit_id,
                    title=activity.title,
                    days=activity.duration_days or 0,
                    owner=activity.owner,
                    activity_keys=(activity.key,),
                    is_group=False,
                )
            elif unit_id in units:
                existing = units[unit_id]
                units[unit_id] = BudgetUnit(
                    **{**existing.__dict__, "activity_keys": (*existing.activity_keys, activity.key)}
                )
            else:
                group = groups[unit_id]
                units[unit_id] = BudgetUnit(
                    id=group.id,
                    title=group.title,
                    days=group.days,
                    owner=group.owner,
                    activity_keys=(activity.key,),
                    is_group=True,
                )
        return tuple(units.values())

    def budget_unit(self, unit_id: str) -> BudgetUnit:
        """The budget unit with this id (a group id or the id of an activity with its own days)."""
        for unit in self.budget_units:
            if unit.id == unit_id:
                return unit
        raise KeyError(f"unknown budget {unit_id!r}; known: {', '.join(u.id for u in self.budget_units)}")

    def budget_unit_of(self, key: str) -> BudgetUnit | None:
        """The budget the activity ``key`` counts against, ``None`` if it has none."""
        unit_id = self.activity(key).budget_unit_id
        return None if unit_id is None else self.budget_unit(unit_id)

    def with_overrides(self, overrides: Mapping[str, int]) -> ProcessModel:
        """A copy with some budgets changed, e.g. ``{"development": 15}`` (ids of :attr:`budget_units`)."""
        known = {unit.id for unit in self.budget_units}
        problems = []
        for unit_id, days in overrides.items():
            if unit_id not in known:
                problems.append(
                    f"duration_overrides: {unit_id}: unknown budget; known: {', '.join(sorted(known))}"
                )
            elif not isinstance(days, int) or isinstance(days, bool) or days < 0:
                problems.append(f"duration_overrides: {unit_id}: must be a whole number of days >= 0")
        if problems:
            raise ProcessModelError("duration_overrides", problems)
        if not overrides:
            return self
        data = self.model_dump()
        for group in data["budget_groups"]:
            group["days"] = overrides.get(group["id"], group["days"])
        for stage in data["stages"]:
            for activity in stage["activities"]:
                if activity["budget_group"] is None and activity["duration_days"] is not None:
                    activity["duration_days"] = overrides.get(activity["id"], activity["duration_days"])
        return ProcessModel.model_validate(data)

    def topological_order(self) -> tuple[Activity, ...]:
        """Activities with every dependency before its dependents; ties keep file order."""
        position = {activity.key: index for index, activity in enumerate(self.activities)}
        waiting_on = {activity.key: set(activity.after) for activity in self.activities}
        dependents: dict[str, list[str]] = {key: [] for key in position}
        for activity in self.activities:
            for upstream in activity.after:
                dependents[upstream].append(activity.key)
        ready = [position[key] for key, upstream in waiting_on.items() if not upstream]
        heapq.heapify(ready)
        order = []
        while ready:
            activity = self.activities[heapq.heappop(ready)]
            order.append(activity)
            for dependent in dependents[activity.key]:
                waiting_on[dependent].discard(activity.key)
                if not waiting_on[dependent]:
                    heapq.heappush(ready, position[dependent])
        return tuple(order)

    @model_validator(mode="after")
    def _check_references(self) -> ProcessModel:
        problems = _reference_problems(self)
        if problems:
            raise field_errors(problems)
        return self


def _reference_problems(model: ProcessModel) -> list[tuple[str, str]]:
    """Problems between parts of the model: duplicates, dangling references, cycles, empty groups."""
    problems = _duplicate_problems(model)
    problems += _dependency_problems(model)
    problems += _budget_problems(model)
    if not problems and (cycle := _find_cycle(model)):
        problems.append(("stages", f"dependency cycle: {' -> '.join(cycle)}"))
    return problems


def _located_activities(model: ProcessModel) -> list[tuple[str, Activity]]:
    return [
        (f"stages[{s_index}].activities[{a_index}]", activity)
        for s_index, stage in enumerate(model.stages)
        for a_index, activity in enumerate(stage.activities)
    ]


def _duplicate_problems(model: ProcessModel) -> list[tuple[str, str]]:
    problems = []
    for label, path, ids in (
        ("budget group", "budget_groups", [group.id for group in model.budget_groups]),
        ("stage", "stages", [stage.id for stage in model.stages]),
    ):
        seen: set[str] = set()
        for index, item_id in enumerate(ids):
            if item_id in seen:
                problems.append((f"{path}[{index}].id", f"duplicate {label} {item_id!r}"))
            seen.add(item_id)
    keys: set[str] = set()
    for where, activity in _located_activities(model):
        if activity.key in keys:
            problems.append((f"{where}.id", f"duplicate activity {activity.key!r}"))
        keys.add(activity.key)
    return problems


def _dependency_problems(model: ProcessModel) -> list[tuple[str, str]]:
    keys = {activity.key for activity in model.activities}
    problems = []
    for where, activity in _located_activities(model):
        for index, upstream in enumerate(activity.after):
            if upstream == activity.key:
                problems.append((f"{where}.after[{index}]", "an activity cannot wait for itself"))
            elif upstream not in keys:
                problems.append((f"{where}.after[{index}]", f"unknown activity {upstream!r}"))
    return problems


def _budget_problems(model: ProcessModel) -> list[tuple[str, str]]:
    group_ids = {group.id for group in model.budget_groups}
    used_groups: set[str] = set()
    owners_of_own_budgets: dict[str, str] = {}
    problems = []
    for where, activity in _located_activities(model):
        if activity.budget_group is not None:
            used_groups.add(activity.budget_group)
            if activity.budget_group not in group_ids:
                problems.append((f"{where}.budget_group", f"unknown budget group {activity.budget_group!r}"))
        elif activity.duration_days is not None:
            if activity.id in group_ids or activity.id in owners_of_own_budgets:
                clash = owners_of_own_budgets.get(activity.id, f"budget group {activity.id!r}")
                problems.append(
                    (f"{where}.id", f"budget id {activity.id!r} is already used by {clash}; rename one")
                )
            owners_of_own_budgets[activity.id] = f"activity {activity.key!r}"
    for index, group in enumerate(model.budget_groups):
        if group.id not in used_groups:
            problems.append((f"budget_groups[{index}]", f"budget group {group.id!r} has no activities"))
    return problems


def _find_cycle(model: ProcessModel) -> list[str]:
    """One dependency cycle as a list of keys (first key repeated at the end), or ``[]``."""
    after = {activity.key: activity.after for activity in model.activities}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(key: str) -> list[str]:
        state[key] = 1
        path.append(key)
        for upstream in after[key]:
            if state.get(upstream) == 1:
                return [*path[path.index(upstream) :], upstream]
            if upstream not in state and (cycle := visit(upstream)):
                return cycle
        path.pop()
        state[key] = 2
        return []

    for key in after:
        if key not in state and (cycle := visit(key)):
            return cycle
    return []


def parse_process_model(data: Mapping[str, Any], source: str = "process.yaml") -> ProcessModel:
    """Validate already-parsed process data; errors name ``source`` and the field path."""
    try:
        return ProcessModel.model_validate(data)
    except ValidationError as exc:
        raise ProcessModelError(source, format_errors(exc, source)) from None


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path) -> ProcessModel:
    return parse_process_model(read_yaml_mapping(path, ProcessModelError), str(path))


def load_process_model(path: Path | str | None = None) -> ProcessModel:
    """Load and check ``process.yaml`` (default: the one next to this package); cached per path."""
    return _load_cached(Path(path or DEFAULT_PROCESS_PATH).resolve())
