"""When an environment's upgrade may start, so it starts only inside the customer's upgrade windows and
never in a change freeze.

An :class:`UpgradeSchedule` holds an environment's weekly upgrade windows, the change freezes that
apply to it (the customer's and the environment's own) and the customer's time zone;
:meth:`UpgradeSchedule.opening` answers, for any instant, whether an upgrade may start then and, if
not, when the next opening is and why it waits. Pure: no Airflow, no I/O; the plan, the SLA clock and
the backup and upgrade operators all ask it. An environment's backup and upgrade both start only in
its windows (:data:`WINDOW_ACTIVITIES`), so the backup protecting an upgrade is taken in the same
window, just before it.

Semantics (the contract the tests check):

* **No windows** means any time (freezes still apply); **no windows and no freezes**:
  :attr:`UpgradeSchedule.always_open`.
* A **window** opens on each of its weekdays at ``start`` and closes at ``end`` the same day, or the
  next day when ``end`` is earlier than ``start`` (overnight: the weekday is the day it opens);
  ``end`` ``None`` is 24:00. Its times are wall-clock times of the customer's zone: a time the clocks
  skip (spring forward) means the instant they jump past it, a repeated time (fall back) its first
  occurrence. So a 01:00-05:00 window lasts 3 h on the spring-forward night and 5 h on the
  fall-back night, and never starts an hour early or late.
* Windows that overlap or touch are one stretch (Mon 22:00-24:00 and Tue 00:00-06:00 close Tuesday
  06:00).
* A **freeze** covers whole local days, ``first_day`` 00:00 to the day after ``last_day`` 00:00; it
  wins over any window.
* :meth:`~UpgradeSchedule.opening` returns the earliest instant at or after the one asked for that
  lies in a window and in no freeze, when that stretch closes (window end or freeze start; ``None``
  without windows and no freeze ahead), and why it waits: ``freeze`` when a freeze covers the asked
  instant, else ``window``; freezes that covered windows before the opening are named too.
* The search looks :data:`HORIZON_DAYS` ahead; with no opening in that time it raises
  :class:`NoUpgradeWindowError` naming the windows and freezes.
* **Starting after a wait** (:meth:`~UpgradeSchedule.may_start`): a task that waited for an opening
  starts if now is open, or if it resumed within :data:`START_GRACE` of the opening it waited for and
  that instant is still an opening (a freeze added meanwhile is honoured; scheduler latency does not
  make it miss a short window, e.g. a compressed one in a rehearsal).
* **Rehearsal** (:class:`CompressedSchedule`): the same schedule seen through the rehearsal clock's
  compression, anchored at the run's start: at real instant ``t`` the schedule reads
  ``anchor + (t - anchor) * 86400 / seconds_per_business_day``, so a week of windows passes in seven
  rehearsal days. A run uses it only when it asks to rehearse windows (see the README).

All instants returned are UTC; arguments may be in any zone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal, Protocol
from zoneinfo import ZoneInfo

from managed_upgrade.sla.calendar import WEEKDAY_NAMES, zone_named

if TYPE_CHECKING:
    from managed_upgrade.config import CustomerConfig

__all__ = [
    "BACKUP_ACTIVITY_ID",
    "HORIZON_DAYS",
    "START_GRACE",
    "UPGRADE_ACTIVITY_ID",
    "WINDOW_ACTIVITIES",
    "CompressedSchedule",
    "Freeze",
    "NoUpgradeWindowError",
    "Opening",
    "StartSchedule",
    "UpgradeSchedule",
    "Window",
    "WindowError",
    "environment_schedule",
    "run_schedule",
    "run_schedules",
    "schedule_for",
]

HORIZON_DAYS = 366
"""How far :meth:`UpgradeSchedule.opening` looks for an opening before it gives up."""

BACKUP_ACTIVITY_ID = "backup_environment"
"""The activity (in each environment's stage) that backs the environment up just before its upgrade."""

UPGRADE_ACTIVITY_ID = "upgrade_environment"
"""The activity (in each environment's stage) that upgrades the environment."""

WINDOW_ACTIVITIES = {BACKUP_ACTIVITY_ID: "the backup", UPGRADE_ACTIVITY_ID: "the upgrade"}
"""The activities (in each environment's stage, in process order) that start only in the environment's
windows, and how a sentence about their wait names them: the backup first, the upgrade right after it."""

START_GRACE = timedelta(seconds=60)
"""How late after the opening it waited for a resumed task may still start (see module rules)."""

WaitingFor = Literal["nothing", "window", "freeze"]

_ONE_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)
_NEVER = datetime.max.replace(tzinfo=UTC)


class WindowError(ValueError):
    """A window, freeze or argument is invalid; the message says which and what to write."""


class NoUpgradeWindowError(WindowError):
    """No upgrade window opens within :data:`HORIZON_DAYS`; the message names windows and freezes."""


def _clock_time(text: str, what: str) -> time | None:
    """``"HH:MM"`` -> time; ``"24:00"`` -> ``None`` (end of day)."""
    if text == "24:00":
        return None
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise WindowError(f"{what} {text!r} is not a time of day written HH:MM") from None


@dataclass(frozen=True)
class Window:
    """One weekly window: ``days`` (0 = Monday), ``start`` to ``end`` local time (``None`` = 24:00)."""

    days: frozenset[int]
    start: time
    end: time | None

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise WindowError(f"window days {sorted(self.days)} must be weekdays 0 (Monday) to 6")
        if self.start == self.end:
            raise WindowError(f"window starts and ends at {self.start:%H:%M}; use 00:00-24:00 for a day")

    @classmethod
    def parse(cls, days: Iterable[str], start: str, end: str) -> Window:
        """From the config's spelling: day names (``mon`` ...) and ``HH:MM`` times."""
        numbers = set()
        for name in days:
            if name not in WEEKDAY_NAMES:
                raise WindowError(f"unknown weekday {name!r}; use one of {', '.join(WEEKDAY_NAMES)}")
            numbers.add(WEEKDAY_NAMES.index(name))
        opens = _clock_time(start, "start")
        if opens is None:
            raise WindowError("a window cannot start at 24:00; start at 00:00 of the next day")
        return cls(frozenset(numbers), opens, _clock_time(end, "end"))

    @property
    def overnight(self) -> bool:
        """Whether it closes on the day after it opens (``end`` 24:00 counts as the same day)."""
        return self.end is not None and self.end < self.start

    def describe(self) -> str:
        """``sat, sun 22:00-04:00 (overnight)``."""
        names = ", ".join(WEEKDAY_NAMES[day] for day in sorted(self.days))
        end = "24:00" if self.end is None else f"{self.end:%H:%M}"
        return f"{names} {self.start:%H:%M}-{end}{' (overnight)' if self.overnight else ''}"


@dataclass(frozen=True)
class Freeze:
    """A change freeze: whole local days ``first_day`` to ``last_day`` (inclusive), why, and for whom."""

    first_day: date
    last_day: date
    reason: str
    scope: str = "all environments"

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise WindowError(
                f"freeze {self.reason!r} ends {self.last_day} before it starts {self.first_day}"
            )

    def describe(self) -> str:
        """``change freeze 'Year-end closing' (2026-12-15 to 2027-01-05, all environments)``."""
        return f"change freeze {self.reason!r} ({self.first_day} to {self.last_day}, {self.scope})"


@dataclass(frozen=True)
class Opening:
    """The answer to "may the upgrade start at ``asked_at``, and if not, when?"."""

    asked_at: datetime
    at: datetime
    """The earliest allowed start at or after ``asked_at`` (equal to it when open now)."""
    closes_at: datetime | None
    """When the allowed stretch beginning at ``at`` ends; ``None``: no end in sight."""
    waiting_for: WaitingFor
    freezes: tuple[Freeze, ...]
    """Freezes that hold the start back (the one covering ``asked_at`` first), in order."""
    zone: ZoneInfo
    schedule_at: datetime
    """``at`` as the schedule reads it (differs from ``at`` only in a compressed rehearsal)."""

    @property
    def is_open(self) -> bool:
        return self.waiting_for == "nothing"

    @property
    def reason(self) -> str:
        """Why the start waits (empty when open): the freeze and its last day, or the windows."""
        if self.waiting_for == "freeze":
            first = self.freezes[0]
            text = f"{first.describe()} until {first.last_day}"
            later = self.freezes[1:]
        elif self.waiting_for == "window":
            text, later = "outside the upgrade windows", self.freezes
        else:
            return ""
        if later:
            text += "; the windows before it fall in " + ", ".join(f.describe() for f in later)
        return text

    def describe(self, subject: str = "the upgrade") -> str:
        """One sentence for logs and views: when ``subject`` may start and why it waits."""
        when = _shown(self.schedule_at, self.zone)
        if self.is_open:
            return f"{subject} may start now ({when})"
        return f"{subject} waits until {when}: {self.reason}"

    def as_dict(self, subject: str = "the upgrade") -> dict[str, object]:
        """JSON-ready, for the task's XCom and the ledger event's detail."""
        return {
            "waiting_for": self.waiting_for,
            "opens_at": self.at.isoformat(),
            "closes_at": None if self.closes_at is None else self.closes_at.isoformat(),
            "reason": self.reason,
            "message": self.describe(subject),
        }


def _shown(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


def _aware(moment: datetime, argument: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise WindowError(f"{argument}={moment!r} must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def _local_instant(day: date, clock: time | None, zone: ZoneInfo) -> datetime:
    """The first instant the wall clock of ``zone`` shows ``day clock`` (``None``: the next midnight);
    for a time the clocks skip, the instant they jump past it."""
    if clock is None:
        day, clock = day + _ONE_DAY, time()
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone).astimezone(UTC)  # fold=0: a repeated time's first occurrence
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    low, high = sorted((naive.replace(tzinfo=zone, fold=1).astimezone(UTC), first))
    while high - low > _MICROSECOND:  # the wall clock passes `naive` once between the two readings
        middle = low + (high - low) // 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high


class StartSchedule(Protocol):
    """What the plan and the upgrade operator ask: a real schedule or one seen in a rehearsal."""

    @property
    def always_open(self) -> bool: ...

    def opening(self, moment: datetime) -> Opening: ...

    def may_start(self, now: datetime, awaited: datetime | None, grace: timedelta = START_GRACE) -> bool: ...


class UpgradeSchedule:
    """An environment's upgrade windows and change freezes in the customer's zone."""

    def __init__(
        self,
        windows: Sequence[Window] = (),
        freezes: Sequence[Freeze] = (),
        timezone: str | ZoneInfo = "UTC",
        *,
        horizon_days: int = HORIZON_DAYS,
    ) -> None:
        self.windows = tuple(windows)
        self.freezes = tuple(dict.fromkeys(freezes))
        self.zone = timezone if isinstance(timezone, ZoneInfo) else zone_named(timezone)
        self.horizon = timedelta(days=horizon_days)

    def __repr__(self) -> str:
        return (
            f"UpgradeSchedule(windows={[w.describe() for w in self.windows]}, "
            f"freezes={[f.describe() for f in self.freezes]}, timezone={self.zone.key!r})"
        )

    @property
    def always_open(self) -> bool:
        return not self.windows and not self.freezes

    def with_freezes(self, freezes: Iterable[Freeze]) -> UpgradeSchedule:
        """The same schedule with ``freezes`` added (duplicates dropped)."""
        return UpgradeSchedule(
            self.windows, (*self.freezes, *freezes), self.zone, horizon_days=self.horizon.days
        )

    def opening(self, moment: datetime) -> Opening:
        """Whether an upgrade may start at ``moment`` and, if not, when and why not (module rules)."""
        asked = _aware(moment, "moment")
        frozen = self._freeze_spans()
        covering = [f for start, end, f in frozen if start <= asked < end]
        holding = sorted(covering, key=lambda f: f.last_day, reverse=True)[:1]
        limit = asked + self.horizon
        for span_start, span_end in self._window_spans(asked):
            if span_start > limit:
                break
            candidate = max(span_start, asked)
            while candidate < span_end:
                freeze = next(((end, f) for start, end, f in frozen if start <= candidate < end), None)
                if freeze is None:
                    break
                candidate = freeze[0]
                if freeze[1] not in holding:
                    holding.append(freeze[1])
            if candidate >= span_end or candidate > limit:
                continue
            closes = min([start for start, _, _ in frozen if start > candidate] + [span_end])
            waiting: WaitingFor = "nothing" if candidate == asked else ("freeze" if covering else "window")
            kept = tuple(holding) if waiting != "nothing" else ()
            shut = None if closes == _NEVER else closes
            return Opening(asked, candidate, shut, waiting, kept, self.zone, candidate)
        raise NoUpgradeWindowError(
            f"no upgrade window opens within {self.horizon.days} days of {_shown(asked, self.zone)}: "
            f"windows {', '.join(w.describe() for w in self.windows) or 'any time'}; "
            f"freezes {', '.join(f.describe() for f in self.freezes) or 'none'}. "
            "Check upgrade_windows and change_freezes in the customer config."
        )

    def may_start(self, now: datetime, awaited: datetime | None, grace: timedelta = START_GRACE) -> bool:
        """Whether a task may start at ``now`` having waited for the opening ``awaited`` (module rules)."""
        now = _aware(now, "now")
        if self.opening(now).is_open:
            return True
        if awaited is None:
            return False
        awaited = _aware(awaited, "awaited")
        return awaited <= now <= awaited + grace and self.opening(awaited).is_open

    # -- internals ---------------------------------------------------------------------------------

    def _freeze_spans(self) -> list[tuple[datetime, datetime, Freeze]]:
        return sorted(
            (
                (
                    _local_instant(f.first_day, time(), self.zone),
                    _local_instant(f.last_day, None, self.zone),
                    f,
                )
                for f in self.freezes
            ),
            key=lambda span: span[0],
        )

    def _window_spans(self, asked: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Window stretches (overlapping or touching windows merged) that end after ``asked``, in order."""
        if not self.windows:
            yield asked, _NEVER
            return
        day = asked.astimezone(self.zone).date() - _ONE_DAY  # an overnight window of yesterday
        last_day = day + self.horizon + 2 * _ONE_DAY
        current: tuple[datetime, datetime] | None = None
        while day <= last_day:
            spans = []
            for window in self.windows:
                if day.weekday() not in window.days:
                    continue
                start = _local_instant(day, window.start, self.zone)
                end_day = day + _ONE_DAY if window.overnight else day
                end = _local_instant(end_day, window.end, self.zone)
                if end > start:
                    spans.append((start, end))
            for start, end in sorted(spans):
                if current is not None and start <= current[1]:
                    current = (current[0], max(current[1], end))
                    continue
                if current is not None and current[1] > asked:
                    yield current
                current = (start, end)
            day += _ONE_DAY
        if current is not None and current[1] > asked:
            yield current


class CompressedSchedule:
    """``schedule`` seen through a rehearsal clock anchored at ``anchor`` (module rules)."""

    def __init__(self, schedule: UpgradeSchedule, anchor: datetime, seconds_per_business_day: float) -> None:
        if not seconds_per_business_day > 0:
            raise WindowError(f"seconds_per_business_day={seconds_per_business_day!r} must be positive")
        self.schedule = schedule
        self.anchor = _aware(anchor, "anchor")
        self.factor = 86_400.0 / float(seconds_per_business_day)

    @property
    def always_open(self) -> bool:
        return self.schedule.always_open

    def _virtual(self, real: datetime) -> datetime:
        return self.anchor + (_aware(real, "moment") - self.anchor) * self.factor

    def _real(self, virtual: datetime) -> datetime:
        """Rounded up to the microsecond, so the schedule reads the result at or after ``virtual``."""
        return self.anchor + _MICROSECOND * math.ceil((virtual - self.anchor) / _MICROSECOND / self.factor)

    def opening(self, moment: datetime) -> Opening:
        real = _aware(moment, "moment")
        seen = self.schedule.opening(self._virtual(real))
        return replace(
            seen,
            asked_at=real,
            at=real if seen.is_open else max(self._real(seen.at), real),
            closes_at=None if seen.closes_at is None else self._real(seen.closes_at),
        )

    def may_start(self, now: datetime, awaited: datetime | None, grace: timedelta = START_GRACE) -> bool:
        now = _aware(now, "now")
        if self.opening(now).is_open:
            return True
        if awaited is None:
            return False
        awaited = _aware(awaited, "awaited")
        return awaited <= now <= awaited + grace and self.opening(awaited).is_open


def schedule_for(config: CustomerConfig, environment: str) -> UpgradeSchedule:
    """The upgrade schedule of ``environment``: its windows, the customer's and its own freezes."""
    env = config.environment(environment)
    windows = [Window.parse(w.days, w.start, w.end) for w in env.upgrade_windows]
    freezes = [Freeze(f.start, f.end, f.reason) for f in config.change_freezes]
    freezes += [Freeze(f.start, f.end, f.reason, scope=environment) for f in env.change_freezes]
    return UpgradeSchedule(windows, freezes, config.calendar.timezone)


def environment_schedule(
    config: CustomerConfig, environment: str, *, freezes_from: CustomerConfig | None = None
) -> UpgradeSchedule:
    """:func:`schedule_for`, plus the freezes ``freezes_from`` declares for ``environment`` (see
    :func:`run_schedules`)."""
    schedule = schedule_for(config, environment)
    if freezes_from is not None and freezes_from is not config:
        schedule = schedule.with_freezes(schedule_for(freezes_from, environment).freezes)
    return schedule


def run_schedule(
    schedule: UpgradeSchedule,
    *,
    anchor: datetime,
    seconds_per_business_day: float | None,
    rehearse_windows: bool,
) -> StartSchedule | None:
    """``schedule`` as a run honours it (see :func:`run_schedules`); ``None``: any time."""
    if schedule.always_open or (seconds_per_business_day is not None and not rehearse_windows):
        return None
    if seconds_per_business_day is None:
        return schedule
    return CompressedSchedule(schedule, anchor, seconds_per_business_day)


def run_schedules(
    config: CustomerConfig,
    *,
    anchor: datetime,
    seconds_per_business_day: float | None,
    rehearse_windows: bool,
    freezes_from: CustomerConfig | None = None,
) -> dict[str, StartSchedule]:
    """The schedules a run honours, by environment name; environments free at any time are left out.

    A real run honours every schedule. A rehearsal (``seconds_per_business_day``) ignores them unless
    ``rehearse_windows``, and then sees them compressed, anchored at ``anchor`` (the run's start).
    ``freezes_from`` (the customer file as it is now, when the run keeps an older snapshot) adds its
    freezes: a freeze declared during a run holds its backups and upgrades back too, while windows stay
    the run's.
    """
    found: dict[str, StartSchedule] = {}
    for name, _ in config.environments.items():
        seen = run_schedule(
            environment_schedule(config, name, freezes_from=freezes_from),
            anchor=anchor,
            seconds_per_business_day=seconds_per_business_day,
            rehearse_windows=rehearse_windows,
        )
        if seen is not None:
            found[name] = seen
    return found
