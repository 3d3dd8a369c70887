"""Paths confined: an environment's folders lie under its allowed roots, system paths are refused
whatever the roots say, and every operation re-checks before it writes or deletes.

The remote half (symlinks resolved on a real host, nothing touched on refusal) is
``tests/integration/test_path_policy_remote.py``; here are the rules, the config's refusals, the host
agent's ``remove`` on the local file system, and the roots reaching the operations.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from managed_upgrade.config import CustomerConfigError, load_customer_config, parse_customer_config
from managed_upgrade.operations.backup import BackupTarget
from managed_upgrade.operations.staging import StagingTarget
from managed_upgrade.operations.upgrade import UpgradePlan
from managed_upgrade.transport import host_agent
from managed_upgrade.transport.path_policy import (
    DEFAULT_ALLOWED_ROOTS,
    PathPolicyError,
    path_problem,
    require_under,
    root_problem,
)

REPO = Path(__file__).resolve().parents[3]
ACME = REPO / "include" / "customers" / "acme.yaml"
SOURCE = "acme.yaml"
ROOTS = ("/opt", "/srv/crm", "/var/opt", "/data", "/home/crm", "/tmp/crm-estate/hosts/dev")


# --- the rules ----------------------------------------------------------------------------------------

ALWAYS_REFUSED = [
    "/",
    "/bin/crm",
    "/boot/crm",
    "/dev/shm/crm",
    "/etc",
    "/etc/cron.d/crm",
    "/lib/crm",
    "/lib64/crm",
    "/libx32/crm",
    "/proc/self/cwd",
    "/root/crm",
    "/run/crm",
    "/sbin/crm",
    "/sys/crm",
    "/usr/local/crm",
    "/var",
    "/var/lib/crm",
    "/var/log/crm",
    "/var/tmp",
    "/home",
    "/tmp",
    "/opt",  # a shared parent (and here an allowed root) itself
    "/var/opt",
    "/home/crm/.ssh/backups",
    "/opt/crm/.ssh",
    "/opt/crm/.gnupg/x",
    "//etc",
    "/opt/crm/../../etc",
    "/tmp/crm-estate/hosts/dev/../../../../etc/x",
    "relative/path",
    "",
]


@pytest.mark.parametrize("path", ALWAYS_REFUSED)
def test_system_paths_are_refused_whatever_the_roots_say(path: str) -> None:
    everything = (*ROOTS, "/etc", "/var", "/usr", "/home", "/tmp")  # even roots that should not be
    assert path_problem(path, everything) is not None
    assert path_problem(path, None) is not None or path in ("/opt/crm/../../etc",)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/srv/crm", "is the allowed root /srv/crm itself; use a folder below it"),
        ("/srv/other/crm", "is not under the allowed roots (/opt, /srv/crm, /var/opt, /data, /home/crm, "
                           "/tmp/crm-estate/hosts/dev)"),
        ("/tmp/crm-estate/hosts/uat/crm", "is not under the allowed roots"),
        ("/tmp/crm-estate/hosts/devil/crm", "is not under the allowed roots"),  # a prefix is not a parent
        ("/etc/crm", "is in the system directory /etc"),
        ("/var/lib/crm", "is in the system directory /var"),
        ("/home", "is /home itself; only a folder below it can be used"),
        ("/home/crm/.ssh/x", "goes through .ssh; key material is never written or deleted"),
        ("/opt/crm/../../etc/x", "is in the system directory /etc"),
    ],
)  # fmt: skip
def test_refusals_say_why(path: str, problem: str) -> None:
    found = path_problem(path, ROOTS)
    assert found is not None and found.startswith(problem), found


@pytest.mark.parametrize(
    "path",
    [
        "/opt/crm/acme",
        "/srv/crm/acme",
        "/var/opt/crm/acme",
        "/data/crm",
        "/home/crm/install",
        "/tmp/crm-estate/hosts/dev/crm/acme",
        "/opt/crm/./acme//x",
    ],
)
def test_paths_below_a_root_are_allowed(path: str) -> None:
    assert path_problem(path, ROOTS) is None
    assert require_under(path, ROOTS) == os.path.normpath(path)


@pytest.mark.parametrize(
    ("root", "problem"),
    [
        ("/", "is / itself"),
        ("/etc", "is in the system directory /etc"),
        ("/var/lib", "is in the system directory /var"),
        ("/usr/local", "is in the system directory /usr"),
        ("/home/crm/.ssh", "goes through .ssh"),
        ("crm", "is not an absolute path"),
    ],
)
def test_bad_roots_are_refused(root: str, problem: str) -> None:
    found = root_problem(root)
    assert found is not None and found.startswith(problem), found


@pytest.mark.parametrize(
    "root", [*DEFAULT_ALLOWED_ROOTS, "/home", "/tmp", "/var/local", "/tmp/crm-estate/hosts/dev"]
)
def test_shared_parents_may_be_roots(root: str) -> None:
    assert root_problem(root) is None


def test_require_under_names_the_path_and_the_roots() -> None:
    with pytest.raises(PathPolicyError) as caught:
        require_under("/srv/backups/acme", ("/opt", "/data"), action="delete", label="dev")
    assert str(caught.value) == (
        "dev: refusing to delete /srv/backups/acme: it is not under the allowed roots (/opt, /data); "
        "nothing was changed"
    )
    with pytest.raises(PathPolicyError) as caught:
        require_under("/etc/crm", ("/opt",), action="write to")
    assert str(caught.value) == (
        "refusing to write to /etc/crm: it is in the system directory /etc (allowed roots: /opt); "
        "nothing was changed"
    )
    with pytest.raises(PathPolicyError, match=r"not under the allowed roots \(none given\)"):
        require_under("/opt/crm", ())


# --- the config -----------------------------------------------------------------------------------


def acme_data() -> dict[str, Any]:
    return yaml.safe_load(ACME.read_text())


def problems_of(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(CustomerConfigError) as caught:
        parse_customer_config(data, SOURCE, file_stem="acme")
    return caught.value.problems


def test_example_customers_declare_their_estate_roots() -> None:
    for customer in ("acme", "globex", "initech"):
        config = load_customer_config(REPO / "include" / "customers" / f"{customer}.yaml")
        for name, env in config.environments.items():
            assert env.allowed_roots == (f"/tmp/crm-estate/hosts/{name}",)


def test_default_roots_refuse_paths_elsewhere() -> None:
    data = acme_data()
    del data["environments"]["dev"]["allowed_roots"]
    roots = ", ".join(DEFAULT_ALLOWED_ROOTS)
    assert problems_of(data) == tuple(
        f"{SOURCE}: environments.dev.{field}: is not under the allowed roots ({roots}) "
        f"(got '/tmp/crm-estate/hosts/dev/{folder}/acme')"
        for field, folder in (
            ("install_path", "crm"),
            ("staging_path", "staging"),
            ("backup_path", "backups"),
        )
    )
    data["environments"]["dev"].update(
        install_path="/opt/crm/acme", staging_path="/srv/staging/acme", backup_path="/data/backups/acme"
    )
    config = parse_customer_config(data, SOURCE, file_stem="acme")
    assert config.environment("dev").allowed_roots == DEFAULT_ALLOWED_ROOTS


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("install_path", "/etc/crm", "is in the system directory /etc (got '/etc/crm')"),
        ("install_path", "/tmp/crm-estate/hosts/dev", "is the allowed root /tmp/crm-estate/hosts/dev itself; "
         "use a folder below it (got '/tmp/crm-estate/hosts/dev')"),
        ("staging_path", "/tmp/crm-estate/hosts/uat/staging", "is not under the allowed roots "
         "(/tmp/crm-estate/hosts/dev) (got '/tmp/crm-estate/hosts/uat/staging')"),
        ("backup_path", "/root/.ssh/backups", "goes through .ssh; key material is never written or deleted"),
        ("backup_path", "/home", "is /home itself; only a folder below it can be used (got '/home')"),
        ("install_path", "/tmp/crm-estate/hosts/dev/crm/../../../../etc",
         "not a valid absolute path: it must not contain a '..' segment"),
    ],
)  # fmt: skip
def test_paths_outside_the_roots_are_refused_naming_file_and_field(
    field: str, value: str, message: str
) -> None:
    data = acme_data()
    data["environments"]["dev"][field] = value
    lines = problems_of(data)
    assert lines[0].startswith(f"{SOURCE}: environments.dev.{field}: {message}"), lines


@pytest.mark.parametrize(
    ("roots", "message"),
    [
        (["/"], "allowed_roots[0]: is / itself; name the folders operations may use, such as /opt or /srv "
                "(got '/')"),
        (["/etc"], "allowed_roots[0]: is in the system directory /etc (got '/etc')"),
        (["/tmp/crm-estate/hosts/dev", "/var/lib"], "allowed_roots[1]: is in the system directory /var "
                                                    "(got '/var/lib')"),
        ([], "allowed_roots: must not be empty"),
        (["relative"], "allowed_roots[0]: not a valid absolute path"),
        ([f"/opt/r{i}" for i in range(17)], "allowed_roots: Tuple should have at most 16 items"),
    ],
)  # fmt: skip
def test_bad_allowed_roots_are_refused(roots: list[str], message: str) -> None:
    data = acme_data()
    data["environments"]["dev"]["allowed_roots"] = roots
    lines = problems_of(data)
    assert lines[0].startswith(f"{SOURCE}: environments.dev.{message}"), lines


# --- the host agent's remove, on this machine's file system -------------------------------------


@pytest.fixture
def area(tmp_path: Path) -> SimpleNamespace:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "crm").mkdir(parents=True)
    (root / "crm" / "file").write_text("inside")
    outside.mkdir()
    (outside / "victim").write_text("keep me")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file-link").symlink_to(outside / "victim")
    return SimpleNamespace(root=str(root), outside=outside)


def test_agent_removes_inside_the_roots(area: SimpleNamespace) -> None:
    assert host_agent.remove(f"{area.root}/crm", [area.root])["removed"] is True
    assert not os.path.exists(f"{area.root}/crm")
    assert host_agent.remove(f"{area.root}/crm", [area.root])["removed"] is False


def test_agent_refuses_a_path_through_a_symlink_out_of_the_roots(area: SimpleNamespace) -> None:
    with pytest.raises(SystemExit, match=r"it is really .*/outside/victim, which is not under the allowed"):
        host_agent.remove(f"{area.root}/link/victim", [area.root])
    assert (area.outside / "victim").read_text() == "keep me"


def test_agent_removes_a_symlink_itself_never_its_target(area: SimpleNamespace) -> None:
    assert host_agent.remove(f"{area.root}/link", [area.root])["removed"] is True
    assert host_agent.remove(f"{area.root}/file-link", [area.root])["removed"] is True
    assert (area.outside / "victim").read_text() == "keep me"


def test_agent_refuses_paths_as_written(area: SimpleNamespace) -> None:
    for path in (f"{area.root}/../outside/victim", area.root, "/etc/hostname"):
        with pytest.raises(SystemExit, match="refusing to remove"):
            host_agent.remove(path, [area.root])
    with pytest.raises(SystemExit, match="is in the system directory /etc"):
        host_agent.remove("/etc/hostname")
    assert (area.outside / "victim").exists()


def test_agent_command_line(area: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    assert host_agent.main(["remove", f"{area.root}/crm/file", area.root]) == 0
    assert '"removed":true' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="refusing to remove"):
        host_agent.main(["remove", f"{area.root}/link/victim", area.root])


# --- the roots reach the operations ---------------------------------------------------------------


HOST = SimpleNamespace(label="dev")
ESTATE_ROOTS = ("/tmp/crm-estate/hosts/dev",)


def test_operation_targets_refuse_paths_outside_their_roots() -> None:
    good = {
        "install_path": "/tmp/crm-estate/hosts/dev/crm/acme",
        "staging_path": "/tmp/crm-estate/hosts/dev/staging/acme",
        "backup_path": "/tmp/crm-estate/hosts/dev/backups/acme",
    }
    UpgradePlan(
        **good, backup_id="20270101T000000Z-dev-abcdef", target_version="11.0.0", allowed_roots=ESTATE_ROOTS
    )
    for field in good:
        with pytest.raises(PathPolicyError, match="not under the allowed roots"):
            UpgradePlan(
                **{**good, field: "/srv/elsewhere"},
                backup_id="20270101T000000Z-dev-abcdef",
                target_version="11.0.0",
                allowed_roots=ESTATE_ROOTS,
            )
    with pytest.raises(PathPolicyError, match="refusing to write backups to /srv/backups"):
        BackupTarget(
            "acme", "dev", HOST, good["install_path"], "/srv/backups", None, allowed_roots=ESTATE_ROOTS
        )  # type: ignore[arg-type]
    with pytest.raises(PathPolicyError, match="refusing to back up /etc"):
        BackupTarget("acme", "dev", HOST, "/etc", good["backup_path"], None)  # type: ignore[arg-type]
    with pytest.raises(PathPolicyError, match="refusing to stage a release in /srv/staging"):
        StagingTarget("dev", HOST, "/srv/staging", ESTATE_ROOTS)  # type: ignore[arg-type]


def test_operators_take_the_roots_from_the_config() -> None:
    from managed_upgrade_airflow.operators.backup_environment import BackupEnvironmentOperator
    from managed_upgrade_airflow.operators.reapply_settings import ReapplySettingsOperator
    from managed_upgrade_airflow.operators.stage_release import StageReleaseOperator
    from managed_upgrade_airflow.operators.upgrade_environment import UpgradeEnvironmentOperator

    config = load_customer_config(ACME)
    backup = BackupEnvironmentOperator.for_environment(config, "uat", task_id="backup")
    assert backup.allowed_roots == ["/tmp/crm-estate/hosts/uat"]
    upgrade = UpgradeEnvironmentOperator.for_environment(
        config, "prod", backup_id="20270101T000000Z-prod-abcdef", task_id="upgrade"
    )
    assert upgrade._plan().allowed_roots == ("/tmp/crm-estate/hosts/prod",)
    reapply = ReapplySettingsOperator.for_environment(config, "dev", backup_id="x", task_id="reapply")
    assert reapply.allowed_roots == ["/tmp/crm-estate/hosts/dev"]
    stage = StageReleaseOperator.for_customer(config, task_id="stage")
    assert {name: spec["allowed_roots"] for name, spec in stage.environments.items()} == {
        name: [f"/tmp/crm-estate/hosts/{name}"] for name in ("dev", "uat", "prod")
    }


def test_fixture_configs_keep_their_paths_under_declared_roots() -> None:
    for fixture in sorted((REPO / "tests" / "fixtures" / "configs").glob("*.yaml")):
        text = fixture.read_text()
        if "install_path" not in text or "yaml_syntax" in fixture.name or "duplicate_key" in fixture.name:
            continue
        data = yaml.safe_load(text)
        for name, env in data["environments"].items():
            roots = env.get("allowed_roots", list(DEFAULT_ALLOWED_ROOTS))
            if "overlapping" in fixture.name or "shell_injection" in fixture.name:
                continue
            for field in ("install_path", "staging_path", "backup_path"):
                assert path_problem(env[field], roots) is None, (fixture.name, name, field)
        assert copy.deepcopy(data)  # parsed
