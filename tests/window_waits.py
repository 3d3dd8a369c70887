"""A windowed task (backup or upgrade of globex prod) with a fake clock, ledger, XCom and run settings.

globex prod opens fri/sat 22:00-06:00 and sun 08:00-18:00 (Europe/Berlin); a run started on Monday
2027-01-04 and asked on Wednesday noon waits for Friday 22:00.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from managed_upgrade.config import CustomerConfig, load_customer_config
from managed_upgrade.config.run_settings import RunSettings
from managed_upgrade_airflow.operators import upgrade_window

CUSTOMERS = Path(__file__).resolve().parents[1] / "include" / "customers"
BERLIN = ZoneInfo("Europe/Berlin")
WEDNESDAY_NOON = datetime(2027, 1, 6, 12, tzinfo=BERLIN)
FRIDAY_22 = datetime(2027, 1, 8, 22, tzinfo=BERLIN)  # globex prod: fri/sat 22:00-06:00, sun 08:00-18:00
NEXT_FRIDAY_22 = datetime(2027, 1, 15, 22, tzinfo=BERLIN)
RUN_START = datetime(2027, 1, 4, 9, tzinfo=UTC)


def settings(seconds_per_business_day: float | None = None, rehearse_windows: bool = False) -> RunSettings:
    return RunSettings(
        "GLX-1",
        date(2027, 1, 4),
        date(2027, 1, 11),
        date(2027, 3, 31),
        "Reason",
        "11.0.0",
        seconds_per_business_day,
        rehearse_windows,
    )


class FakeTi:
    """The task instance: its XCom pushes, and the XComs of other tasks it may pull."""

    dag_id, run_id, try_number = "managed_upgrade__globex", "run1", 1

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.xcom: dict[str, object] = {}
        self.upstream: dict[tuple[str, str], object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> object:
        return self.upstream.get((task_ids, key))


class FakeLedger:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.backups: list[dict[str, Any]] = []
        self.pruned: list[list[str]] = []

    def events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.rows)

    def record_event(self, dag_id, run_id, activity_key, event, *, at, try_number=1, detail=None) -> bool:
        self.rows.append(
            {
                "activity_key": activity_key,
                "event": event,
                "try_number": try_number,
                "at": at,
                "detail": detail,
            }
        )
        return True

    def record_backup(self, **row: Any) -> None:
        self.backups.append(row)

    def mark_backups_pruned(self, backup_ids: list[str]) -> None:
        self.pruned.append(list(backup_ids))


@dataclass
class Harness:
    """What a test drives and looks at; ``now`` and ``settings`` may be changed between calls."""

    task: Any
    ti: FakeTi
    ledger: FakeLedger
    config: CustomerConfig
    now: datetime = WEDNESDAY_NOON
    settings: RunSettings = field(default_factory=settings)
    opened_ledgers: list[str] = field(default_factory=list)

    @property
    def context(self) -> dict[str, Any]:
        return {"ti": self.ti, "dag_run": SimpleNamespace(start_date=RUN_START)}

    def wait_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.ledger.rows if row["event"] == "waiting_for_window"]


def globex() -> CustomerConfig:
    return load_customer_config(CUSTOMERS / "globex.yaml")


def install(monkeypatch, harness: Harness, *modules: Any) -> Harness:
    """Fake clock, ledger and run settings for the shared window logic (and ``modules`` using the ledger)."""

    @contextmanager
    def open_ledger(conn_id: str = "managed_upgrade_ledger"):
        harness.opened_ledgers.append(conn_id)
        yield harness.ledger

    monkeypatch.setattr(upgrade_window, "_now", lambda: harness.now.astimezone(UTC))
    monkeypatch.setattr(upgrade_window, "run_settings_from_xcom", lambda context: harness.settings)
    for module in (upgrade_window, *modules):
        monkeypatch.setattr(module, "open_ledger", open_ledger)
    return harness
