"""Every task of a run works with the config the run started with (its snapshot in the ledger).

The DAG factory sets :func:`adopt_run_config` as every task's ``pre_execute`` hook (``default_args``):
Airflow calls it in the task's process before ``execute`` and before a deferred task resumes. The
first task of the run to start stores the config it was built from; later tasks get that snapshot
back and log, once, which fields of the file changed since. The deadline callbacks and the failure
alerts read the snapshot with :func:`stored_run_config`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from managed_upgrade.config import CustomerConfig, CustomerConfigError
from managed_upgrade.config.snapshot import ConfigSnapshot
from managed_upgrade_airflow.ledger_access import open_ledger

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

_restored: dict[tuple[str, str, str], CustomerConfig] = {}
"""(dag id, run id, digest) -> restored config: a task process restores a snapshot once."""


class RunConfigError(RuntimeError):
    """The run's stored config no longer validates (e.g. the product now refuses what it holds)."""


def adopt_run_config(context: Context) -> None:
    """``pre_execute`` hook: put the run's config snapshot into the task, storing it if it is the first.

    A task without a ``config`` attribute (not built from a customer config) is left alone. A task
    with derived attributes defines ``use_run_config(config)`` to recompute them.
    """
    task, ti = context["task"], context["ti"]
    config = getattr(task, "config", None)
    if not isinstance(config, CustomerConfig):
        return
    run_config = run_config_for(str(ti.dag_id), str(ti.run_id), config, taken_by=str(ti.task_id))
    if run_config is config:
        return
    use = getattr(task, "use_run_config", None)
    if callable(use):
        use(run_config)
    else:
        setattr(task, "config", run_config)  # noqa: B010 - a mapped operator's type has no config attribute


def run_config_for(dag_id: str, run_id: str, file_config: CustomerConfig, *, taken_by: str) -> CustomerConfig:
    """The run's config: ``file_config`` if the run has no snapshot yet (it is stored) or the same one."""
    current = ConfigSnapshot.of(file_config)
    with open_ledger() as ledger:
        row = ledger.keep_run_config(dag_id, run_id, current.as_row(), taken_by=taken_by)
    stored = ConfigSnapshot.from_row(row)
    if stored.digest == current.digest:
        return file_config
    log.warning(
        "the customer config %s changed since run %s started (fields: %s); the run keeps the config "
        "taken at %s by task %s (snapshot %s). Start a new run to use the file's current config.",
        current.source,
        run_id,
        ", ".join(stored.changed_fields(current)) or "none at the top level",
        stored.taken_at,
        row.get("taken_by"),
        stored.digest[:12],
    )
    return _restore(dag_id, run_id, stored)


def stored_run_config(dag_id: str, run_id: str) -> CustomerConfig | None:
    """The run's snapshot, or ``None`` if none was stored or the ledger cannot be read (logged).

    For callbacks that must still alert when something is wrong: they fall back to the file.
    """
    try:
        with open_ledger() as ledger:
            row = ledger.run_config(dag_id, run_id)
        return None if row is None else _restore(dag_id, run_id, ConfigSnapshot.from_row(row))
    except Exception as error:
        log.warning("the config snapshot of run %s/%s could not be read: %s", dag_id, run_id, error)
        return None


def _restore(dag_id: str, run_id: str, snapshot: ConfigSnapshot) -> CustomerConfig:
    key = (dag_id, run_id, snapshot.digest)
    if key not in _restored:
        try:
            _restored[key] = snapshot.restore()
        except CustomerConfigError as error:
            raise RunConfigError(
                f"run {dag_id}/{run_id}: its config snapshot {snapshot.digest[:12]} (from "
                f"{snapshot.source}) no longer validates; start a new run:\n" + "\n".join(error.problems)
            ) from None
    return _restored[key]
