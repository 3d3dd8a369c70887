"""The SLA clock: budgets run from ready to finish, customer waits pause them and bring reminders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from managed_upgrade.process.model import load_process_model
from managed_upgrade.sla.calendar import BusinessCalendar, RehearsalClock
from managed_upgrade.sla.clock import (
    SlaClockError,
    final_activity_key,
    next_due_at,
    run_is_over,
    sla_state,
)

MODEL = load_process_model()
T0 = datetime(2027, 3, 1, 9, tzinfo=UTC)
SECONDS = 10.0
REHEARSAL = RehearsalClock(SECONDS)
DEV_KEYS = MODEL.budget_unit("development").activity_keys


def day(n: float) -> datetime:
    """T0 plus ``n`` rehearsal business days."""
    return T0 + timedelta(seconds=n * SECONDS)


def ev(key: str, event: str, at: datetime, try_number: int = 1, **detail) -> dict:
    return {"activity_key": key, "event": event, "try_number": try_number, "at": at, "detail": detail}


def state(events, now, *, clock=REHEARSAL, reminder_days=5, model=MODEL):
    return sla_state(model, clock, events, reminder_days=reminder_days, now=now)


def dev_until_sign_off(hand_over_done: float) -> list[dict]:
    """Development's consultant activities from day 0 to ``hand_over_done``; the sign-off is ready then."""
    consultant_keys = [key for key in DEV_KEYS if key != "dev.customer_sign_off"]
    step = hand_over_done / len(consultant_keys)
    events = []
    for index, key in enumerate(consultant_keys):
        events += [
            ev(key, "ready", day(index * step)),
            ev(key, "started", day(index * step)),
            ev(key, "finished", day((index + 1) * step)),
        ]
    return [*events, ev("dev.customer_sign_off", "ready", day(hand_over_done))]


# --- a single activity's budget ------------------------------------------------------------------------

RESPOND = "initiation.respond_to_request"


def test_respond_to_request_answered_late_is_a_miss_by_the_overrun():
    events = [ev(RESPOND, "ready", day(0)), ev(RESPOND, "started", day(0)), ev(RESPOND, "finished", day(1.5))]
    unit = state(events, day(2)).unit("respond_to_request")
    assert unit.status == "finished"
    assert unit.missed
    assert unit.overrun_days == pytest.approx(0.5)
    assert unit.ran_out_at == day(1)
    assert unit.planned_finish == day(1)
    assert unit.due_at is None


def test_respond_to_request_answered_in_time_is_no_miss():
    events = [ev(RESPOND, "ready", day(0)), ev(RESPOND, "finished", day(1))]
    unit = state(events, day(5)).unit("respond_to_request")
    assert (unit.status, unit.missed, unit.overrun_days, unit.consumed_days) == ("finished", False, 0.0, 1.0)


def test_an_unanswered_request_is_due_after_its_budget_and_missed_from_then_on():
    events = [ev(RESPOND, "ready", day(0)), ev(RESPOND, "started", day(0.1))]
    before = state(events, day(0.9)).unit("respond_to_request")
    assert (before.status, before.missed, before.due_at) == ("running", False, day(1))
    at_due = state(events, day(1)).unit("respond_to_request")
    assert at_due.missed and at_due.ran_out_at == day(1) and at_due.overrun_days == 0.0
    later = state(events, day(3)).unit("respond_to_request")
    assert later.missed and later.overrun_days == pytest.approx(2.0)


def test_retries_do_not_restart_the_clock():
    events = [
        ev(RESPOND, "ready", day(0)),
        ev(RESPOND, "started", day(0), try_number=1),
        ev(RESPOND, "failed", day(0.4), try_number=1, terminal=False),
        ev(RESPOND, "started", day(0.6), try_number=2),
        ev(RESPOND, "failed", day(0.7), try_number=2, terminal=False),
        ev(RESPOND, "started", day(0.9), try_number=3),
    ]
    running = state(events, day(0.95)).unit("respond_to_request")
    assert running.started_at == day(0) and running.due_at == day(1)
    finished = state([*events, ev(RESPOND, "finished", day(1.25), try_number=3)], day(2))
    assert finished.unit("respond_to_request").missed
    assert finished.unit("respond_to_request").overrun_days == pytest.approx(0.25)


def test_a_cleared_and_rerun_activity_is_running_again():
    events = [ev(RESPOND, "ready", day(0)), ev(RESPOND, "finished", day(0.5), try_number=1)]
    events.append(ev(RESPOND, "started", day(0.8), try_number=2))
    unit = state(events, day(0.9)).unit("respond_to_request")
    assert unit.status == "running" and unit.due_at == day(1)


def test_an_activity_is_ready_when_its_upstream_finished_even_before_its_task_runs():
    events = [ev(RESPOND, "ready", day(0)), ev(RESPOND, "finished", day(0.5))]
    unit = state(events, day(1)).unit("acknowledge_request_formally")
    assert (unit.status, unit.started_at, unit.due_at) == ("running", day(0.5), day(1.5))
    assert state(events, day(1.5)).unit("acknowledge_request_formally").missed


def test_the_clock_counts_business_days_of_the_customers_calendar():
    berlin = ZoneInfo("Europe/Berlin")
    calendar = BusinessCalendar(timezone="Europe/Berlin")
    friday_4pm = datetime(2027, 3, 5, 16, tzinfo=berlin)
    events = [ev(RESPOND, "ready", friday_4pm)]
    running = state(events, friday_4pm + timedelta(days=2), clock=calendar).unit("respond_to_request")
    assert running.due_at == datetime(2027, 3, 8, 16, tzinfo=berlin)  # Monday, the weekend skipped
    late = [*events, ev(RESPOND, "finished", datetime(2027, 3, 8, 18, tzinfo=berlin))]
    unit = state(late, datetime(2027, 3, 9, tzinfo=UTC), clock=calendar).unit("respond_to_request")
    assert unit.missed and unit.overrun_days == pytest.approx(2 / 24)


def test_units_not_started_have_no_clock_and_nothing_due():
    result = state([], day(100))
    assert all(unit.status == "not_started" and unit.due_at is None for unit in result.units)
    assert result.reminders == () and result.misses == ()
    assert next_due_at(result, day(100)) is None


# --- a group with a customer wait ----------------------------------------------------------------------


def test_customer_sign_off_wait_pauses_development_and_brings_one_reminder():
    events = dev_until_sign_off(hand_over_done=5)
    running = state(events[:-1], day(4.5), reminder_days=2).unit("development")
    assert running.status == "running" and running.due_at == day(12)

    waiting = state(events, day(7.5), reminder_days=2)
    development = waiting.unit("development")
    assert development.status == "paused_on_customer"
    assert development.due_at is None and not development.missed
    assert development.consumed_days == pytest.approx(5)
    assert [
        (r.budget_unit, r.activity_key, r.number, r.wait_started_at, r.due_at) for r in waiting.reminders
    ] == [("development", "dev.customer_sign_off", 1, day(5), day(7))]

    signed = [*events, ev("dev.customer_sign_off", "finished", day(8))]
    done = state(signed, day(20), reminder_days=2)
    development = done.unit("development")
    assert development.status == "finished" and not development.missed
    assert development.consumed_days == pytest.approx(5) and development.paused_days == pytest.approx(3)
    assert development.planned_finish == day(15)  # 12 days of budget, shifted by the 3-day wait
    assert len(done.reminders) == 1  # the wait ended before reminder 2 (day 9) fell due


def test_recorded_sign_off_questions_pause_development_and_a_fix_round_between_them_does_not():
    sign_off = "dev.customer_sign_off"
    events = [
        *dev_until_sign_off(hand_over_done=5),
        ev(sign_off, "started", day(5)),
        ev(sign_off, "waiting_on_customer", day(5), try_number=1),
        ev(sign_off, "resumed", day(6), try_number=1),  # rejected: the consultant fixes from here
        ev(sign_off, "waiting_on_customer", day(7), try_number=2),
    ]
    waiting = state(events, day(7.5)).unit("development")
    assert waiting.status == "paused_on_customer" and waiting.current_activity == sign_off
    assert (waiting.consumed_days, waiting.paused_days) == (pytest.approx(6), pytest.approx(1.5))
    done = state([*events, ev(sign_off, "finished", day(8))], day(9)).unit("development")
    assert done.status == "finished"
    assert (done.consumed_days, done.paused_days) == (pytest.approx(6), pytest.approx(2))
    assert done.planned_finish == day(14)


def test_a_customer_question_inside_development_moves_its_due_time_by_the_wait():
    events = dev_until_sign_off(hand_over_done=5)[:14]  # up to dev.fix_and_retest started
    question = [
        ev("dev.fix_and_retest", "waiting_on_customer", day(4)),
        ev("dev.fix_and_retest", "resumed", day(7)),
    ]
    result = state([*events, *question], day(8), reminder_days=2)
    development = result.unit("development")
    assert development.status == "running"
    assert development.due_at == day(15)
    assert development.paused_days == pytest.approx(3)
    assert [(r.activity_key, r.number, r.due_at) for r in result.reminders] == [
        ("dev.fix_and_retest", 1, day(6))
    ]


def test_a_budget_that_ran_out_before_the_customer_got_the_ball_stays_missed():
    events = dev_until_sign_off(hand_over_done=13)
    result = state(events, day(14))
    development = result.unit("development")
    assert development.status == "paused_on_customer"
    assert development.missed and development.ran_out_at == day(12)
    assert development.overrun_days == pytest.approx(1)


def test_reminders_keep_coming_while_the_customer_waits_and_are_numbered_per_unit():
    events = dev_until_sign_off(hand_over_done=5)
    result = state(events, day(11.5), reminder_days=2)
    assert [(r.number, r.due_at) for r in result.reminders] == [(1, day(7)), (2, day(9)), (3, day(11))]
    assert next_due_at(result, day(11.5)) == day(13)


def test_customer_owned_budget_counts_the_customers_waits():
    # respond_to_request owned by the customer, waiting on the customer for its whole span.
    data = MODEL.model_dump()
    data["stages"][0]["activities"][1].update(owner="customer", waits_on_customer=True)
    customer_model = type(MODEL).model_validate(data)
    events = [ev(RESPOND, "ready", day(0))]
    unit = state(events, day(2), model=customer_model).unit("respond_to_request")
    assert unit.status == "running" and unit.missed and unit.overrun_days == pytest.approx(1)


# --- when to wake up and when the run is over -----------------------------------------------------------


def test_next_due_at_is_the_earliest_of_budget_run_outs_and_reminders():
    events = [ev(RESPOND, "ready", day(0))]
    assert next_due_at(state(events, day(0.5)), day(0.5)) == day(1)
    missed = state(events, day(1.5))
    assert next_due_at(missed, day(1.5)) is None  # already missed; nothing more falls due


def test_run_is_over_when_the_final_activity_finishes_or_a_task_fails_for_good():
    final = final_activity_key(MODEL)
    assert final == "closure.send_completion"
    assert not run_is_over(MODEL, [ev(RESPOND, "failed", day(1), terminal=False)])
    assert run_is_over(MODEL, [ev(RESPOND, "failed", day(1), terminal=True)])
    assert run_is_over(MODEL, [ev(final, "finished", day(60))])
    assert not run_is_over(MODEL, [ev(final, "started", day(60))])


def test_naive_instants_and_unknown_events_are_refused_with_the_row():
    with pytest.raises(SlaClockError, match="timezone-aware"):
        state([ev(RESPOND, "ready", datetime(2027, 3, 1))], day(1))
    with pytest.raises(SlaClockError, match="'paused'"):
        state([ev(RESPOND, "paused", day(0))], day(1))


# --- on any day: the run's facts fall on a fixed "today" (tests/conftest.py) ------------------------------


def test_a_request_ready_today_is_due_one_business_day_later_whatever_the_day(fixed_today):
    calendar, ready = fixed_today.calendar, fixed_today.now
    due = fixed_today.one_business_day_later
    events = [ev(RESPOND, "ready", ready)]
    at_ready = state(events, ready, clock=calendar)
    assert (at_ready.unit("respond_to_request").status, at_ready.unit("respond_to_request").due_at) == (
        "running",
        due,
    )
    assert next_due_at(at_ready, ready) == due
    before = state(events, due - timedelta(microseconds=1), clock=calendar).unit("respond_to_request")
    assert not before.missed and before.consumed_days < 1
    at_due = state(events, due, clock=calendar).unit("respond_to_request")
    assert at_due.missed and at_due.ran_out_at == due and at_due.overrun_days == 0.0
    answered = [*events, ev(RESPOND, "finished", due + timedelta(hours=1))]
    late = state(answered, due + timedelta(days=3), clock=calendar).unit("respond_to_request")
    overrun = calendar.business_days_between(due, due + timedelta(hours=1))
    assert late.missed and late.overrun_days == pytest.approx(overrun)
    assert late.planned_finish == due


def test_a_sign_off_wait_from_today_pauses_development_and_reminds_on_business_days(fixed_today):
    """Development's consultant work took 5 business days up to "today"; the customer signs off 3
    business days later. Whatever today is, the budget counts 5, the wait 3, one reminder (every 2)."""
    calendar, today = fixed_today.calendar, fixed_today.now
    began = calendar.add_business_days(today, -5)
    consultant_keys = [key for key in DEV_KEYS if key != "dev.customer_sign_off"]
    steps = [
        calendar.add_business_days(began, i * 5 / len(consultant_keys)) for i in range(len(consultant_keys))
    ]
    events = []
    for key, start, end in zip(consultant_keys, steps, [*steps[1:], today], strict=True):
        events += [ev(key, "ready", start), ev(key, "finished", end)]
    events.append(ev("dev.customer_sign_off", "ready", today))

    waiting = state(events, today, clock=calendar, reminder_days=2)
    development = waiting.unit("development")
    assert development.status == "paused_on_customer" and not development.missed
    assert development.consumed_days == pytest.approx(5) and development.paused_days == 0
    first_reminder = calendar.add_business_days(today, 2)
    assert next_due_at(waiting, today) == first_reminder

    signed_at = calendar.add_business_days(today, 3)
    done = state(
        [*events, ev("dev.customer_sign_off", "finished", signed_at)],
        signed_at + timedelta(days=1),
        clock=calendar,
        reminder_days=2,
    )
    development = done.unit("development")
    assert development.status == "finished" and not development.missed
    assert development.consumed_days == pytest.approx(5) and development.paused_days == pytest.approx(3)
    assert development.planned_finish == calendar.add_business_days(began, 12 + 3)
    assert [(r.number, r.due_at) for r in done.reminders] == [(1, first_reminder)]


# --- properties ------------------------------------------------------------------------------------------

EIGHTHS = st.integers(min_value=0, max_value=24).map(lambda n: n / 8)


@st.composite
def runs(draw: st.DrawFn) -> list[tuple[str, str, int, float]]:
    """A run's events as (key, event, try, business-day offset), in the process order, maybe partial."""
    order = MODEL.topological_order()
    count = draw(st.integers(min_value=1, max_value=len(order)))
    t = 0.0
    events = []
    for activity in order[:count]:
        events.append((activity.key, "ready", 1, t))
        t += draw(EIGHTHS)
        tries = draw(st.integers(min_value=1, max_value=3))
        for try_number in range(1, tries + 1):
            events.append((activity.key, "started", try_number, t))
            if draw(st.booleans()):
                t += draw(EIGHTHS)
                events.append((activity.key, "waiting_on_customer", try_number, t))
                t += draw(EIGHTHS)
                if draw(st.booleans()):
                    events.append((activity.key, "resumed", try_number, t))
            t += draw(EIGHTHS)
            if try_number < tries:
                events.append((activity.key, "failed", try_number, t))
        events.append((activity.key, "finished", tries, t))
    return events


def materialize(run, clock, start=T0):
    return [ev(key, event, clock.add_business_days(start, offset), n) for key, event, n, offset in run]


def decisions(result):
    """What alerts depend on, in business days: comparable across clocks."""
    units = {unit.id: (unit.status, unit.missed, round(unit.overrun_days, 6)) for unit in result.units}
    return units, [(r.budget_unit, r.activity_key, r.number) for r in result.reminders]


@settings(max_examples=150, deadline=None)
@given(run=runs(), cut=st.integers(min_value=0, max_value=400).map(lambda n: n / 8), days=st.integers(1, 6))
def test_rehearsal_and_real_clock_decide_alike(run, cut, days):
    """One business day as 2 s, as 8 s, or as a whole day of a calendar without weekends: same decisions."""
    clocks = [RehearsalClock(2), RehearsalClock(8), BusinessCalendar(weekend=())]
    results = []
    for clock in clocks:
        events = [row for row in materialize(run, clock) if row["at"] <= clock.add_business_days(T0, cut)]
        results.append(
            decisions(state(events, clock.add_business_days(T0, cut), clock=clock, reminder_days=days))
        )
    assert results[0] == results[1] == results[2]


@settings(max_examples=150, deadline=None)
@given(run=runs(), cuts=st.lists(st.integers(0, 400), min_size=2, max_size=2), days=st.integers(1, 6))
def test_misses_and_reminders_once_due_stay_due_with_the_same_numbers(run, cuts, days):
    """What the watcher claims at one instant is still claimed later: exactly-once alerts rely on it."""
    early, late = (day(c / 8) for c in sorted(cuts))
    events = materialize(run, REHEARSAL)
    before = state([e for e in events if e["at"] <= early], early, reminder_days=days)
    after = state([e for e in events if e["at"] <= late], late, reminder_days=days)
    assert {u.id for u in before.misses} <= {u.id for u in after.misses}
    later_reminders = {(r.budget_unit, r.number): r for r in after.reminders}
    for reminder in before.reminders:
        assert later_reminders[(reminder.budget_unit, reminder.number)] == reminder
    for unit in before.misses:
        assert after.unit(unit.id).ran_out_at == unit.ran_out_at


@settings(max_examples=150, deadline=None)
@given(run=runs(), cut=st.integers(0, 400), days=st.integers(1, 6))
def test_nothing_falls_due_before_next_due_at_and_something_does_at_it(run, cut, days):
    now = day(cut / 8)
    events = [e for e in materialize(run, REHEARSAL) if e["at"] <= now]
    current = state(events, now, reminder_days=days)
    wake = next_due_at(current, now)
    if wake is None:
        assert decisions(state(events, day(cut / 8 + 500), reminder_days=days))[1] == decisions(current)[1]
        assert {u.id for u in state(events, day(cut / 8 + 500), reminder_days=days).misses} == {
            u.id for u in current.misses
        }
        return
    assert wake > now
    just_before = state(events, wake - timedelta(microseconds=1), reminder_days=days)
    assert {u.id for u in just_before.misses} == {u.id for u in current.misses}
    assert just_before.reminders == current.reminders
    at_wake = state(events, wake, reminder_days=days)
    assert len(at_wake.misses) + len(at_wake.reminders) > len(current.misses) + len(current.reminders)


@settings(max_examples=150, deadline=None)
@given(run=runs(), cut=st.integers(0, 400))
def test_consumed_plus_paused_is_the_units_elapsed_business_time(run, cut):
    now = day(cut / 8)
    events = [e for e in materialize(run, REHEARSAL) if e["at"] <= now]
    for unit in state(events, now).units:
        if unit.started_at is None:
            continue
        elapsed = REHEARSAL.business_days_between(unit.started_at, unit.finished_at or now)
        assert unit.consumed_days + unit.paused_days == pytest.approx(elapsed)
        assert unit.paused_days >= 0
        if unit.missed:
            end = unit.finished_at or now
            assert REHEARSAL.business_days_between(unit.planned_finish, end) == pytest.approx(
                unit.overrun_days
            )
        else:
            assert unit.consumed_days <= unit.budget_days + 1e-9


# --- waiting for the upgrade window ----------------------------------------------------------------------

BACKUP, UPGRADE = "dev.backup_environment", "dev.upgrade_environment"


def window_wait(at: datetime, until: datetime | str | None, number: int = 1) -> dict:
    detail = {} if until is None else {"until": until if isinstance(until, str) else until.isoformat()}
    return ev(UPGRADE, "waiting_for_window", at, number, reason="outside the upgrade windows", **detail)


def dev_until_upgrade(upgrade_ready: float) -> list[dict]:
    return [
        ev(BACKUP, "ready", day(0)),
        ev(BACKUP, "started", day(0)),
        ev(BACKUP, "finished", day(upgrade_ready)),
        ev(UPGRADE, "ready", day(upgrade_ready)),
        ev(UPGRADE, "started", day(upgrade_ready)),
    ]


def test_waiting_for_the_window_counts_against_nobody_and_is_shown_as_scheduled():
    events = [*dev_until_upgrade(1), window_wait(day(1), day(9))]
    waiting = state(events, now=day(5)).unit("development")
    assert waiting.status == "waiting_for_window"
    assert waiting.consumed_days == pytest.approx(1)
    assert waiting.scheduled_days == pytest.approx(4) and waiting.paused_days == 0
    budget = waiting.budget_days
    assert waiting.due_at == day(budget + 8)  # known in advance: the wait ends at the opening
    assert not waiting.missed
    (scheduled,) = state(events, now=day(5)).scheduled_waits
    assert (scheduled.activity_key, scheduled.started_at, scheduled.ends_at) == (UPGRADE, day(1), day(9))
    assert scheduled.reason == "outside the upgrade windows"


def test_after_the_opening_the_clock_runs_again_and_a_miss_is_counted_without_the_wait():
    budget = MODEL.budget_unit("development").days
    events = [*dev_until_upgrade(1), window_wait(day(1), day(9))]
    running = state(events, now=day(10)).unit("development")
    assert running.status == "running" and running.scheduled_days == pytest.approx(8)
    assert running.consumed_days == pytest.approx(2)
    late = state(events, now=day(budget + 8 + 1)).unit("development")
    assert late.missed and late.ran_out_at == day(budget + 8)
    assert late.overrun_days == pytest.approx(1)
    assert next_due_at(state(events, now=day(5)), day(5)) == day(budget + 8)


def test_an_upgrade_finished_before_its_planned_opening_ends_the_wait_there():
    events = [*dev_until_upgrade(1), window_wait(day(1), day(9)), ev(UPGRADE, "finished", day(3))]
    (scheduled,) = state(events, now=day(4)).scheduled_waits
    assert scheduled.ends_at == day(3)
    assert state(events, now=day(4)).unit("development").scheduled_days == pytest.approx(2)


def test_a_second_wait_after_a_declared_freeze_is_scheduled_too_and_overlaps_count_once():
    events = [
        *dev_until_upgrade(1),
        window_wait(day(1), day(4), number=1),
        window_wait(day(4), day(8), number=2),
        window_wait(day(3), day(4), number=3),  # a retry that recorded an overlapping wait
    ]
    unit = state(events, now=day(9)).unit("development")
    assert unit.scheduled_days == pytest.approx(7)
    assert unit.consumed_days == pytest.approx(1 + 1)


def test_a_window_wait_pauses_an_activity_with_its_own_budget():
    events = [
        ev(RESPOND, "ready", T0),
        {**ev(RESPOND, "waiting_for_window", T0), "detail": {"until": day(3).isoformat()}},
    ]
    unit = state(events, now=day(4)).unit(MODEL.budget_unit_of(RESPOND).id)
    assert unit.scheduled_days == pytest.approx(3) and unit.consumed_days == pytest.approx(1)


def test_a_window_wait_with_a_naive_until_is_refused_with_the_row():
    events = [*dev_until_upgrade(1), window_wait(day(1), "2027-03-09T09:00:00")]
    with pytest.raises(SlaClockError, match=r"waiting_for_window\) has detail.until='2027-03-09T09:00:00'"):
        state(events, now=day(2))


def test_a_backup_waiting_for_the_window_at_the_start_of_its_budget_pauses_it_from_the_start():
    events = [
        ev(BACKUP, "ready", day(0)),
        ev(BACKUP, "started", day(0)),
        ev(BACKUP, "waiting_for_window", day(0), until=day(4).isoformat(), reason="outside the windows"),
    ]
    waiting = state(events, now=day(2)).unit("development")
    assert waiting.status == "waiting_for_window" and waiting.consumed_days == pytest.approx(0)
    assert waiting.current_activity == BACKUP
    # at the opening the backup and, right after it, the upgrade run: the unit counts from there
    events += [
        ev(BACKUP, "finished", day(4.1)),
        ev(UPGRADE, "ready", day(4.1)),
        ev(UPGRADE, "started", day(4.1)),
    ]
    running = state(events, now=day(5)).unit("development")
    assert running.status == "running" and running.scheduled_days == pytest.approx(4)
    assert running.consumed_days == pytest.approx(1)
    assert running.due_at == day(running.budget_days + 4)
