"""SLA alert latency and duplicates with many rehearsal runs watched at once, vs a bare timer per alert.

    .venv/bin/python benchmarks/bench_sla_alerts.py [--runs 20] [--seconds-per-day 1.5]
                                                    [--restart graceful|overlap] [--no-webhook]

Drives the product's :class:`SlaWatchTrigger` the way Airflow's triggerer does: one asyncio event loop,
one trigger per run, each rebuilt from ``serialize()`` and its ``run()`` iterated, blocking work in the
loop's default thread pool. Everything else is real and on this machine: a fresh PostgreSQL ledger
(created, migrated with ``managed_upgrade.ledger.migrate``, dropped at the end), an SMTP sink
(aiosmtpd) and a webhook receiver on 127.0.0.1 that note when each alert arrives.

Each run (customer ``acme``, reminder budget 2 business days) gets the activity events the activity
listener would write, written at their own instants by a thread on its own ledger connection: six
budget units become ready/started at staggered times and never finish (six SLA misses), two customer
sign-offs wait on the customer (two reminders each) and are answered later; runs start 0.6 business
days apart. Halfway through, 50 ms after the biggest burst of due alerts, every trigger is cancelled
and new instances are started for the same runs: ``graceful`` (default) lets the old triggers'
in-flight blocking calls finish first, as before a triggerer process exits; ``overlap`` does not, so
old and new watchers of a run briefly run together (a trigger Airflow runs twice, or one moved to
another triggerer). Each run ends with its final activity's ``finished`` event.

Latency of an alert = its arrival at the sink - its due instant from the ledger
(``sla_misses.planned_finish``, ``customer_reminders.due_at``), checked against the instants the
SLA clock (``managed_upgrade.sla.clock``) computes from the events written. Duplicates = arrivals
beyond one per (run, unit[, reminder number]) per channel. Baseline, in the same loop and the same
run: a bare ``asyncio.sleep`` until each alert's due instant (what a perfect scheduler achieves under
this load). Prints both distributions and their ratios (goal: p95 <= 5 s, no duplicate).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import logging
import math
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for sub in ("include", "plugins", "scripts"):
    sys.path.insert(0, str(ROOT / sub))

os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the triggers' per-alert info lines

import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

from managed_upgrade.config import load_customer_config  # noqa: E402
from managed_upgrade.config.models import CustomerWait  # noqa: E402
from managed_upgrade.ledger import Ledger, migrate  # noqa: E402
from managed_upgrade.sla.calendar import calendar_for  # noqa: E402
from managed_upgrade.sla.clock import final_activity_key, sla_state  # noqa: E402

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CUSTOMER = "acme"
REMINDER_DAYS = 2
RUN_STAGGER_DAYS = 0.6
LATENCY_GOAL = 5.0
WARMUP_SECONDS = 3.0
END_GRACE_SECONDS = 60.0
RESTART_AFTER_BURST_SECONDS = 0.05
"""The restart comes this long after the biggest burst of due alerts mid-run (sends in flight)."""

# One run's events, in business days after the run's own start: (day, activity key, events).
# Six units start and never finish (misses at their budget: 1, 1, 4, 4, 3, 8 days); two customer
# sign-offs wait from day 2 and 9 and are answered 5.5 days later (reminders 1 and 2 each).
START_EVENTS = ("ready", "started")
SCHEDULE: list[tuple[float, str, tuple[str, ...]]] = [
    (0.0, "initiation.respond_to_request", START_EVENTS),  # miss at 1
    (1.0, "initiation.inventory_dev_system", START_EVENTS),  # analyse: miss at 5
    (2.0, "dev.customer_sign_off", (*START_EVENTS, "waiting_on_customer")),  # reminders at 4, 6
    (3.0, "uat.backup_environment", START_EVENTS),  # uat: miss at 11
    (6.0, "initiation.acknowledge_request_formally", START_EVENTS),  # miss at 7
    (7.5, "dev.customer_sign_off", ("resumed",)),  # development then runs: miss at 19.5
    (9.0, "preparation.verify_test_cases_dev", START_EVENTS),  # test case verification: miss at 13
    (9.0, "prod.customer_sign_off", (*START_EVENTS, "waiting_on_customer")),  # reminders at 11, 13
    (14.0, "preparation.stage_upgrade_files", START_EVENTS),  # upgrade preparation: miss at 17
    (14.5, "prod.customer_sign_off", ("resumed",)),  # prod then runs: miss at 22.5
]
RUN_END_DAY = 18.0
"""Each run's final activity finishes then (its watcher ends); after every planned alert is due."""

log = logging.getLogger("bench_sla_alerts")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------- receivers


@dataclass
class Arrivals:
    """What reached the sinks: (arrival instant, alert key) per channel, alert key = (run, kind, unit, n)."""

    email: list[tuple[datetime, tuple[str, str, str, int | None]]] = field(default_factory=list)
    webhook: list[tuple[datetime, tuple[str, str, str, int | None]]] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def email_key(message: email.message.EmailMessage) -> tuple[str, str, str, int | None]:
    """(run_id, kind, budget unit, reminder number) from the alert e-mail's subject and facts."""
    subject = str(message["Subject"])
    body = message.get_body(preferencelist=("plain",))
    facts: dict[str, str] = {}
    for line in (body.get_content() if body is not None else "").splitlines():
        label, sep, value = line.partition(":")
        if sep and label.strip() in {"Activity", "Run", "Reminder"}:
            facts[label.strip()] = value.strip()
    run_id = facts["Run"].split(" / ", 1)[1]
    unit = facts["Activity"].rsplit("(", 1)[1].rstrip(")")
    if subject.startswith("Reminder "):
        return run_id, "reminder", unit, int(facts["Reminder"])
    return run_id, "miss", unit, None


class SmtpSink:
    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = datetime.now(UTC)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.arrivals.lock:
            try:
                self.arrivals.email.append((at, email_key(message)))
            except (KeyError, IndexError, ValueError):
                self.arrivals.unparsed.append(str(message["Subject"]))
        return "250 OK"


def webhook_server(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = datetime.now(UTC)
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            alert = payload.get("alert", {})
            kind = {"sla_miss": "miss", "customer_reminder": "reminder"}.get(alert.get("kind"), "?")
            number = alert.get("number") if kind == "reminder" else None
            with arrivals.lock:
                arrivals.webhook.append((at, (alert.get("run_id"), kind, alert.get("budget_unit"), number)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ------------------------------------------------------------------------------- the runs


@dataclass(frozen=True)
class Event:
    at: datetime
    run_id: str
    activity_key: str
    event: str


def plan_events(run_ids: list[str], t0: datetime, seconds_per_day: float, final_key: str) -> list[Event]:
    events = []
    for index, run_id in enumerate(run_ids):
        start = index * RUN_STAGGER_DAYS
        for day, key, kinds in SCHEDULE:
            at = t0 + timedelta(seconds=(start + day) * seconds_per_day)
            events += [Event(at, run_id, key, kind) for kind in kinds]
        end = t0 + timedelta(seconds=(start + RUN_END_DAY) * seconds_per_day)
        events.append(Event(end, run_id, final_key, "finished"))
    return sorted(events, key=lambda e: e.at)


def restart_instant(expected: dict[Any, datetime]) -> datetime:
    """The due instant with the most alerts in the middle third: restart while they are being sent."""
    dues = sorted(expected.values())
    middle = dues[len(dues) // 3 : 2 * len(dues) // 3] or dues
    return max(
        middle,
        key=lambda at: (sum(1 for d in dues if d == at), -abs((at - dues[len(dues) // 2]).total_seconds())),
    )


def write_events(
    dsn: str, dag_id: str, events: list[Event], stop: threading.Event, lags: list[float]
) -> None:
    """The activity listener's part: each event written at its own instant, on its own connection.

    ``lags``: how late each write committed after its instant (a late ``resumed`` can let a watcher
    legitimately send one more reminder than the replay of the final events expects).
    """
    connection = psycopg2.connect(dsn)
    ledger = Ledger(connection)
    try:
        for item in events:
            delay = (item.at - datetime.now(UTC)).total_seconds()
            if delay > 0 and stop.wait(delay):
                return
            ledger.record_event(dag_id, item.run_id, item.activity_key, item.event, at=item.at)
            lags.append((datetime.now(UTC) - item.at).total_seconds())
    finally:
        connection.close()


def expected_alerts(
    config: Any, events: list[Event], seconds_per_day: float
) -> dict[tuple[str, str, str, int | None], datetime]:
    """Every alert the SLA clock says falls due before each run's end, with its due instant."""
    model, clock = config.process_model(), calendar_for(config.calendar, seconds_per_day)
    expected: dict[tuple[str, str, str, int | None], datetime] = {}
    for run_id in sorted({e.run_id for e in events}):
        rows = [
            {"activity_key": e.activity_key, "event": e.event, "try_number": 1, "at": e.at, "detail": {}}
            for e in events
            if e.run_id == run_id
        ]
        end = max(row["at"] for row in rows)
        state = sla_state(model, clock, rows, reminder_days=config.customer_wait.reminder_days, now=end)
        for unit in state.misses:
            expected[(run_id, "miss", unit.id, None)] = unit.ran_out_at
        for reminder in state.reminders:
            expected[(run_id, "reminder", reminder.budget_unit, reminder.number)] = reminder.due_at
    return expected


# ------------------------------------------------------------------------------- measuring


async def bare_timer(due: datetime, lateness: list[float]) -> None:
    """The baseline: sleep until ``due`` in the same loop, note how late the wake-up was."""
    await asyncio.sleep(max((due - datetime.now(UTC)).total_seconds(), 0.0))
    lateness.append((datetime.now(UTC) - due).total_seconds())


def make_triggers(config_json: dict[str, Any], dag_id: str, run_ids: list[str], spd: float) -> list[Any]:
    """One trigger per run, rebuilt from its serialized form as the triggerer does."""
    from managed_upgrade_airflow.triggers.sla_watch_trigger import SlaWatchTrigger

    triggers = []
    for run_id in run_ids:
        made = SlaWatchTrigger(
            dag_id=dag_id,
            run_id=run_id,
            config=config_json,
            config_source=f"{CUSTOMER}.yaml",
            base_url="http://localhost:8080",
            seconds_per_business_day=spd,
        )
        _, kwargs = made.serialize()
        triggers.append(SlaWatchTrigger(**kwargs))
    return triggers


def warm_up(config_json: dict[str, Any], dag_id: str, spd: float) -> None:
    """Load what a triggerer that has been running a while has loaded (modules, first connections).

    Otherwise the first imports (Airflow's SDK, the SMTP provider, httpx) hold the interpreter for
    seconds while the first alerts fall due, which says nothing about a running triggerer.
    """
    import httpx  # noqa: F401  (the webhook notifier's lazy imports)
    import tenacity  # noqa: F401

    import managed_upgrade_airflow.notifiers.alert_delivery  # noqa: F401

    (trigger,) = make_triggers(config_json, dag_id, [f"warm_up__{uuid.uuid4().hex[:8]}"], spd)
    watch = trigger.make_watch()
    try:
        watch.read_state(datetime.now(UTC))
    finally:
        watch.close()


async def consume(trigger: Any) -> list[Any]:
    return [event async for event in trigger.run()]


@dataclass
class Outcome:
    baseline: list[float]
    restart_seconds: float
    restart_at: datetime
    summaries: list[dict[str, Any]]
    """The results of the triggers started at the restart."""


async def drive(
    config: Any,
    dag_id: str,
    run_ids: list[str],
    spd: float,
    expected: dict[Any, datetime],
    restart_at: datetime,
    restart: str,
    t_end: datetime,
) -> Outcome:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(thread_name_prefix="triggerer")  # the default size, as in the triggerer
    loop.set_default_executor(pool)
    config_json = config.model_dump(mode="json", exclude_unset=True)
    lateness: list[float] = []
    timers = [asyncio.create_task(bare_timer(due, lateness)) for due in expected.values()]
    first = make_triggers(config_json, dag_id, run_ids, spd)
    watchers = {run_id: asyncio.create_task(consume(t)) for run_id, t in zip(run_ids, first, strict=True)}

    await asyncio.sleep(max((restart_at - datetime.now(UTC)).total_seconds(), 0.0))
    # Triggerer restart: cancel every trigger; "graceful": let their in-flight blocking calls end (as
    # before a process exits); "overlap": do not wait (the old calls still run while the new triggers
    # start, as when a trigger moves to another triggerer); then new instances for the same runs.
    started = time.monotonic()
    # Only triggers still running are restarted: one that fired its event (its run is over) is gone.
    running = [run_id for run_id, watcher in watchers.items() if not watcher.done()]
    for run_id in running:
        watchers[run_id].cancel()
    await asyncio.gather(*(watchers[run_id] for run_id in running), return_exceptions=True)
    if restart == "graceful":
        with ThreadPoolExecutor(1) as helper:
            await loop.run_in_executor(helper, pool.shutdown, True)
    else:
        pool.shutdown(wait=False)
    pool = ThreadPoolExecutor(thread_name_prefix="triggerer")
    loop.set_default_executor(pool)
    restarted = make_triggers(config_json, dag_id, running, spd)
    watchers |= {
        run_id: asyncio.create_task(consume(t)) for run_id, t in zip(running, restarted, strict=True)
    }
    restart_seconds = time.monotonic() - started

    timeout = (t_end - datetime.now(UTC)).total_seconds() + END_GRACE_SECONDS
    done = await asyncio.wait_for(asyncio.gather(*watchers.values()), timeout)
    await asyncio.gather(*timers)
    summaries = [
        events[0].payload for run_id, events in zip(watchers, done, strict=True) if run_id in running
    ]
    pool.shutdown(wait=True)
    return Outcome(lateness, restart_seconds, restart_at, summaries)


# ------------------------------------------------------------------------------- reporting


def distribution(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "median": float("nan"), "p95": float("nan"), "max": float("nan")}
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
    return {"n": len(ordered), "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def latencies(
    arrivals: list[tuple[datetime, Any]], due: dict[Any, datetime]
) -> tuple[list[float], int, list[Any], list[Any]]:
    """Latency of each alert's first arrival, duplicates, expected alerts missing, unexpected ones."""
    first: dict[Any, datetime] = {}
    duplicates = 0
    for at, key in sorted(arrivals, key=lambda item: item[0]):
        if key in first:
            duplicates += 1
        else:
            first[key] = at
    values = [(at - due[key]).total_seconds() for key, at in first.items() if key in due]
    return values, duplicates, sorted(set(due) - set(first), key=str), sorted(set(first) - set(due), key=str)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def report(args: argparse.Namespace, spd: float, data: dict[str, Any]) -> None:
    out = print
    base = distribution(data["baseline"])
    rows = [("bare `asyncio.sleep` until due (baseline)", base)]
    rows.append(("SlaWatchTrigger -> SMTP sink (e-mail)", distribution(data["email"])))
    if data["webhook"] is not None:
        rows.append(("SlaWatchTrigger -> webhook receiver", distribution(data["webhook"])))
    rows.append(("SlaWatchTrigger, ledger `notified_at` (sent)", distribution(data["sent"])))
    out()
    out(
        f"## SLA alerts: {args.runs} runs in one event loop, {spd:g} s per business day, "
        f"{data['expected']} alerts due, triggerer restarted once"
    )
    out()
    out("| latency after the due instant | alerts | median | p95 | max |")
    out("|---|---:|---:|---:|---:|")
    for name, dist in rows:
        out(f"| {name} | {dist['n']} | {fmt(dist['median'])} | {fmt(dist['p95'])} | {fmt(dist['max'])} |")
    mail = distribution(data["email"])
    out(
        f"| **ratio e-mail / baseline** | | **{mail['median'] / base['median']:.1f}x** "
        f"| **{mail['p95'] / base['p95']:.1f}x** | {mail['max'] / base['max']:.1f}x |"
    )
    out()
    out("| exactly once | count |")
    out("|---|---:|")
    for name, value in data["counts"]:
        out(f"| {name} | {value} |")
    out()
    verdict = "reached" if mail["p95"] <= LATENCY_GOAL and data["duplicates"] == 0 else "NOT reached"
    out(
        f"Goal p95 <= {LATENCY_GOAL:g} s and 0 duplicates: **{verdict}** (e-mail p95 {fmt(mail['p95'])}, "
        f"duplicates: {data['duplicates']} (e-mail + webhook + ledger)). "
        f"Restart ({args.restart}) at {data['restart_at']:%H:%M:%S.%f}"
        f" took {data['restart_seconds']:.2f} s, {data['burst']} alerts fell due 50 ms before it; "
        "load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}."
    )


# ------------------------------------------------------------------------------- main


def bench(args: argparse.Namespace) -> None:
    from aiosmtpd.controller import Controller

    spd = args.seconds_per_day
    base_config = load_customer_config(ROOT / "include" / "customers" / f"{CUSTOMER}.yaml")
    config = base_config.model_copy(update={"customer_wait": CustomerWait(reminder_days=REMINDER_DAYS)})
    dag_id = config.dag_id
    stamp = uuid.uuid4().hex[:8]
    run_ids = [f"rehearsal__bench_{stamp}_{index:02d}" for index in range(args.runs)]

    database = f"mu_ledger_bench_{stamp}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={database}"
    arrivals = Arrivals()
    controller = Controller(SmtpSink(arrivals), hostname="127.0.0.1", port=free_port())
    hook = None if args.no_webhook else webhook_server(arrivals)
    stop = threading.Event()
    try:
        connection = psycopg2.connect(dsn)
        migrate(connection)
        connection.close()
        os.environ["AIRFLOW_CONN_MANAGED_UPGRADE_LEDGER"] = json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "postgres",
                "schema": database,
            }
        )
        controller.start()
        os.environ["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": controller.port,
                "extra": {
                    "disable_tls": True,
                    "disable_ssl": True,
                    "from_email": "platinum-services@vendor.example",
                    "timeout": 5,
                    "retry_limit": 0,
                },
            }
        )
        if hook is not None:
            url = f"http://127.0.0.1:{hook.server_address[1]}/alerts"
            os.environ["AIRFLOW_CONN_MANAGED_UPGRADE_ALERTS_WEBHOOK"] = json.dumps(
                {"conn_type": "http", "host": url}
            )

        warm_up(config.model_dump(mode="json", exclude_unset=True), dag_id, spd)
        t0 = datetime.now(UTC) + timedelta(seconds=WARMUP_SECONDS)
        events = plan_events(run_ids, t0, spd, final_activity_key(config.process_model()))
        expected = expected_alerts(config, events, spd)
        first_due, last_due = min(expected.values()), max(expected.values())
        restart_at = restart_instant(expected) + timedelta(seconds=RESTART_AFTER_BURST_SECONDS)
        t_end = max(e.at for e in events)
        print(
            f"{args.runs} runs, {len(expected)} alerts due between +{(first_due - t0).total_seconds():.1f} s "
            f"and +{(last_due - t0).total_seconds():.1f} s; restart at "
            f"+{(restart_at - t0).total_seconds():.1f} s; runs end by +{(t_end - t0).total_seconds():.1f} s",
            flush=True,
        )
        lags: list[float] = []
        writer = threading.Thread(target=write_events, args=(dsn, dag_id, events, stop, lags), daemon=True)
        writer.start()
        outcome = asyncio.run(drive(config, dag_id, run_ids, spd, expected, restart_at, args.restart, t_end))
        writer.join(timeout=10)

        connection = psycopg2.connect(dsn)
        ledger = Ledger(connection)
        misses, reminders = ledger.sla_misses(dag_id), ledger.customer_reminders(dag_id)
        connection.close()
        due: dict[Any, datetime] = {}
        notified: dict[Any, datetime] = {}
        ledger_keys: list[Any] = []
        for row in misses:
            key = (row["run_id"], "miss", row["budget_unit"], None)
            due[key], ledger_keys = row["planned_finish"], [*ledger_keys, key]
            if row["notified_at"] is not None:
                notified[key] = row["notified_at"]
        for row in reminders:
            key = (row["run_id"], "reminder", row["budget_unit"], row["number"])
            due[key], ledger_keys = row["due_at"], [*ledger_keys, key]
            if row["notified_at"] is not None:
                notified[key] = row["notified_at"]
        mismatched = sorted(
            (
                key
                for key, at in due.items()
                if key not in expected or abs((at - expected[key]).total_seconds()) > 0.001
            ),
            key=str,
        )
        for key in mismatched[:5]:
            print(
                f"ledger row not as replayed: {key} due {due[key]:%H:%M:%S.%f} expected {expected.get(key)}"
            )
        mail, mail_dups, mail_missing, mail_extra = latencies(arrivals.email, due)
        webhook = None
        hook_dups = 0
        if hook is not None:
            webhook, hook_dups, hook_missing, hook_extra = latencies(arrivals.webhook, due)
        sent = [(at - due[key]).total_seconds() for key, at in notified.items()]
        resent_by_second = sum(len(s.get("sent_by_this_watcher", [])) for s in outcome.summaries)
        ledger_dups = len(ledger_keys) - len(set(ledger_keys))
        counts = [
            ("alerts due (SLA clock replay of the events written)", len(expected)),
            ("ledger rows (misses + reminders)", len(ledger_keys)),
            ("ledger rows not in the replay, or due at another instant", len(mismatched)),
            ("event writes (the listener's part): median / max lag",
             f"{fmt(statistics.median(lags))} / {fmt(max(lags))}"),
            ("ledger rows never marked notified", len(due) - len(notified)),
            ("e-mails received", len(arrivals.email)),
            ("**duplicate e-mails**", mail_dups),
            ("e-mails missing / unexpected / unparsed", f"{len(mail_missing)} / {len(mail_extra)} / "
             f"{len(arrivals.unparsed)}"),
        ]  # fmt: skip
        if hook is not None:
            counts += [
                ("webhook posts received", len(arrivals.webhook)),
                ("**duplicate webhook posts**", hook_dups),
                ("webhook posts missing / unexpected", f"{len(hook_missing)} / {len(hook_extra)}"),
            ]
        counts += [
            ("ledger duplicates", ledger_dups),
            (
                f"alerts sent by the {len(outcome.summaries)} watchers started at the restart",
                resent_by_second,
            ),
        ]
        report(
            args,
            spd,
            {
                "baseline": outcome.baseline,
                "email": mail,
                "webhook": webhook,
                "sent": sent,
                "expected": len(expected),
                "counts": counts,
                "duplicates": mail_dups + hook_dups + ledger_dups,
                "restart_at": outcome.restart_at,
                "restart_seconds": outcome.restart_seconds,
                "burst": sum(
                    1
                    for at in expected.values()
                    if at == restart_at - timedelta(seconds=RESTART_AFTER_BURST_SECONDS)
                ),
            },
        )
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "baseline": outcome.baseline,
                        "email": mail,
                        "webhook": webhook,
                        "sent": sent,
                        "counts": [[name, value] for name, value in counts],
                    },
                    indent=1,
                )
            )
    finally:
        stop.set()
        if hook is not None:
            hook.shutdown()
        with contextlib.suppress(AssertionError, RuntimeError):  # never started
            controller.stop()
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="runs watched at once (default 20)")
    parser.add_argument(
        "--seconds-per-day", type=float, default=1.5, help="rehearsal: seconds per business day (1.5)"
    )
    parser.add_argument("--no-webhook", action="store_true", help="e-mail only (no webhook receiver)")
    parser.add_argument(
        "--restart",
        choices=("graceful", "overlap"),
        default="graceful",
        help="graceful: in-flight calls of the old triggers end first (default); overlap: they do not",
    )
    parser.add_argument("--json", help="also write the raw latencies (seconds) to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("mail.log", "managed_upgrade_airflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    bench(args)


if __name__ == "__main__":
    main()
