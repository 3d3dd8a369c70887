"""``scripts/estate``: start, check, use and stop the simulated CRM estate from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crm_estate import estate as estate_mod
from crm_estate import releases
from crm_estate.catalogue import parse_version
from crm_estate.customers import load_estate_customers
from crm_estate.estate import INSTALLER_STEPS, Estate, EstateError
from crm_estate.layout import ENVIRONMENTS, EstateLayout, root_from_env


def _say(message: str) -> None:
    print(message, flush=True)


def _cmd_up(_args: argparse.Namespace) -> int:
    report = estate_mod.status()
    outdated = any(item.detail.startswith("outdated") for item in report)
    if all(item.healthy for item in report) and not outdated:
        print(f"estate at {root_from_env()} is already up and healthy")
        return 0
    estate = estate_mod.up(say=_say)
    healthy = estate_mod.print_status(estate_mod.status())
    print(f"estate up at {estate.root}; connections: . {estate.layout.connections_env}")
    return 0 if healthy else 1


def _cmd_down(args: argparse.Namespace) -> int:
    estate_mod.down(purge=args.purge, say=_say)
    return 0


def _cmd_status(_args: argparse.Namespace) -> int:
    return 0 if estate_mod.print_status(estate_mod.status()) else 1


def _cmd_env(_args: argparse.Namespace) -> int:
    env_file = EstateLayout(root_from_env()).connections_env
    if not env_file.exists():
        print(f"{env_file} missing; run `scripts/estate up`", file=sys.stderr)
        return 1
    sys.stdout.write(env_file.read_text())
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    size = releases.PayloadSize.mib(args.size_mib, args.files)
    layout = EstateLayout(root_from_env())
    release_dir = releases.build_release(layout.releases_dir, args.version, size)
    problems = releases.verify_release(release_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    payload = release_dir / releases.PAYLOAD
    print(f"built {release_dir} (payload {payload.stat().st_size / 1024 / 1024:.1f} MiB)")
    return 1 if problems else 0


def _install_paths(args: argparse.Namespace) -> list[Path]:
    customers, _errors = load_estate_customers()
    selected = [c for c in customers if args.customer in (None, c.customer_id)]
    if args.customer is not None and not selected:
        raise EstateError(f"no valid customer config with customer_id {args.customer!r}")
    envs = ENVIRONMENTS if args.env is None else (args.env,)
    return [c.environments[env].install_path for c in selected for env in envs]


def _cmd_fault(args: argparse.Namespace) -> int:
    estate = Estate.load()
    if args.clear:
        for path in _install_paths(args):
            if estate.clear_fault(path):
                print(f"cleared fault at {path}")
        return 0
    if args.customer is None or args.env is None or (args.step is None and args.slow is None):
        print("fault needs --customer, --env and --step and/or --slow (or --clear)", file=sys.stderr)
        return 2
    for path in _install_paths(args):
        fault_file = estate.set_fault(path, args.step, args.slow)
        print(f"wrote {fault_file}: {fault_file.read_text().strip()!r}")
    return 0


def _cmd_reset(args: argparse.Namespace) -> int:
    estate_mod.reset(customer_id=args.customer, env=args.env, say=_say)
    return 0


def _version(value: str) -> str:
    try:
        parse_version(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/estate",
        description="Simulated CRM estate: sshd per environment, config DBs, release repository. "
        "Root: $ESTATE_ROOT (default /tmp/crm-estate); ports: $ESTATE_BASE_PORT (default 2221).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start (or repair) everything; idempotent").set_defaults(run=_cmd_up)
    down = commands.add_parser("down", help="stop the servers, keep the files")
    down.add_argument(
        "--purge", action="store_true", help="also drop the estate's databases and delete its root"
    )
    down.set_defaults(run=_cmd_down)
    commands.add_parser("status", help="print every component; exit 0 only if all are healthy").set_defaults(
        run=_cmd_status
    )
    commands.add_parser("env", help='print connections.env (use: eval "$(scripts/estate env)")').set_defaults(
        run=_cmd_env
    )
    release = commands.add_parser("release", help="(re)build one release, e.g. with a large payload")
    release.add_argument("--version", required=True, type=_version)
    release.add_argument("--size-mib", type=float, default=0.0, help="extra incompressible payload (MiB)")
    release.add_argument(
        "--files", type=int, default=1, help="number of files the extra payload is split into"
    )
    release.set_defaults(run=_cmd_release)
    fault = commands.add_parser("fault", help="make the installer fail at a step (or clear faults)")
    fault.add_argument("--customer")
    fault.add_argument("--env", choices=ENVIRONMENTS)
    fault.add_argument("--step", choices=INSTALLER_STEPS)
    fault.add_argument("--slow", type=float, help="make the installer take this many seconds longer")
    fault.add_argument("--clear", action="store_true", help="remove fault files (all, or the selected ones)")
    fault.set_defaults(run=_cmd_fault)
    reset = commands.add_parser("reset", help="re-provision installations at the config's current version")
    reset.add_argument("--customer")
    reset.add_argument("--env", choices=ENVIRONMENTS)
    reset.set_defaults(run=_cmd_reset)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (EstateError, ValueError) as exc:
        print(f"estate: {exc}", file=sys.stderr)
        return 1
