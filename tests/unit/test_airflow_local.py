"""The local Airflow harness's own logic: users, passwords, environment, process control.

The harness running real Airflow is tested in tests/e2e/test_harness.py; these run in a second.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from airflow_local import celery_workers, harness
from airflow_local.environment import (
    airflow_settings,
    celery_worker_environment,
    estate_connections,
    write_env_file,
)
from airflow_local.processes import (
    ComponentProcess,
    kill_components,
    listening_sockets,
    recorded_component,
    start_component,
    stop_components,
)
from airflow_local.settings import (
    REPO_ROOT,
    HarnessConfigError,
    HarnessOverrides,
    HarnessSettings,
    default_celery_workers,
)
from airflow_local.users import all_users, customer_users, ensure_passwords


def _settings(tmp_path: Path, **changes: object) -> HarnessSettings:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    environ = {
        "AIRFLOW_LOCAL_HOME": str(tmp_path / "home"),
        "AIRFLOW_LOCAL_DAGS": str(dags),
        "ESTATE_ROOT": str(tmp_path / "estate"),
    }
    settings = HarnessSettings.from_environment(HarnessOverrides(), environ)
    return HarnessSettings(**{**settings.__dict__, **changes})


def test_customer_users_get_the_user_role_and_a_broken_file_is_skipped_with_a_warning(tmp_path, capsys):
    (tmp_path / "acme.yaml").write_text("users:\n  consultant: [carla]\n  project_manager: [pete]\n")
    (tmp_path / "broken.yaml").write_text("users: [unclosed\n")
    (tmp_path / "odd.yaml").write_text("users:\n  consultant: ['no spaces allowed', gina]\n")

    users = customer_users(tmp_path)

    assert users == {"carla": "user", "pete": "user", "gina": "user"}
    warnings = capsys.readouterr().err
    assert "broken.yaml" in warnings
    assert "'no spaces allowed'" in warnings


def test_fixed_users_keep_their_roles_even_if_a_customer_names_them(tmp_path):
    customers = tmp_path / "customers"
    customers.mkdir()
    (customers / "acme.yaml").write_text("users:\n  consultant: [admin, carla]\n")

    users = all_users(_settings(tmp_path, customers_folder=customers, extra_users=(("bob", "viewer"),)))

    assert users == {"admin": "admin", "ops": "op", "manager": "viewer", "carla": "user", "bob": "viewer"}


def test_passwords_survive_a_restart_and_only_new_users_get_new_ones(tmp_path):
    passwords_file = tmp_path / "passwords.json"

    first = ensure_passwords(passwords_file, {"ops": "op"})
    second = ensure_passwords(passwords_file, {"ops": "op", "carla": "user"})

    assert second["ops"] == first["ops"]
    assert second["carla"] and second["carla"] != second["ops"]
    assert json.loads(passwords_file.read_text()) == second
    assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600


def test_env_file_gives_a_shell_exactly_the_values_components_get(tmp_path):
    values = {"AIRFLOW_CONN_X": '{"extra": {"host_key": "ssh-ed25519 AAAA$x `id` \'q\'"}}', "PLAIN": "a b"}
    env_file = tmp_path / "airflow.env"

    write_env_file(env_file, values)
    script = f'source {shlex.quote(str(env_file))}; printf \'%s\\n%s\' "$AIRFLOW_CONN_X" "$PLAIN"'
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)

    assert shell.stdout.split("\n") == [values["AIRFLOW_CONN_X"], values["PLAIN"]]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_estate_connections_are_read_and_a_malformed_line_is_named(tmp_path):
    connections = tmp_path / "connections.env"
    connections.write_text('# estate\nexport AIRFLOW_CONN_CRM_ACME_DEV_SSH=\'{"host": "127.0.0.1"}\'\n')
    assert estate_connections(connections) == {"AIRFLOW_CONN_CRM_ACME_DEV_SSH": '{"host": "127.0.0.1"}'}
    assert estate_connections(tmp_path / "absent.env") == {}

    connections.write_text("export AIRFLOW_CONN_OK='{}'\nrm -rf /\n")
    with pytest.raises(HarnessConfigError, match=r"connections\.env:2"):
        estate_connections(connections)


def test_components_are_told_loopback_addresses_and_the_mail_sink(tmp_path):
    settings = _settings(tmp_path, port=28555, smtp_port=2525)

    config = airflow_settings(settings, {"ops": "op"})

    assert config["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert config["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:28555/execution/"
    assert config["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "False"
    smtp = json.loads(config["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert (smtp["host"], smtp["port"]) == ("127.0.0.1", 2525)
    # Secrets are generated once per home: a restart decrypts what the last run encrypted.
    assert airflow_settings(settings, {})["AIRFLOW__CORE__FERNET_KEY"] == config["AIRFLOW__CORE__FERNET_KEY"]


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("AIRFLOW_LOCAL_PORT", "80000", "not a TCP port"),
        ("AIRFLOW_LOCAL_EXTRA_USERS", "bob:superuser", "role one of"),
        ("AIRFLOW_LOCAL_EXTRA_USERS", "b,ob:user", "must be name:role"),
        ("AIRFLOW_LOCAL_DAGS", "/nonexistent/dags", "does not exist"),
        ("AIRFLOW_LOCAL_EXECUTOR", "threads", "AIRFLOW_LOCAL_EXECUTOR or --executor"),
        ("AIRFLOW_LOCAL_PROD_ZONE_QUEUE", "prod zone", "not a queue name"),
    ],
)
def test_bad_settings_are_rejected_naming_the_variable(tmp_path, name, value, problem):
    environ = {"AIRFLOW_LOCAL_HOME": str(tmp_path), "AIRFLOW_LOCAL_DAGS": str(tmp_path), name: value}
    with pytest.raises(HarnessConfigError, match=problem):
        HarnessSettings.from_environment(environ=environ)


def test_up_refuses_a_port_in_use_before_starting_anything(tmp_path):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        settings = _settings(tmp_path, port=occupant.getsockname()[1])

        with pytest.raises(harness.HarnessError, match="AIRFLOW_LOCAL_PORT"):
            harness.up(settings, report=lambda line: None)

    assert not list(settings.run_dir.glob("*.pid"))


def test_stopping_a_component_stops_its_children_and_is_idempotent(tmp_path):
    run_dir = tmp_path / "run"
    component = start_component(
        "sleeper",
        ["bash", "-c", "sleep 300 & sleep 300"],
        dict(os.environ),
        tmp_path / "s.log",
        run_dir,
        tmp_path,
    )
    deadline = time.monotonic() + 30  # bash starts both sleeps when it gets the CPU: wait for them, untimed
    while len(psutil.Process(component.pid).children(recursive=True)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    family = [psutil.Process(component.pid), *psutil.Process(component.pid).children(recursive=True)]
    assert len(family) == 3

    assert stop_components(run_dir, [component]) == ["sleeper"]
    assert not [process for process in family if process.is_running()]
    assert recorded_component(run_dir, "sleeper", tmp_path / "s.log") is None
    assert stop_components(run_dir, [component]) == []


def test_a_recorded_pid_now_used_by_another_process_is_not_signalled(tmp_path):
    impostor = ComponentProcess(name="old", pid=os.getpid(), create_time=0.0, log_path=tmp_path / "old.log")

    assert stop_components(tmp_path, [impostor]) == []
    assert psutil.Process(os.getpid()).is_running()


def test_killing_a_component_ends_its_whole_family_at_once_without_a_graceful_shutdown(tmp_path):
    run_dir = tmp_path / "run"
    marker = tmp_path / "terminated"
    # A SIGTERM would be handled (the marker written); SIGKILL gives no process a chance to.
    script = f"trap 'echo term > {shlex.quote(str(marker))}' TERM; sleep 300 & sleep 300 & wait"
    component = start_component(
        "crasher", ["bash", "-c", script], dict(os.environ), tmp_path / "c.log", run_dir, tmp_path
    )
    deadline = time.monotonic() + 30
    while len(psutil.Process(component.pid).children(recursive=True)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    family = [psutil.Process(component.pid), *psutil.Process(component.pid).children(recursive=True)]
    assert len(family) == 3

    assert kill_components(run_dir, [component]) == ["crasher"]
    assert not [process for process in family if process.is_running()]
    assert not marker.exists()
    assert recorded_component(run_dir, "crasher", tmp_path / "c.log") is None
    assert kill_components(run_dir, [component]) == []


def test_killing_never_signals_a_process_that_merely_reuses_a_recorded_pid(tmp_path):
    impostor = ComponentProcess(name="old", pid=os.getpid(), create_time=0.0, log_path=tmp_path / "old.log")

    assert kill_components(tmp_path, [impostor]) == []
    assert psutil.Process(os.getpid()).is_running()


def test_only_components_of_the_instance_are_killed_or_restarted(tmp_path):
    settings = _settings(tmp_path)

    with pytest.raises(harness.HarnessError, match="unknown component"):
        harness.kill_component(settings, "worker-default")  # the local executor has no workers
    with pytest.raises(harness.HarnessError, match="unknown component"):
        harness.restart_component(settings, "redis")
    assert harness.kill_component(settings, "scheduler") is False  # never started: nothing to kill


def test_a_component_started_for_a_test_session_dies_with_the_session(tmp_path):
    session = (
        "import os, sys, pathlib\n"
        "from airflow_local.processes import start_component\n"
        "home = pathlib.Path(sys.argv[1])\n"
        "c = start_component('orphan', ['sleep', '300'], dict(os.environ), home / 'o.log', home, home,"
        " die_with_caller=True)\n"
        "print(c.pid)\n"
    )
    environment = os.environ | {"PYTHONPATH": str(REPO_ROOT / "scripts")}

    ended = subprocess.run(
        [sys.executable, "-c", session, str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )

    orphan = psutil.Process(int(ended.stdout))
    orphan.wait(timeout=10)
    assert not orphan.is_running()


def test_an_exited_component_is_named_with_the_last_error_of_its_log(tmp_path):
    settings = _settings(tmp_path)
    settings.logs_dir.mkdir(parents=True)
    running = {
        name: start_component(
            name, ["sleep", "300"], dict(os.environ), tmp_path / f"{name}.out", settings.run_dir, tmp_path
        )
        for name in harness.COMPONENTS
        if name != "scheduler"
    }
    (settings.logs_dir / "scheduler.log").write_text(
        "Traceback (most recent call last):\n"
        '  File "session.py", line 4769, in _flush\n'
        "sqlite3.OperationalError: database is locked\n"
        "The above exception was the direct cause of the following exception:\n"
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n"
        "[info] Exited execute loop\n"
    )
    local = harness.LocalAirflow(settings, passwords={})
    try:
        with pytest.raises(harness.HarnessError) as raised:
            local.require_running()
        assert str(raised.value) == (
            "Airflow component(s) exited: scheduler "
            "(sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked)"
        )
        scheduler = start_component(
            "scheduler", ["sleep", "300"], dict(os.environ), tmp_path / "s.out", settings.run_dir, tmp_path
        )
        local.require_running()  # all four run again: nothing to say
    finally:
        stop_components(
            settings.run_dir, [*running.values(), *([scheduler] if "scheduler" in locals() else [])]
        )


# --- the celery executor ---------------------------------------------------------------------------

METADATA_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=airflow_unit"


def _environ(tmp_path: Path, **variables: str) -> dict[str, str]:
    dags = tmp_path / "dags"
    dags.mkdir(exist_ok=True)
    return {"AIRFLOW_LOCAL_HOME": str(tmp_path / "home"), "AIRFLOW_LOCAL_DAGS": str(dags), **variables}


def test_the_executor_is_local_unless_the_environment_or_an_override_says_celery(tmp_path):
    environ = _environ(tmp_path, AIRFLOW_LOCAL_METADATA_DSN=METADATA_DSN)

    assert HarnessSettings.from_environment(environ=environ).executor == "local"
    celery = HarnessSettings.from_environment(environ=environ | {"AIRFLOW_LOCAL_EXECUTOR": "Celery"})
    assert (celery.executor, celery.celery) == ("celery", True)
    overridden = HarnessOverrides(executor="local")
    assert (
        HarnessSettings.from_environment(overridden, environ | {"AIRFLOW_LOCAL_EXECUTOR": "celery"}).executor
        == "local"
    )
    assert HarnessSettings.from_environment(HarnessOverrides(executor="celery"), environ).celery


def test_the_auth_manager_is_simple_unless_the_environment_or_an_override_says_fab(tmp_path):
    environ = _environ(tmp_path)
    simple = HarnessSettings.from_environment(environ=environ)
    assert (simple.auth_manager, simple.fab) == ("simple", False)
    assert HarnessSettings.from_environment(environ=environ | {"AIRFLOW_LOCAL_AUTH_MANAGER": "FAB"}).fab
    assert HarnessSettings.from_environment(HarnessOverrides(auth_manager="fab"), environ).fab
    with pytest.raises(HarnessConfigError, match="AIRFLOW_LOCAL_AUTH_MANAGER or --auth-manager"):
        HarnessSettings.from_environment(environ=environ | {"AIRFLOW_LOCAL_AUTH_MANAGER": "ldap"})


def test_with_fab_the_configs_people_get_only_their_customer_roles_and_no_simple_auth_settings(tmp_path):
    from airflow_local.environment import FAB_AUTH_MANAGER
    from airflow_local.users import fab_users
    from managed_upgrade_airflow.access_control import read_user_specs

    customers = tmp_path / "customers"
    customers.mkdir()
    (customers / "acme.yaml").write_text("users:\n  consultant: [carla]\n  project_manager: [pete]\n")
    settings = HarnessSettings.from_environment(
        HarnessOverrides(auth_manager="fab", customers_folder=customers, extra_users=("bob:user",)),
        _environ(tmp_path),
    )
    users = all_users(settings)
    passwords = {name: f"{name}-pw" for name in users}
    roles = {name: spec["roles"] for name, spec in fab_users(settings, passwords).items()}
    assert roles == {
        "admin": ["Admin"],
        "bob": ["User"],
        "carla": [],
        "manager": ["Viewer"],
        "ops": ["Op"],
        "pete": [],
    }
    environment = airflow_settings(settings, users)
    assert environment["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert not any(key.startswith("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER") for key in environment)
    harness.prepare(settings)
    assert stat.S_IMODE(settings.fab_users_file.stat().st_mode) == 0o600
    specs = read_user_specs(settings.fab_users_file)  # what the start-up sync reads
    assert specs["carla"].roles == () and specs["admin"].roles == ("Admin",)


def test_celery_refuses_a_sqlite_metadata_database(tmp_path):
    with pytest.raises(
        HarnessConfigError, match="needs a PostgreSQL metadata database: set AIRFLOW_LOCAL_METADATA_DSN"
    ):
        HarnessSettings.from_environment(HarnessOverrides(executor="celery"), _environ(tmp_path))


def test_default_workers_serve_the_default_and_the_prod_zone_queue_and_a_test_may_ask_for_others(tmp_path):
    environ = _environ(tmp_path, AIRFLOW_LOCAL_METADATA_DSN=METADATA_DSN)

    default = HarnessSettings.from_environment(HarnessOverrides(executor="celery"), environ)
    renamed = HarnessSettings.from_environment(
        HarnessOverrides(executor="celery"), environ | {"AIRFLOW_LOCAL_PROD_ZONE_QUEUE": "eu_prod"}
    )
    three = (("a", ("default",)), ("b", ("default", "prod_zone")), ("c", ("reports",)))
    custom = HarnessSettings.from_environment(
        HarnessOverrides(executor="celery", celery_workers=three), environ
    )

    assert default.celery_workers == (("default", ("default",)), ("prod-zone", ("prod_zone",)))
    assert (
        renamed.celery_workers
        == default_celery_workers("eu_prod")
        == (
            ("default", ("default",)),
            ("prod-zone", ("eu_prod",)),
        )
    )
    assert custom.celery_workers == three
    assert harness.component_names(custom) == (
        *harness.COMPONENTS,
        "redis",
        "worker-a",
        "worker-b",
        "worker-c",
    )
    assert harness.component_names(HarnessSettings.from_environment(environ=environ)) == harness.COMPONENTS


@pytest.mark.parametrize(
    ("workers", "problem"),
    [
        ((), "at least one worker"),
        ((("w", ("default",)), ("w", ("other",))), "must be distinct"),
        ((("w@host", ("default",)),), "must be \\(hostname"),
        ((("w", ("default", "%h")),), "must be \\(hostname"),
        ((("w", ()),), "must be \\(hostname"),
        ((("w", "default"),), "must be \\(hostname"),
        ((("w", ("prod_zone",)),), "no worker serves the default queue 'default'"),
    ],
)
def test_a_worker_layout_that_cannot_work_is_refused(tmp_path, workers, problem):
    environ = _environ(tmp_path, AIRFLOW_LOCAL_METADATA_DSN=METADATA_DSN)
    with pytest.raises(HarnessConfigError, match=problem):
        HarnessSettings.from_environment(HarnessOverrides(executor="celery", celery_workers=workers), environ)


def test_celery_components_are_told_the_private_broker_the_result_backend_and_the_worker_layout(tmp_path):
    settings = _settings(tmp_path, executor="celery", metadata_dsn=METADATA_DSN, redis_port=46379)

    config = airflow_settings(settings, {"ops": "op"})
    local = airflow_settings(_settings(tmp_path), {"ops": "op"})

    assert config["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert config["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:46379/0"
    assert config["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://postgres@127.0.0.1:5432/airflow_unit"
    assert (
        config["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow_unit"
    )
    assert config["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"  # two workers share the machine's 8 slots
    assert config["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "default"
    assert local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert not [name for name in local if name.startswith("AIRFLOW__CELERY__")]
    with pytest.raises(HarnessConfigError, match="Redis port is not chosen"):
        airflow_settings(_settings(tmp_path, executor="celery", metadata_dsn=METADATA_DSN), {})


def test_each_worker_is_its_own_celery_node_on_its_queues_and_redis_is_private(tmp_path):
    settings = _settings(tmp_path, executor="celery", metadata_dsn=METADATA_DSN, redis_port=46379)

    default = harness.component_argv(settings, "worker-default")
    prod_zone = harness.component_argv(settings, "worker-prod-zone")

    assert default[default.index("celery") :][:2] == ["celery", "worker"]
    for argv, name, queue in ((default, "default", "default"), (prod_zone, "prod-zone", "prod_zone")):
        options = dict(itertools.pairwise(argv))
        assert (options["--celery-hostname"], options["--queues"], options["--concurrency"]) == (
            f"{name}@%h",
            queue,
            "4",
        )
        assert "--skip-serve-logs" in argv  # Airflow's log server would bind every interface
    with pytest.raises(harness.HarnessError, match="no Celery worker 'worker-nobody'"):
        harness.component_argv(settings, "worker-nobody")
    if shutil.which("redis-server"):
        redis = harness.component_argv(settings, "redis")
        options = dict(itertools.pairwise(redis))
        assert (options["--bind"], options["--port"], options["--save"], options["--appendonly"]) == (
            "127.0.0.1",
            "46379",
            "",
            "no",
        )
        assert options["--dir"] == str(settings.home / "redis")


def test_a_worker_s_task_instances_report_its_celery_node_as_hostname(monkeypatch):
    environment = celery_worker_environment("prod-zone")
    node = f"prod-zone@{socket.gethostname()}"

    assert environment == {
        "HARNESS_CELERY_NODE": node,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airflow_local.celery_workers.task_hostname",
    }
    monkeypatch.setenv("HARNESS_CELERY_NODE", node)
    assert celery_workers.task_hostname() == node


def test_down_stops_what_another_executor_started_and_the_broker_last(tmp_path):
    celery = _settings(tmp_path, executor="celery", metadata_dsn=METADATA_DSN)
    started = [
        start_component(
            name, ["sleep", "300"], dict(os.environ), tmp_path / f"{name}.out", celery.run_dir, tmp_path
        )
        for name in ("redis", "scheduler", "worker-default", "worker-prod-zone")
    ]

    stopped = harness.down(_settings(tmp_path))  # `down` without --executor

    assert stopped[-1] == "redis"
    assert sorted(stopped) == ["redis", "scheduler", "worker-default", "worker-prod-zone"]
    assert not [component for component in started if component.is_running()]
    assert harness.down(celery) == []


@pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server missing: scripts/install-system-deps"
)
def test_the_private_redis_answers_on_its_loopback_port_only_and_stops(tmp_path):
    settings = harness.with_broker_port(
        _settings(tmp_path, executor="celery", metadata_dsn=METADATA_DSN), choose=True
    )
    port = settings.redis_port
    redis = start_component(
        "redis",
        harness.component_argv(settings, "redis"),
        dict(os.environ),
        tmp_path / "r.log",
        settings.run_dir,
        tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while not celery_workers.redis_answers(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert celery_workers.redis_answers(port)
        assert {(ip, listening) for _, _, ip, listening in listening_sockets([redis])} == {
            ("127.0.0.1", port)
        }
        # `status` and `restart` of the home find the port `up` chose.
        assert (
            harness.with_broker_port(
                _settings(tmp_path, executor="celery", metadata_dsn=METADATA_DSN)
            ).redis_port
            == port
        )
    finally:
        assert harness.down(settings) == ["redis"]
    assert not celery_workers.redis_answers(port)
    # Nothing persisted: no snapshot, no append-only file; only the port `up` recorded.
    assert [path.name for path in settings.redis_dir.iterdir()] == ["port"]


@pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server missing: scripts/install-system-deps"
)
def test_a_killed_component_is_restarted_on_its_own_loopback_port_and_healthy_again(tmp_path):
    settings = harness.with_broker_port(
        _settings(tmp_path, executor="celery", metadata_dsn=METADATA_DSN), choose=True
    )
    settings.logs_dir.mkdir(parents=True)
    port = settings.redis_port
    first = harness.restart_component(settings, "redis")  # never ran: simply started
    try:
        assert celery_workers.redis_answers(port)
        with pytest.raises(harness.HarnessError, match="still runs"):
            harness.restart_component(settings, "redis")

        assert harness.kill_component(settings, "redis") is True
        assert not first.is_running()
        assert not celery_workers.redis_answers(port)
        assert harness.kill_component(settings, "redis") is False

        again = harness.restart_component(settings, "redis")
        assert again.pid != first.pid and again.is_running()
        assert celery_workers.redis_answers(port)
        assert {(ip, listening) for _, _, ip, listening in listening_sockets([again])} == {
            ("127.0.0.1", port)
        }
    finally:
        harness.down(settings)
