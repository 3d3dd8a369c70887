"""The Airflow internals the product relies on still have the shape it was written against.

One test per entry of ``compat.INTERNALS`` (its name is the test id, so a failure says which internal
broke and where to read up), plus a check that no other module of ``plugins/`` or ``dags/`` imports a
non-public Airflow module. Run these first after upgrading Airflow or a provider.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from managed_upgrade_airflow import compat

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = {entry.name: entry for entry in compat.INTERNALS}


def _resolve(path: str) -> object:
    module_name, _, qualname = path.partition(":")
    target: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _source(path: str) -> str:
    return inspect.getsource(_resolve(path))  # type: ignore[arg-type]


def _binds(path: str, *args: object, **kwargs: object) -> None:
    inspect.signature(_resolve(path)).bind(*args, **kwargs)  # type: ignore[arg-type]


def _columns(path: str) -> set[str]:
    return set(_resolve(path).__table__.columns.keys())  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- shape of each entry


def _supervisor_queries() -> None:
    rti = "airflow.sdk.execution_time.task_runner:RuntimeTaskInstance"
    _binds(f"{rti}.get_ti_count", dag_id="d", task_ids=["t"], run_ids=["r"], states=["running"])
    _binds(f"{rti}.get_dagrun_state", dag_id="d", run_id="r")
    runner = importlib.import_module("airflow.sdk.execution_time.task_runner")
    assert "SUPERVISOR_COMMS" in inspect.getsource(runner), "task_runner no longer has SUPERVISOR_COMMS"
    assert "SUPERVISOR_COMMS" in _source(f"{rti}.get_ti_count"), "get_ti_count no longer asks the supervisor"


def _listener_task_instance() -> None:
    task_instance = _resolve("airflow.models.taskinstance:TaskInstance")
    assert "dag_run" in task_instance.__mapper__.relationships  # type: ignore[attr-defined]
    source = _source("airflow.sdk.execution_time.task_runner:RuntimeTaskInstance.get_template_context")
    assert '"dag_run"' in source, "the runtime context no longer holds the run as dag_run"


def _manual_state_message() -> None:
    source = _source("airflow.api_fastapi.core_api.services.public.dag_run:patch_dag_run_state")
    assert compat.MANUAL_STATE_MESSAGE in source, f"{compat.MANUAL_STATE_MESSAGE!r} is not in the hook's msg"


def _dag_run_orm() -> None:
    assert {"dag_id", "run_id", "state", "conf", "queued_at", "start_date", "run_after"} <= _columns(
        "airflow.models.dagrun:DagRun"
    )
    states = _resolve("airflow.utils.state:DagRunState")
    assert {states.QUEUED.value, states.RUNNING.value} == {"queued", "running"}  # type: ignore[attr-defined]


def _fail_dag_run() -> None:
    _binds(
        "airflow.api.common.mark_tasks:set_dag_run_state_to_failed",
        dag=None,
        run_id="r",
        commit=True,
        session=None,
    )
    _binds("airflow.models.dagbag:DBDagBag", load_op_links=False)
    _binds("airflow.models.dagbag:DBDagBag.get_dag_for_run", None, None, session=None)


def _hitl_detail_orm() -> None:
    columns = _columns("airflow.models.hitl:HITLDetail")
    assert {"ti_id", "responded_at", "responded_by", "chosen_options", "params_input"} <= columns
    assert {"id", "dag_id", "run_id", "task_id"} <= _columns("airflow.models.taskinstance:TaskInstance")


def _dag_run_trigger() -> None:
    error = compat.trigger_dag_run_and_wait(dag_id="d", run_id="r", conf={"a": 1}, note="n", poll_seconds=5)
    assert isinstance(error, _resolve("airflow.sdk.exceptions:DagRunTriggerException"))  # type: ignore[arg-type]
    assert (error.trigger_dag_id, error.dag_run_id, error.deferrable) == ("d", "r", True)  # type: ignore[attr-defined]
    handler = _source("airflow.sdk.execution_time.task_runner:_handle_trigger_dag_run")
    assert "DagStateTrigger" in handler and "reset_dag_run" in handler
    trigger_class = _resolve("airflow.providers.standard.triggers.external_task:DagStateTrigger")
    trigger = trigger_class(dag_id="d", states=["success", "failed"], run_ids=["r"], poll_interval=5)  # type: ignore[operator]
    classpath, data = trigger.serialize()
    assert compat.triggered_run_outcome((classpath, {**data, "r": "success"})) == ("r", "success")


def _hitl_params_input() -> None:
    source = _source("airflow.providers.standard.operators.hitl:HITLOperator.execute_complete")
    assert "validate_params_input" in source, "execute_complete no longer routes the input through it"
    hitl = _resolve("airflow.providers.standard.operators.hitl:HITLOperator")
    gate = type("Gate", (compat.AcceptAnyParamsInput, hitl), {})  # type: ignore[misc]
    assert gate.validate_params_input is compat.AcceptAnyParamsInput.validate_params_input


def _deadline_reference_evaluate_with() -> None:
    module = "airflow.serialization.definitions.deadline:SerializedReferenceModels"
    source = _source(f"{module}.SerializedCustomReference.evaluate_with")
    assert re.search(rf"\.{compat.EVALUATE_WITH}\(\s*session=session", source), (
        "evaluate_with no longer calls it"
    )
    from managed_upgrade_airflow.run_deadlines import ManagedUpgradeDeadline

    method = getattr(ManagedUpgradeDeadline, compat.EVALUATE_WITH)
    assert inspect.signature(method).parameters["session"].kind is inspect.Parameter.KEYWORD_ONLY


def _smtp_client() -> None:
    source = _source("airflow.providers.smtp.hooks.smtp:SmtpHook.get_conn")
    assert "self._smtp_client" in source, "get_conn no longer keeps the client in _smtp_client"
    hook = _resolve("airflow.providers.smtp.hooks.smtp:SmtpHook")()  # type: ignore[operator]
    assert compat.smtp_client_of(hook) is None  # a hook not entered has no client


def _ssh_remote_job_wrapper() -> None:
    job = compat.detached_job(
        dag_id="managed_upgrade__acme",
        task_id="uat.upgrade",
        run_id="manual__2026-01-05",
        try_number=2,
        base_dir="/srv/crm/jobs",
        command="/srv/crm/installer --to 11.1.0",
    )
    assert job.job_dir.startswith("/srv/crm/jobs/") and job.job_id in job.job_dir
    assert job.log_file.startswith(job.job_dir) and job.exit_code_file.startswith(job.job_dir)
    assert "/srv/crm/installer --to 11.1.0" in job.start_command and job.job_id in job.start_command
    trigger = "airflow.providers.ssh.triggers.ssh_remote_job:SSHRemoteJobTrigger"
    _binds(
        trigger,
        ssh_conn_id="c",
        remote_host=None,
        job_id=job.job_id,
        job_dir=job.job_dir,
        log_file=job.log_file,
        exit_code_file=job.exit_code_file,
        remote_os="posix",
        poll_interval=5,
        log_offset=0,
    )


def _fab_security_manager() -> None:
    source = _source("airflow.providers.fab.auth_manager.cli_commands.utils:get_application_builder")
    assert "yield" in source and "appbuilder" in source, (
        "get_application_builder no longer yields an appbuilder"
    )
    manager = "airflow.providers.fab.auth_manager.security_manager.override:FabAirflowSecurityManagerOverride"
    _binds(f"{manager}.add_role", None, "customer_acme")
    _binds(f"{manager}.add_permission_to_role", None, None, None)
    _binds(f"{manager}.add_user", None, "carla", "carla", "-", "carla@example.com", [], "secret")
    for method in ("find_role", "get_permission", "create_permission", "find_user", "update_user"):
        assert callable(_resolve(f"{manager}.{method}")), method


def _plugin_app_auth() -> None:
    base = "airflow.api_fastapi.auth.managers.base_auth_manager"
    assert _resolve(f"{base}:COOKIE_NAME_JWT_TOKEN") == compat.JWT_COOKIE, "the UI's JWT cookie was renamed"
    assert inspect.iscoroutinefunction(_resolve(f"{base}:BaseAuthManager.get_user_from_token"))
    _binds(f"{base}:BaseAuthManager.filter_authorized_dag_ids", None, dag_ids={"d"}, user=None, method="GET")
    _binds(f"{base}:BaseAuthManager.is_authorized_dag", None, method="GET", details=None, user=None)
    details = _resolve("airflow.api_fastapi.auth.managers.models.resource_details:DagDetails")(id="d")  # type: ignore[operator]
    assert details.id == "d"  # type: ignore[attr-defined]
    source = _source("airflow.api_fastapi.core_api.security:get_user")
    assert "COOKIE_NAME_JWT_TOKEN" in source and "bearer" in source.lower(), (
        "get_user reads the token elsewhere"
    )


def _views_metadata_reads() -> None:
    assert {"dag_id", "is_stale"} <= _columns("airflow.models.dag:DagModel")
    assert {"ti_id", "subject", "assignees", "created_at", "responded_at"} <= _columns(
        "airflow.models.hitl:HITLDetail"
    )
    assert {"id", "dag_id", "run_id", "task_id", "map_index"} <= _columns(
        "airflow.models.taskinstance:TaskInstance"
    )
    assert {"dag_id", "run_id", "conf"} <= _columns("airflow.models.dagrun:DagRun")
    assert "yield session" in _source("airflow.utils.session:create_session")


def _fab_auth_manager_hitl_users() -> None:
    _binds(
        "airflow.api_fastapi.auth.managers.base_auth_manager:BaseAuthManager.is_authorized_hitl_task",
        None,
        assigned_users={"carla"},
        user=None,
    )
    from managed_upgrade_airflow.fab_auth_manager import FabAuthManager

    base = compat.fab_auth_manager_base()
    assert (
        issubclass(FabAuthManager, base) and "FabAuthManager" in f"{FabAuthManager.__module__}.FabAuthManager"
    )
    carla = type("User", (), {"get_id": lambda self: "7", "get_name": lambda self: "carla"})()
    manager = FabAuthManager.__new__(FabAuthManager)
    assert manager.is_authorized_hitl_task(assigned_users={"carla"}, user=carla)
    assert not manager.is_authorized_hitl_task(assigned_users={"gina"}, user=carla)


SHAPES: dict[str, Callable[[], None]] = {
    "supervisor_queries": _supervisor_queries,
    "listener_task_instance": _listener_task_instance,
    "manual_state_message": _manual_state_message,
    "dag_run_orm": _dag_run_orm,
    "fail_dag_run": _fail_dag_run,
    "hitl_detail_orm": _hitl_detail_orm,
    "dag_run_trigger": _dag_run_trigger,
    "hitl_params_input": _hitl_params_input,
    "deadline_reference_evaluate_with": _deadline_reference_evaluate_with,
    "smtp_client": _smtp_client,
    "ssh_remote_job_wrapper": _ssh_remote_job_wrapper,
    "fab_security_manager": _fab_security_manager,
    "plugin_app_auth": _plugin_app_auth,
    "views_metadata_reads": _views_metadata_reads,
    "fab_auth_manager_hitl_users": _fab_auth_manager_hitl_users,
}


def test_every_internal_has_a_shape_check_and_a_documented_reason():
    assert sorted(SHAPES) == sorted(ENTRIES)
    for entry in compat.INTERNALS:
        assert entry.uses and entry.works_around and entry.why_not_public and entry.upstream, entry.name
        assert entry.symbols and entry.functions, entry.name


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_the_internal_still_has_the_shape_the_product_uses(name):
    entry = ENTRIES[name]
    for symbol in entry.symbols:
        try:
            _resolve(symbol)
        except (ImportError, AttributeError) as error:
            pytest.fail(
                f"Airflow internal {name!r}: {symbol} is gone ({error}); see compat.INTERNALS[{name!r}]"
            )
    for function in entry.functions:
        assert hasattr(compat, function), f"compat.INTERNALS[{name!r}] names a missing compat.{function}"
    try:
        SHAPES[name]()
    except Exception as error:
        pytest.fail(f"Airflow internal {name!r} changed shape: {type(error).__name__}: {error}")


def test_the_installed_airflow_is_the_one_the_internals_were_checked_against():
    import airflow

    assert airflow.__version__ == compat.AIRFLOW_VERSION, (
        f"Airflow {airflow.__version__} is installed, compat was checked against {compat.AIRFLOW_VERSION}: "
        f"re-read every entry ({', '.join(ENTRIES)}) and then set AIRFLOW_VERSION"
    )


def test_every_compat_function_that_touches_airflow_belongs_to_an_entry():
    listed = {function for entry in compat.INTERNALS for function in entry.functions}
    tree = ast.parse(Path(compat.__file__).read_text())
    unlisted = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            imports_airflow = any(
                isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("airflow")
                for inner in ast.walk(node)
            )
            if imports_airflow and node.name not in listed:
                unlisted.append(node.name)
    assert unlisted == []


# ------------------------------------------------------------------------ nowhere else

PUBLIC = re.compile(
    r"airflow\.sdk|airflow\.sdk\.exceptions|airflow\.plugins_manager|airflow\.listeners|airflow\.triggers\.base"
    r"|airflow\.providers\.[a-z_.]+\.(hooks|operators|sensors|triggers|notifications)(\.[a-z_]+)*"
)
"""Airflow's public interface as the product uses it: the task SDK, plugins, listener hookimpl, the
trigger base class and the providers' hooks, operators, sensors, triggers and notifiers."""


def _airflow_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, module) for line, module in found if module == "airflow" or module.startswith("airflow.")]


def test_only_compat_imports_non_public_airflow_modules():
    sources = sorted([*(ROOT / "plugins").rglob("*.py"), *(ROOT / "dags").rglob("*.py")])
    assert len(sources) > 20
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sources
        if path.name != "compat.py"
        for line, module in _airflow_imports(path)
        if not PUBLIC.fullmatch(module)
    ]
    assert offenders == [], "non-public Airflow imports outside compat.py:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("module", "public"),
    [
        ("airflow.sdk", True),
        ("airflow.providers.ssh.hooks.ssh", True),
        ("airflow.providers.standard.triggers.external_task", True),
        ("airflow.models.dagrun", False),
        ("airflow.sdk.execution_time.task_runner", False),
        ("airflow.providers.ssh.utils.remote_job", False),
        ("airflow.utils.state", False),
    ],
)
def test_the_public_interface_pattern(module, public):
    assert bool(PUBLIC.fullmatch(module)) is public
