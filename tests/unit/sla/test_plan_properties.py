"""Property tests: any process shape, calendar and start gives a plan that keeps dependencies and budgets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from managed_upgrade.process.model import ProcessModel, load_process_model, parse_process_model
from managed_upgrade.sla.calendar import BusinessCalendar, RehearsalClock
from managed_upgrade.sla.plan import make_plan, member_budget_days, reforecast

CLOCKS = {
    "utc": BusinessCalendar(),
    "bavaria": BusinessCalendar(timezone="Europe/Berlin", holiday_country="DE", holiday_subdivision="BY"),
    "new_york_fri_sat": BusinessCalendar(timezone="America/New_York", weekend=["fri", "sat"]),
    "rehearsal": RehearsalClock(7.5),
}
# Business time is exact in microseconds; DST days scale it, so sums may differ by a few microseconds.
DAYS_TOLERANCE = 1e-9

clocks = st.sampled_from(sorted(CLOCKS)).map(CLOCKS.__getitem__)
starts = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2029, 12, 31), timezones=st.just(UTC)
)
wait_days = st.integers(min_value=0, max_value=10)


@st.composite
def process_models(draw: st.DrawFn) -> ProcessModel:
    """A random acyclic process: each activity may wait for earlier ones; budgets own, grouped or none."""
    count = draw(st.integers(min_value=1, max_value=14))
    group_days = draw(st.lists(st.integers(min_value=0, max_value=15), min_size=1, max_size=3))
    keys = [f"s.a{index}" for index in range(count)]
    activities = []
    used_groups: set[int] = set()
    for index in range(count):
        budget = draw(st.sampled_from(["none", "own", "group"]))
        activity = {
            "id": f"a{index}",
            "title": f"Activity {index}",
            "seed": False,
            "owner": "consultant",
            "kind": "automated",
            "waits_on_customer": draw(st.booleans()),
            "after": sorted(draw(st.sets(st.sampled_from(keys[:index])))) if index else [],
            "description": ["generated"],
        }
        if budget == "own":
            activity["duration_days"] = draw(st.integers(min_value=0, max_value=9))
        elif budget == "group":
            group = draw(st.integers(min_value=0, max_value=len(group_days) - 1))
            used_groups.add(group)
            activity["budget_group"] = f"g{group}"
        activities.append(activity)
    data = {
        "budget_groups": [
            {"id": f"g{i}", "title": f"Group {i}", "days": days, "owner": "consultant"}
            for i, days in enumerate(group_days)
            if i in used_groups
        ],
        "stages": [{"id": "s", "title": "Stage", "milestone": "Stage", "activities": activities}],
    }
    return parse_process_model(data, "generated")


models = st.one_of(st.just(load_process_model()), process_models())


@settings(max_examples=150, deadline=None)
@given(model=models, clock=clocks, start=starts, customer_wait_days=wait_days)
def test_plan_respects_dependencies_budgets_and_group_windows(model, clock, start, customer_wait_days):
    plan = make_plan(model, clock, start, customer_wait_days=customer_wait_days)
    finishes = {activity.key: activity.planned_finish for activity in plan.activities}
    budgets = member_budget_days(model, customer_wait_days)
    for activity in plan.activities:
        assert activity.planned_finish >= activity.planned_start
        assert activity.planned_start >= start
        upstream = model.activity(activity.key).after
        for key in upstream:
            assert activity.planned_start >= finishes[key]
        # Critical-path planning: no slack before an activity.
        assert activity.planned_start == (max(finishes[key] for key in upstream) if upstream else start)
        days = clock.business_days_between(activity.planned_start, activity.planned_finish)
        assert abs(days - (budgets[activity.key] or 0)) <= DAYS_TOLERANCE
    for unit in plan.budget_units:
        members = [plan.activity(key) for key in unit.activity_keys]
        for member in members:
            assert unit.planned_start <= member.planned_start
            assert member.planned_finish <= unit.planned_finish
        if unit.is_group and any(not member.waits_on_customer for member in members):
            shared = sum(budgets[m.key] for m in members if not m.waits_on_customer)
            assert shared == unit.days


@settings(max_examples=150, deadline=None)
@given(model=models, clock=clocks, start=starts, customer_wait_days=wait_days)
def test_critical_path_is_a_dependency_chain_whose_budgets_add_up_to_the_run(
    model, clock, start, customer_wait_days
):
    plan = make_plan(model, clock, start, customer_wait_days=customer_wait_days)
    path = plan.critical_path
    assert not model.activity(path[0]).after
    assert plan.activity(path[-1]).planned_finish == plan.planned_finish
    for upstream, downstream in itertools.pairwise(path):
        assert upstream in model.activity(downstream).after
        assert plan.activity(upstream).planned_finish == plan.activity(downstream).planned_start
    path_days = sum(plan.activity(key).budget_days or 0 for key in path)
    assert abs(plan.planned_business_days - path_days) <= DAYS_TOLERANCE
    assert plan.variance_days == 0


@settings(max_examples=100, deadline=None)
@given(
    model=models,
    start=starts,
    seconds=st.floats(min_value=0.5, max_value=120),
    customer_wait_days=wait_days,
)
def test_rehearsal_finish_is_start_plus_total_days_in_seconds(model, start, seconds, customer_wait_days):
    plan = make_plan(model, RehearsalClock(seconds), start, customer_wait_days=customer_wait_days)
    path_days = sum(plan.activity(key).budget_days or 0 for key in plan.critical_path)
    expected = start + timedelta(seconds=path_days * seconds)
    assert abs(plan.planned_finish - expected) <= timedelta(microseconds=len(plan.critical_path))


@settings(max_examples=100, deadline=None)
@given(
    model=models,
    clock=clocks,
    start=starts,
    delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
)
def test_reforecast_never_plans_unfinished_work_in_the_past(model, clock, start, delay):
    plan = make_plan(model, clock, start)
    now = start + delay
    forecast = reforecast(plan, {}, now)
    finishes = {activity.key: activity.forecast_finish for activity in forecast.activities}
    for activity in forecast.activities:
        assert activity.forecast_start >= now
        assert activity.forecast_finish >= activity.forecast_start
        for key in model.activity(activity.key).after:
            assert activity.forecast_start >= finishes[key]
        assert activity.forecast_finish >= activity.planned_finish
        assert activity.variance_days >= -DAYS_TOLERANCE
    assert forecast.planned_finish == plan.planned_finish
    assert forecast.variance_days >= -DAYS_TOLERANCE
