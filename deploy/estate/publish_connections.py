"""Points the simulated estate's connections at its compose service instead of 127.0.0.1.

The estate only ever listens on loopback. In the compose deployment its container relays each port
its connections use from the compose network to loopback (socat, see entrypoint.sh); this module
rewrites those connections to the service name and tells the entrypoint exactly which ports to relay,
so nothing else of the container is exposed.

``python publish_connections.py --connections IN.json --host estate --output OUT.json`` writes OUT
(an ``airflow connections import`` file) and prints the ports to relay, one per line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# A compose service name as a DNS name: letters, digits, '-', '.', '_'.
SERVICE_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class PublishError(ValueError):
    """The estate's connections file cannot be published; the message names the file and entry."""


def publish(connections: dict[str, dict[str, Any]], host: str, source: str) -> tuple[dict, list[int]]:
    """Connections with loopback hosts replaced by ``host``, and the sorted ports behind them."""
    if not SERVICE_HOST.match(host) or host in LOOPBACK_HOSTS:
        raise PublishError(f"--host {host!r} must be the estate's compose service name")
    published: dict[str, dict[str, Any]] = {}
    ports: set[int] = set()
    for conn_id, connection in connections.items():
        if not isinstance(connection, dict):
            raise PublishError(f"{source}: connection {conn_id!r} is not a JSON object")
        copy = deepcopy(connection)
        if copy.get("host") in LOOPBACK_HOSTS:
            port = copy.get("port")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise PublishError(
                    f"{source}: connection {conn_id!r} points at loopback without a port to relay ({port!r})"
                )
            copy["host"] = host
            ports.add(port)
        published[conn_id] = copy
    return published, sorted(ports)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="publish_connections.py", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=Path, required=True, help="the estate's connections.json")
    parser.add_argument("--host", required=True, help="compose service name of the estate")
    parser.add_argument("--output", type=Path, required=True, help="where to write the rewritten file")
    args = parser.parse_args(argv)
    try:
        try:
            connections = json.loads(args.connections.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise PublishError(f"{args.connections}: not a readable JSON file ({error})") from None
        if not isinstance(connections, dict):
            raise PublishError(f"{args.connections}: expected an object of connections by id")
        published, ports = publish(connections, args.host, str(args.connections))
    except PublishError as error:
        print(f"publish_connections: {error}", file=sys.stderr)
        return 2
    args.output.write_text(json.dumps(published, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print("\n".join(str(port) for port in ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
