"""Runs as the views read them from the ledger: a few batched queries however many customers there are."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from managed_upgrade.dag_ids import DAG_ID_PREFIX
from managed_upgrade.ledger import Ledger
from managed_upgrade.views.portfolio import CustomerRuns
from managed_upgrade.views.run_facts import RunFacts


def _grouped(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["dag_id"], row["run_id"])].append(row)
    return grouped


def read_runs(
    ledger: Ledger, dag_ids: Collection[str], *, run_id: str | None = None
) -> dict[str, list[RunFacts]]:
    """The recorded runs of ``dag_ids`` (only ``run_id``, if given) by DAG, oldest first.

    Events, plans and config snapshots are read for the runs a view can show in detail: every run
    without a closing summary, and the latest run of each DAG; a finished run's summary says enough.
    """
    rows = [row for row in ledger.runs_of(sorted(dag_ids)) if run_id is None or row["run_id"] == run_id]
    latest = {row["dag_id"]: (row["dag_id"], row["run_id"]) for row in rows}
    keys = [(row["dag_id"], row["run_id"]) for row in rows]
    detailed = sorted(
        {(row["dag_id"], row["run_id"]) for row in rows if row["summary"] is None} | set(latest.values())
    )
    events = _grouped(ledger.events_of(detailed)) if detailed else {}
    plans = _grouped(ledger.plans_of(detailed)) if detailed else {}
    configs = (
        {key: group[0] for key, group in _grouped(ledger.run_configs_of(detailed)).items()}
        if detailed
        else {}
    )
    misses = _grouped(ledger.sla_misses_of(detailed)) if detailed else {}
    stops = _grouped(ledger.stops_of(keys)) if keys else {}
    runs: dict[str, list[RunFacts]] = defaultdict(list)
    for row in rows:
        key = (row["dag_id"], row["run_id"])
        runs[row["dag_id"]].append(
            RunFacts(
                dag_id=row["dag_id"],
                run_id=row["run_id"],
                customer_id=row["customer_id"],
                started_at=row["started_at"],
                conf=row["conf"] or {},
                summary=row["summary"],
                finished_at=row["finished_at"],
                config_row=configs.get(key),
                plan=plans.get(key, ()),
                events=events.get(key, ()),
                sla_misses=misses.get(key, ()),
                stops=stops.get(key, ()),
            )
        )
    return dict(runs)


def customers(dag_ids: Sequence[str], runs: Mapping[str, list[RunFacts]]) -> list[CustomerRuns]:
    """One entry per customer DAG, with its runs (none for a customer never upgraded)."""
    return [
        CustomerRuns(dag_id=dag_id, customer_id=dag_id.removeprefix(DAG_ID_PREFIX), runs=runs.get(dag_id, []))
        for dag_id in sorted(dag_ids)
        if dag_id.startswith(DAG_ID_PREFIX)
    ]
