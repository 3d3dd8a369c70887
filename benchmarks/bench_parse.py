"""Parse time of the product's DAG files for 1 / 100 / 1000 customers vs EmptyOperator DAGs of the same shape.

    .venv/bin/python benchmarks/bench_parse.py [--customers 1,100,1000] [--rounds 3] [--params-baseline]

Per N, writes N valid customer configs (copies of ``include/customers/acme.yaml`` with customer id,
file stem, connection ids and paths changed; checked with ``load_customer_configs``) into a temp
customers folder, and a baseline DAG file that reads the same configs (YAML + pydantic validation,
so config reading is in BOTH contenders) and builds, per customer, a DAG with the same task ids,
task groups and dependencies from the process model out of ``EmptyOperator`` only.

Each measurement runs in a fresh subprocess that does what a dag-processor does for one file:
Airflow (``airflow.sdk``) and the ``airflow.*`` modules the file imports are imported before the
clock starts (the dag-processor manager pre-imports those before forking the parser), then
``BundleDagBag(file)`` is timed (that is the part ``[core] dagbag_import_timeout``, default 30 s,
limits) and the DAG serialization the processor does next is timed separately (the whole file is
limited by ``[dag_processor] dag_file_processor_timeout``, default 50 s). Rounds alternate the
order of the contenders; medians are compared (goal: real <= 1.3x baseline). The last step
profiles one parse of the all-customers file at the largest N with cProfile.
Byte code is cached (in the work folder) by an untimed first parse, as on a running deployment.
Everything is written below ``benchmarks/.work/`` and removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "parse"
TEMPLATE_CUSTOMER = ROOT / "include" / "customers" / "acme.yaml"
PRODUCT_FILES = ("managed_upgrade.py", "customer_config_errors.py")
# The product spreads customers over 16 shard files (dags/managed_upgrade_shard_<k>.py). To measure the
# per-customer cost of its code path over N customers, the benchmark parses one file that calls the
# same registry with a single shard; a deployment's file holds about N/16 of them.
ALL_IN_ONE_SHARD = (
    '"""bench_parse.py: every customer in one file, through the product\'s own DAG registry."""\n\n'
    "from managed_upgrade_airflow.dag_registry import register_customer_dags\n\n"
    "register_customer_dags(globals(), shard=0, shards=1)\n"
)
IMPORT_TIMEOUT_SECONDS = 30.0  # [core] dagbag_import_timeout default
PROCESSOR_TIMEOUT_SECONDS = 50.0  # [dag_processor] dag_file_processor_timeout default
RATIO_GOAL = 1.3
LARGE = 1000  # from here on one round by default: the product file alone takes minutes

BASELINE_DAG_FILE = '''\
"""Baseline for bench_parse.py: the product DAGs' shape (ids, groups, dependencies), EmptyOperator only."""

from datetime import UTC, datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup

from managed_upgrade.config import load_customer_configs
{params_import}
configs, _ = load_customer_configs({customers_dir!r})
for config in configs.values():
    model = config.process_model()
    with DAG(
        dag_id=config.dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
        params={params_value},
    ) as dag:
        tasks = {{}}
        for stage in model.stages:
            with TaskGroup(group_id=stage.id):
                for activity in stage.activities:
                    tasks[activity.key] = EmptyOperator(task_id=activity.id)
        for activity in model.activities:
            for upstream in activity.after:
                tasks[upstream] >> tasks[activity.key]
    globals()[config.dag_id] = dag
'''


def baseline_source(customers: Path, *, with_params: bool) -> str:
    """The baseline DAG file; ``with_params``: the DAGs also get the product's trigger params."""
    return BASELINE_DAG_FILE.format(
        customers_dir=str(customers),
        params_import="from managed_upgrade_airflow.trigger_params import trigger_params\n"
        if with_params
        else "",
        params_value="trigger_params(config)" if with_params else "None",
    )


def write_customers(folder: Path, count: int) -> None:
    """``count`` copies of the template customer, each with its own id, connections and paths."""
    template = TEMPLATE_CUSTOMER.read_text()
    folder.mkdir(parents=True)
    for index in range(count):
        customer_id = f"bench{index:04d}"
        (folder / f"{customer_id}.yaml").write_text(template.replace("acme", customer_id))


def check_customers(folder: Path, count: int) -> None:
    from managed_upgrade.config import load_customer_configs

    configs, errors = load_customer_configs(folder)
    if errors or len(configs) != count:
        problems = "\n".join(line for error in errors.values() for line in error.problems)
        raise SystemExit(
            f"generated customer configs are not all valid ({len(configs)}/{count}):\n{problems}"
        )


def measure_in_child(dag_file: Path, bundle: Path, customers: Path, profile_to: Path | None = None) -> dict:
    """Parse ``dag_file`` in a fresh interpreter as the dag-processor would; returns its timings."""
    command = [sys.executable, __file__, "--child", str(dag_file), "--bundle", str(bundle)]
    if profile_to is not None:
        command += ["--profile-to", str(profile_to)]
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(WORK / "airflow-home"),
        "MANAGED_UPGRADE_CUSTOMERS_DIR": str(customers),
        # Measure the real duration; print_summary compares it with the default 30 s limit.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "1800",
        "PYTHONPATH": os.pathsep.join(str(ROOT / sub) for sub in ("include", "plugins")),
        # A deployment has byte code cached; keep it in the work folder, not in the tree or the venv.
        "PYTHONPYCACHEPREFIX": str(WORK / "pycache"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise SystemExit(f"parsing {dag_file.name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child(dag_file: Path, bundle: Path, profile_to: Path | None) -> None:
    """Runs in the subprocess: warm up like the dag-processor, then time the file's own parse."""
    import logging

    import airflow.sdk  # noqa: F401  the dag-processor has Airflow imported before it parses a file
    import structlog
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.dag_processing.processor import _pre_import_airflow_modules, _serialize_dags

    logging.disable(logging.WARNING)
    log = structlog.get_logger()
    _pre_import_airflow_modules(str(dag_file), log)
    parse_profile, serialize_profile = cProfile.Profile(), cProfile.Profile()
    started = time.perf_counter()
    if profile_to:
        parse_profile.enable()
    bag = BundleDagBag(
        dag_folder=dag_file, bundle_path=bundle, bundle_name="dags-folder", load_op_links=False
    )
    parse_profile.disable()
    parsed = time.perf_counter()
    if profile_to:
        serialize_profile.enable()
    serialized, serialization_errors = _serialize_dags(bag, log)
    serialize_profile.disable()
    done = time.perf_counter()
    if profile_to:
        parse_profile.dump_stats(f"{profile_to}.parse")
        serialize_profile.dump_stats(f"{profile_to}.serialize")
    tasks = sum(len(dag.tasks) for dag in bag.dags.values())
    errors = {**bag.import_errors, **serialization_errors}
    print(
        json.dumps(
            {
                "parse": parsed - started,
                "serialize": done - parsed,
                "dags": len(serialized),
                "tasks": tasks,
                "import_errors": {key: value[-300:] for key, value in errors.items()},
            }
        )
    )


def bench(
    counts: list[int],
    rounds: int,
    large_rounds: int,
    profile_customers: int,
    profile_top: int,
    params_baseline: bool,
) -> None:
    dags = WORK / "dags"
    dags.mkdir(parents=True)
    (dags / PRODUCT_FILES[0]).write_text(ALL_IN_ONE_SHARD)
    shutil.copy(ROOT / "dags" / PRODUCT_FILES[1], dags / PRODUCT_FILES[1])
    rows = []
    for count in counts:
        customers = WORK / f"customers-{count}"
        write_customers(customers, count)
        check_customers(customers, count)
        baseline_file = dags / f"baseline_{count}.py"
        baseline_file.write_text(baseline_source(customers, with_params=False))
        real_file, errors_file = (dags / name for name in PRODUCT_FILES)
        contenders = [("real", real_file), ("baseline", baseline_file), ("errors_file", errors_file)]
        if params_baseline:
            params_file = dags / f"baseline_params_{count}.py"
            params_file.write_text(baseline_source(customers, with_params=True))
            contenders.append(("baseline_params", params_file))
        samples: dict[str, list[dict]] = {name: [] for name, _ in contenders}
        if count == counts[0]:  # untimed: fills the byte-code cache, as on a running deployment
            for _, path in contenders:
                measure_in_child(path, dags, customers)
        for round_number in range(rounds if count < LARGE else large_rounds):
            order = list(contenders)
            if round_number % 2:
                order.reverse()
            for name, path in order:
                sample = measure_in_child(path, dags, customers)
                expected = 0 if name == "errors_file" else count
                if sample["dags"] != expected or sample["import_errors"]:
                    raise SystemExit(f"{path.name} with {count} customers: {sample}")
                samples[name].append(sample)
        row = {"customers": count, "tasks_per_dag": samples["real"][0]["tasks"] // count}
        for name, runs in samples.items():
            row[f"{name}_parse"] = statistics.median(run["parse"] for run in runs)
            row[f"{name}_serialize"] = statistics.median(run["serialize"] for run in runs)
        rows.append(row)
        print_row(row)
        sys.stdout.flush()
    print_summary(rows)
    customers = WORK / f"customers-profile-{profile_customers}"
    write_customers(customers, profile_customers)
    profile_real_parse(dags / PRODUCT_FILES[0], dags, customers, profile_customers, profile_top)


def print_row(row: dict) -> None:
    count = row["customers"]
    ratio = row["real_parse"] / row["baseline_parse"]
    total_ratio = (row["real_parse"] + row["real_serialize"]) / (
        row["baseline_parse"] + row["baseline_serialize"]
    )
    print(f"\n{count} customer(s), {row['tasks_per_dag']} tasks per DAG:")
    for label, key in (("managed_upgrade.py", "real"), ("baseline (EmptyOperator)", "baseline")):
        print(
            f"  {label:25}  parse {row[key + '_parse']:7.2f} s   serialize {row[key + '_serialize']:6.2f} s"
        )
    if "baseline_params_parse" in row:
        label, key = "baseline + trigger params", "baseline_params"
        print(
            f"  {label:25}  parse {row[key + '_parse']:7.2f} s   serialize {row[key + '_serialize']:6.2f} s"
        )
    print(f"  customer_config_errors.py  parse {row['errors_file_parse']:7.2f} s")
    print(f"  ratio parse {ratio:.2f}x, parse+serialize {total_ratio:.2f}x (goal <= {RATIO_GOAL}x)")


def print_summary(rows: list[dict]) -> None:
    print(
        "\n| customers | managed_upgrade.py parse | baseline parse | ratio "
        "| + serialize: real / baseline | customer_config_errors.py |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['customers']} | {row['real_parse']:.2f} s | {row['baseline_parse']:.2f} s | "
            f"{row['real_parse'] / row['baseline_parse']:.2f}x | "
            f"{row['real_parse'] + row['real_serialize']:.2f} s / "
            f"{row['baseline_parse'] + row['baseline_serialize']:.2f} s | {row['errors_file_parse']:.2f} s |"
        )
    largest = max(rows, key=lambda row: row["customers"])
    parse, whole = largest["real_parse"], largest["real_parse"] + largest["real_serialize"]
    verdict = "within" if parse < IMPORT_TIMEOUT_SECONDS else "OVER"
    print(
        f"\n{largest['customers']} customers: import {parse:.1f} s is {verdict} dagbag_import_timeout "
        f"({IMPORT_TIMEOUT_SECONDS:.0f} s, {parse / IMPORT_TIMEOUT_SECONDS:.0%} of it); import + serialize "
        f"{whole:.1f} s of dag_file_processor_timeout ({PROCESSOR_TIMEOUT_SECONDS:.0f} s)."
    )
    if whole > PROCESSOR_TIMEOUT_SECONDS:
        print(
            "  -> OVER the processor timeout: the file never loads. Shard the customers over several files."
        )
    elif parse > IMPORT_TIMEOUT_SECONDS / 2 or whole > PROCESSOR_TIMEOUT_SECONDS / 2:
        print("  -> close to a timeout: shard the customers over several DAG files.")


def profile_real_parse(dag_file: Path, bundle: Path, customers: Path, count: int, top: int) -> None:
    stats_file = WORK / "managed_upgrade.prof"
    measure_in_child(dag_file, bundle, customers, profile_to=stats_file)
    for phase in ("parse", "serialize"):
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            stats = pstats.Stats(f"{stats_file}.{phase}", stream=out).strip_dirs().sort_stats(order)
            stats.print_stats(top)
            body = out.getvalue()
            print(f"\n== cProfile: {phase} of managed_upgrade.py, {count} customers, top {top} by {order}")
            print(body[body.find("   ncalls") :].rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", default="1,100,1000", help="comma-separated customer counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large-rounds", type=int, default=1, help=f"rounds for >= {LARGE} customers")
    parser.add_argument("--profile-customers", type=int, default=100)
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument(
        "--params-baseline",
        action="store_true",
        help="also time the baseline with the product's trigger params (Airflow copies them into every task)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.bundle, args.profile_to)
        return 0
    counts = sorted({int(part) for part in args.customers.split(",")})
    shutil.rmtree(WORK, ignore_errors=True)
    started = time.monotonic()
    try:
        bench(
            counts,
            args.rounds,
            args.large_rounds,
            args.profile_customers,
            args.profile_top,
            args.params_baseline,
        )
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"\n(benchmark took {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
