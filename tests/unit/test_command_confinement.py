"""Command test cases run a program of the installation or of the environment's allow-list, never a shell,
never as root, bounded in time: checked when the config is loaded and again on the SSH command line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from managed_upgrade.config import CustomerConfigError, parse_customer_config
from managed_upgrade.config.test_cases import program_problem, refused_program
from managed_upgrade.input_files import read_yaml_mapping
from managed_upgrade.verification.runner import RefusedCaseError
from managed_upgrade_airflow.testcase_executors import _PROBE, SshCommandExecutor

ACME = Path(__file__).resolve().parents[2] / "include" / "customers" / "acme.yaml"


@pytest.mark.parametrize(
    ("program", "allowed", "problem"),
    [
        ("bin/crm", (), None),
        ("lib/tools/check-db", (), None),
        ("test", ("test",), None),
        ("/usr/bin/test", ("/usr/bin/test",), None),
        ("test", (), "test is not listed in allowed_programs"),
        ("/usr/bin/test", ("test",), "/usr/bin/test is not listed in allowed_programs"),
        ("cat", ("test",), "cat is not listed in allowed_programs"),
        ("bin/../../bin/id", (), "must be written plainly"),
        ("./bin/crm", (), "must be written plainly"),
        ("bin//crm", (), "must be written plainly"),
        ("-c", (), "must be written plainly"),
        (".", (), "must be written plainly"),
        ("..", (), "must be written plainly"),
        ("bin crm", (), "not a valid program"),
        ("bin/crm;id", (), "not a valid program"),
        ("$(id)", (), "not a valid program"),
    ],
)
def test_where_a_program_may_come_from(program: str, allowed: tuple[str, ...], problem: str | None) -> None:
    found = program_problem(program, allowed)
    assert (found is None) if problem is None else (problem in (found or "")), found


@pytest.mark.parametrize(
    "program",
    [
        "sh", "bash", "dash", "zsh", "ksh", "fish", "busybox", "toybox", "/bin/sh", "/usr/bin/bash",
        "bin/sh", "env", "/usr/bin/env", "xargs", "find", "nohup", "timeout", "sudo", "su", "setpriv",
        "python", "python3", "python3.11", "Python3", "perl", "perl5.36", "ruby", "node", "php", "lua5.4",
        "awk", "gawk", "sed", "vim", "less", "ssh", "git", "tar", "psql", "eval", "exec", "source",
    ],
)  # fmt: skip
def test_shells_and_program_runners_are_refused_by_name_even_when_listed(program: str) -> None:
    assert refused_program(program)
    problem = program_problem(program, (program,))
    assert problem is not None
    assert "is a shell, an interpreter or runs other programs" in problem


@pytest.mark.parametrize("program", ["test", "grep", "cat", "id", "ls", "stat", "head", "sha256sum"])
def test_ordinary_tools_may_be_allowed(program: str) -> None:
    assert refused_program(program) is None
    assert program_problem(program, (program,)) is None


# --- at config load --------------------------------------------------------------------------------


def acme(**environment: Any) -> dict[str, Any]:
    data = read_yaml_mapping(ACME, CustomerConfigError)
    for env in ("dev", "uat", "prod"):
        data["environments"][env].update(environment)
    return data


def problems(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(CustomerConfigError) as caught:
        parse_customer_config(data, "acme.yaml", file_stem="acme")
    return tuple(caught.value.problems)


def test_a_program_not_allowed_on_an_environment_is_refused_when_loaded() -> None:
    data = acme()
    data["test_cases"].append(
        {
            "id": "who",
            "title": "Who",
            "kind": "command",
            "argv": ["id", "-u"],
            "environments": ["uat", "prod"],
        }
    )
    assert problems(data) == (
        "acme.yaml: test_cases[3].argv[0]: id is not listed in allowed_programs (a program of the "
        "installation is written as its path, such as bin/crm) (on uat, prod)",
    )
    data["environments"]["uat"]["allowed_programs"] = ["test", "grep", "id"]
    data["environments"]["prod"]["allowed_programs"] = ["id"]
    config = parse_customer_config(data, "acme.yaml", file_stem="acme")
    assert config.environment("prod").allowed_programs == ("id",)


def test_a_shell_is_refused_in_a_case_and_in_allowed_programs() -> None:
    data = acme(allowed_programs=["sh"])
    refused = problems(data)
    assert refused[0] == (
        "acme.yaml: environments.dev.allowed_programs[0]: sh cannot be allowed: it is a shell, an "
        "interpreter or runs other programs"
    )
    data = acme()
    data["test_cases"][0]["argv"] = ["bash", "-c", "id"]
    (problem,) = problems(data)
    assert problem.startswith("acme.yaml: test_cases[0].argv[0]: bash is a shell, an interpreter")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("bin/crm", "list programs by name"),
        ("/usr/bin/../bin/sh", "is a shell"),
        ("/opt/../etc/x", "must be written plainly"),
        ("te st", "not a valid program"),
    ],
)
def test_allowed_programs_entries_are_names_or_plain_absolute_paths(entry: str, problem: str) -> None:
    (first, *_rest) = problems(acme(allowed_programs=[entry]))
    assert first.startswith("acme.yaml: environments.dev.allowed_programs[0]: ")
    assert problem in first


def test_the_read_only_connection_must_not_be_the_admin_connection() -> None:
    data = acme()
    data["environments"]["prod"]["test_db_conn_id"] = data["environments"]["prod"]["db_conn_id"]
    assert problems(data) == (
        "acme.yaml: environments.prod.test_db_conn_id: must differ from db_conn_id: test queries run as "
        "a read-only role of their own",
    )


# --- on the SSH command line ---------------------------------------------------------------------


@dataclass
class FakeChannel:
    answers: dict[str, tuple[int, str]]
    commands: list[str]
    stdout: bytes = b""
    exit_code: int = 0
    eof_received: bool = True
    closed: bool = False

    def exec_command(self, command: str) -> None:
        self.commands.append(command)
        code, text = self.answers.get(command, self.answers["*"])
        self.exit_code, self.stdout = code, text.encode()

    def shutdown_write(self) -> None:
        pass

    def recv_ready(self) -> bool:
        return bool(self.stdout)

    def recv(self, size: int) -> bytes:
        chunk, self.stdout = self.stdout[:size], self.stdout[size:]
        return chunk

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return True

    def recv_exit_status(self) -> int:
        return self.exit_code

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeHost:
    """A :class:`~managed_upgrade.transport.remote.RemoteHost` whose SSH sessions answer from a table."""

    answers: dict[str, tuple[int, str]]
    commands: list[str] = field(default_factory=list)
    label: str = "dev"

    @property
    def client(self) -> Any:
        return self

    def get_transport(self) -> Any:
        return self

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> FakeChannel:
        return FakeChannel(self.answers, self.commands)


ROOT_LOGIN = "0\n65534\n65534\n/usr/bin/setpriv\n/usr/bin/timeout\n"
SERVICE_LOGIN = "999\n65534\n65534\n/usr/bin/setpriv\n/usr/bin/timeout\n"


def test_a_service_login_runs_the_program_under_timeout_with_exec() -> None:
    host = FakeHost({_PROBE: (0, SERVICE_LOGIN), "*": (0, "ok\n")})
    result = SshCommandExecutor(host).run(["bin/crm", "status"], cwd="/srv/crm/acme", timeout=4.2)  # type: ignore[arg-type]
    assert (result.exit_code, result.stdout) == (0, "ok\n")
    assert host.commands == [_PROBE, "cd /srv/crm/acme && exec timeout --kill-after=2 6 bin/crm status"]


def test_a_root_login_never_runs_a_case_as_root() -> None:
    host = FakeHost({_PROBE: (0, ROOT_LOGIN), "*": (0, "")})
    executor = SshCommandExecutor(host, allowed_programs=("id",))  # type: ignore[arg-type]
    executor.run(["id", "-u"], cwd="/srv/crm/acme", timeout=10)
    executor.run(["bin/crm", "status"], cwd="/srv/crm/acme", timeout=10)
    assert host.commands[1:] == [
        "cd /srv/crm/acme && exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs -- "
        "timeout --kill-after=2 11 id -u",
        "cd /srv/crm/acme && exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs -- "
        "timeout --kill-after=2 11 bin/crm status",
    ]
    assert host.commands.count(_PROBE) == 1  # learnt once per session
    assert executor.login_uid == 0


def test_a_root_login_without_setpriv_is_refused() -> None:
    host = FakeHost({_PROBE: (0, "0\n\n\n\n/usr/bin/timeout\n"), "*": (0, "")})
    with pytest.raises(RefusedCaseError, match="never run as root"):
        SshCommandExecutor(host).run(["bin/crm"], cwd="/srv", timeout=5)  # type: ignore[arg-type]
    assert host.commands == [_PROBE]


@pytest.mark.parametrize(
    "argv",
    [["sh", "-c", "id"], ["cat", "/etc/shadow"], ["/bin/sh"], ["bin/../../bin/sh"], ["eval", "id"]],
)
def test_the_executor_checks_the_program_again_before_opening_a_session(argv: list[str]) -> None:
    host = FakeHost({"*": (0, "")})
    with pytest.raises(RefusedCaseError):
        SshCommandExecutor(host, allowed_programs=("sh",)).run(argv, cwd="/srv", timeout=5)  # type: ignore[arg-type]
    assert host.commands == []


def test_quotes_and_shell_syntax_in_arguments_stay_arguments() -> None:
    host = FakeHost({_PROBE: (0, SERVICE_LOGIN), "*": (0, "")})
    SshCommandExecutor(host, allowed_programs=("printf",)).run(  # type: ignore[arg-type]
        ["printf", "%s|", "$(touch pwned)", "a b", "; rm -rf ~"], cwd="/srv/my crm", timeout=1
    )
    assert re.fullmatch(
        r"cd '/srv/my crm' && exec timeout --kill-after=2 2 printf '%s\|' '\$\(touch pwned\)' 'a b' "
        r"'; rm -rf ~'",
        host.commands[-1],
    )
