"""The CeleryExecutor's side of the harness: a private Redis as broker, and Celery workers by name.

Each worker is a component of its own (`worker-<hostname>`), a Celery node `<hostname>@<machine>`
consuming its queues. Airflow records `[core] hostname_callable()` as a task instance's `hostname`;
its default, the machine's name, would be the same for every worker here, so each worker sets
`task_hostname` below as its callable and its task instances name the node that ran them, as
`celery inspect` names it.

This module is imported by the task processes of the workers (for `task_hostname`): Celery and the
Redis client are imported only inside the functions that need them.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REDIS = "redis"
WORKER_PREFIX = "worker-"
NODE_VARIABLE = "HARNESS_CELERY_NODE"
"""Set in a worker's environment: its Celery node name, which its task instances report as hostname."""
HOSTNAME_CALLABLE = f"{__name__}.task_hostname"
REDIS_SERVER = "redis-server"
PING_SECONDS = 1.0

T = TypeVar("T")


def worker_component(hostname: str) -> str:
    """The component (log file, pid file) of the worker with this Celery hostname."""
    return f"{WORKER_PREFIX}{hostname}"


def node_name(hostname: str) -> str:
    """The Celery node of a worker started with `--celery-hostname <hostname>@%h` (`%h`: this machine)."""
    return f"{hostname}@{socket.gethostname()}"


def task_hostname() -> str:
    """`[core] hostname_callable` of the workers: their node name (elsewhere the machine's name)."""
    node = os.environ.get(NODE_VARIABLE)
    if node:
        return node
    from airflow.utils.net import getfqdn

    return getfqdn()


def broker_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def redis_argv(port: int, directory: Path) -> list[str]:
    """A Redis for this instance alone: loopback, its own port and folder, nothing written to disk."""
    binary = shutil.which(REDIS_SERVER)
    if binary is None:
        raise FileNotFoundError(
            f"{REDIS_SERVER} is not installed (the celery executor's broker); run scripts/install-system-deps"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]


def redis_answers(port: int, timeout: float = PING_SECONDS) -> bool:
    """Whether the Redis on 127.0.0.1:`port` answers PING."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def nodes_answering_ping(port: int, nodes: list[str], timeout: float = PING_SECONDS) -> set[str]:
    """Which of the Celery `nodes` answer a ping through the broker on `port` (`celery inspect ping`)."""
    if not nodes:
        return set()
    replies = _control(port, lambda app: app.control.ping(destination=nodes, timeout=timeout))
    return {node for reply in replies or [] for node, answer in reply.items() if answer.get("ok") == "pong"}


def active_queues(port: int, timeout: float = PING_SECONDS) -> dict[str, list[str]]:
    """Every Celery node reachable through the broker on `port`, with the queues it consumes."""
    found = _control(port, lambda app: app.control.inspect(timeout=timeout).active_queues())
    return {node: sorted(queue["name"] for queue in queues) for node, queues in (found or {}).items()}


def _control(port: int, call: Callable[[Any], T]) -> T | None:
    """Run `call(app)` on a throwaway Celery app on the broker; None if the broker is unreachable."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    app = Celery(broker=broker_url(port), set_as_current=False)
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_retry_on_startup = False
    try:
        return call(app)
    except (OperationalError, OSError):
        return None
    finally:
        app.close()
