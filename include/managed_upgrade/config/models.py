"""The customer config contract: what ops write in ``include/customers/<customer_id>.yaml``.

Every model forbids unknown fields; every string is a kind of the one vocabulary of
:mod:`managed_upgrade.vocabulary` (strict ASCII patterns for what may reach a shell, a file name, SQL or
a mail header; bounded free text without control characters for names, reasons and answers), every
number a bounded :class:`~managed_upgrade.vocabulary.NumberRange`, every list bounded; an environment's
folders lie under its ``allowed_roots`` (:mod:`managed_upgrade.transport.path_policy`); and cross-field
rules live in model validators so a config that loads is one the DAG can run.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from managed_upgrade.config.base import ENVIRONMENT_NAMES, EnvironmentName, StrictModel
from managed_upgrade.config.test_cases import (
    AllowedProgram,
    CommandTestCase,
    HttpHost,
    HttpTestCase,
    SqlTestCase,
    TestCase,
    environment_problems,
)
from managed_upgrade.dag_ids import dag_id_for
from managed_upgrade.process.model import USER_ROLES, ProcessModel, Role, load_process_model
from managed_upgrade.transport.path_policy import (
    DEFAULT_ALLOWED_ROOTS,
    MAX_ALLOWED_ROOTS,
    environment_path_problems,
)
from managed_upgrade.vocabulary import (
    AbsolutePath,
    CaseId,
    ConnId,
    CustomerId,
    Email,
    Line,
    NumberRange,
    Product,
    QueueName,
    Text,
    TimeOfDay,
    TimezoneName,
    Username,
    Version,
    field_error,
    field_errors,
    parse_version,
    problem,
)

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _iso_date(value: Any) -> Any:
    """Accept YAML dates and ``YYYY-MM-DD`` strings only (pydantic would read an int as a timestamp);
    the vocabulary's ``date`` check, as the trigger form and the first task apply it."""
    if isinstance(value, date):
        return value
    found = problem("date", value)
    if found is not None:
        raise ValueError(found)
    return date.fromisoformat(value)


IsoDate = Annotated[date, BeforeValidator(_iso_date)]

MAX_LIST = 50
"""Lists of people, customizations, holidays, ... hold at most this many entries (test cases: 200)."""


def _scalar_as_text(value: Any) -> Any:
    """Questionnaire answers are text even when YAML reads ``120`` or ``yes`` as a number or a bool."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if isinstance(value, int | float | date) else value


class Contact(StrictModel):
    """A person who receives the process e-mails."""

    name: Line
    email: Email
    user: Username | None = Field(
        default=None,
        description="This person's Airflow user name, if they answer gates (see users); "
        "SLA alerts to a gate's owner go to this contact's e-mail.",
    )


class Contacts(StrictModel):
    """Who gets told: the customer's people, the consultants and the project managers."""

    customer: tuple[Contact, ...] = Field(min_length=1, max_length=MAX_LIST)
    consultant: tuple[Contact, ...] = Field(min_length=1, max_length=MAX_LIST)
    project_manager: tuple[Contact, ...] = Field(min_length=1, max_length=MAX_LIST)


class RequestCase(StrictModel):
    """The customer's service ticket: the seed's "Request an Upgrade" description fields."""

    case_id: CaseId
    earliest_start: IsoDate
    ideal_start: IsoDate
    deadline: IsoDate = Field(description="Deadline date for completion.")
    deadline_reason: Line
    access_acknowledged: StrictBool = Field(
        description="The customer acknowledges access to the development/staging system will be provided."
    )
    customizations: tuple[Line, ...] = Field(default=(), max_length=MAX_LIST)

    @model_validator(mode="after")
    def _ready_to_start(self) -> RequestCase:
        problems = []
        if not self.access_acknowledged:
            problems.append(
                ("access_acknowledged", "must be true: the upgrade cannot start until the customer "
                 "acknowledges that access to the development/staging system will be provided")
            )  # fmt: skip
        order = "need earliest_start <= ideal_start <= deadline"
        if self.earliest_start > self.ideal_start:
            problems.append(
                ("ideal_start", f"{self.ideal_start} is before earliest_start {self.earliest_start}; {order}")
            )
        if self.ideal_start > self.deadline:
            problems.append(
                ("deadline", f"{self.deadline} is before ideal_start {self.ideal_start}; {order}")
            )
        if problems:
            raise field_errors(problems)
        return self


class Questionnaire(StrictModel):
    """The completed upgrade questionnaire: its answers, or where to find them (at least one)."""

    location: Line | None = Field(default=None, description="Where the answers are, e.g. a document link.")
    answers: dict[Line, Annotated[Text, BeforeValidator(_scalar_as_text)]] = Field(
        default_factory=dict, max_length=200, description="Multi-line text answers by question."
    )

    @model_validator(mode="after")
    def _answers_or_location(self) -> Questionnaire:
        if self.location is None and not self.answers:
            raise field_error("answers", "give the questionnaire answers or their location (or both)")
        return self


class Versions(StrictModel):
    """The version running now and the one to upgrade to (numbers compared, so 10.10.0 > 10.9.0)."""

    current: Version
    target: Version

    @model_validator(mode="after")
    def _target_is_newer(self) -> Versions:
        if parse_version(self.target) <= parse_version(self.current):
            raise field_error(
                "target", f"{self.target} must be newer than the current version {self.current}"
            )
        return self


class ReleaseSource(StrictModel):
    """Where the upgrade files come from: ``<root of conn_id>/<product>/<version>/`` with SHA256SUMS.

    ``conn_id`` names an Airflow connection of type ``fs`` whose ``extra.path`` is the repository root.
    """

    conn_id: ConnId
    product: Product


MAX_UPGRADE_WINDOWS = 20
"""Upgrade windows per environment (a weekly pattern needs a handful)."""
MAX_FREEZE_DAYS = 366
"""Longest change freeze: the search for the next opening looks one year ahead, so a longer freeze
could only ever say "no window"."""


def _time_as_text(value: Any) -> Any:
    """YAML 1.1 reads an unquoted ``22:00`` as the base-60 number 1320: refuse it with the fix."""
    if isinstance(value, int) and not isinstance(value, bool):
        hint = f" ('{value // 60:02d}:{value % 60:02d}')" if 0 <= value <= 1440 else ""
        raise ValueError(
            f"write the time in quotes{hint}: YAML reads an unquoted HH:MM as a number (got {value})"
        )
    return value


QuotedTime = Annotated[TimeOfDay, BeforeValidator(_time_as_text)]


class UpgradeWindow(StrictModel):
    """When an environment may be upgraded: on ``days``, from ``start`` to ``end``, customer local time.

    ``end`` earlier than ``start`` runs overnight into the next day (``days`` name the day the window
    opens); ``end: "24:00"`` is midnight at the end of the day. Times are wall-clock times in the
    calendar's time zone; one the clocks skip (DST) means the instant they jump to, a repeated one
    its first occurrence.
    """

    days: tuple[Weekday, ...] = Field(min_length=1, max_length=7)
    start: QuotedTime
    end: QuotedTime

    @field_validator("days")
    @classmethod
    def _days_once(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(days)) != len(days):
            raise ValueError(f"lists a day twice: {list(days)}")
        return days

    @model_validator(mode="after")
    def _well_formed(self) -> UpgradeWindow:
        if self.start == "24:00":
            raise field_error("start", "24:00 is the end of a day; start the window at 00:00 of the next day")
        if self.start == self.end:
            raise field_error(
                "end", f"equals start {self.start}; for a whole day use start '00:00' and end '24:00'"
            )
        return self


class ChangeFreeze(StrictModel):
    """Days on which no upgrade starts (whole local days, ``start`` to ``end`` inclusive), and why."""

    start: IsoDate
    end: IsoDate
    reason: Line

    @model_validator(mode="after")
    def _ordered(self) -> ChangeFreeze:
        if self.end < self.start:
            raise field_error("end", f"{self.end} is before start {self.start}; need start <= end")
        if (self.end - self.start).days + 1 > MAX_FREEZE_DAYS:
            raise field_error(
                "end",
                f"the freeze lasts {(self.end - self.start).days + 1} days, more than the "
                f"{MAX_FREEZE_DAYS} allowed; split it or shorten it",
            )
        return self


class Environment(StrictModel):
    """One CRM environment: how to reach its host and config DB, and where things live on the host."""

    ssh_conn_id: ConnId
    db_conn_id: ConnId
    install_path: AbsolutePath
    staging_path: AbsolutePath
    backup_path: AbsolutePath
    backup_retention: Annotated[int, NumberRange(1, 100, integer=True)] = Field(
        default=3, description="Backups kept per kind."
    )
    allowed_roots: tuple[AbsolutePath, ...] = Field(
        default=DEFAULT_ALLOWED_ROOTS,
        min_length=1,
        max_length=MAX_ALLOWED_ROOTS,
        description="Absolute folders on the host below which install_path, staging_path and backup_path "
        f"must lie (default {', '.join(DEFAULT_ALLOWED_ROOTS)}); operations re-check it before they write "
        "or delete. Whatever the roots say, / and system directories (/etc, /usr, /var except /var/opt "
        "and /var/local, ...), /home or /tmp themselves, a root itself and any path through .ssh are "
        "refused.",
    )
    test_db_conn_id: ConnId | None = Field(
        default=None,
        description="Connection of the read-only database role the sql test cases run as (SELECT grants "
        "only, default_transaction_read_only = on). Without it sql cases run as db_conn_id on dev and "
        "uat (read-only transaction) and are refused on prod.",
    )
    allowed_programs: tuple[AllowedProgram, ...] = Field(
        default=(),
        max_length=50,
        description="Programs a command test case may run besides the installation's own (bin/crm): "
        "names in the service user's PATH or absolute paths; never a shell or interpreter.",
    )
    worker_queue: QueueName | None = Field(
        default=None,
        description="Celery queue of the workers that can reach this environment's hosts and database "
        "(e.g. only from inside the production network); every task that touches the environment runs "
        "there. Default: the deployment's default queue.",
    )
    http_hosts: tuple[HttpHost, ...] = Field(
        default=(),
        max_length=50,
        description="Hosts http test cases may reach: host names, IP addresses or networks (CIDR). "
        "Loopback, link-local and private addresses only if listed as addresses or networks.",
    )
    upgrade_windows: tuple[UpgradeWindow, ...] = Field(
        default=(),
        max_length=MAX_UPGRADE_WINDOWS,
        description="When the upgrade of this environment may start (weekdays and local times of the "
        "calendar's time zone). Empty: any time. Outside them the upgrade waits, holding no worker.",
    )
    change_freezes: tuple[ChangeFreeze, ...] = Field(
        default=(),
        max_length=MAX_LIST,
        description="Date ranges on which the upgrade of this environment does not start, with a reason "
        "(besides the customer-wide change_freezes).",
    )

    @model_validator(mode="after")
    def _paths_apart(self) -> Environment:
        named = [("install_path", self.install_path), ("staging_path", self.staging_path),
                 ("backup_path", self.backup_path)]  # fmt: skip
        problems = environment_path_problems(self.allowed_roots, named)
        for index, (name, path) in enumerate(named):
            for other_name, other in named[:index]:
                if _nested_or_same(path, other):
                    problems.append((name, f"{path} overlaps {other_name} {other}; keep the three apart"))
        if problems:
            raise field_errors(problems)
        return self


def _nested_or_same(path: str, other: str) -> bool:
    a, b = PurePosixPath(path), PurePosixPath(other)
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


class Environments(StrictModel):
    """Dev, UAT and Production; three really distinct systems."""

    dev: Environment
    uat: Environment
    prod: Environment

    def items(self) -> tuple[tuple[EnvironmentName, Environment], ...]:
        """``(name, environment)`` pairs in upgrade order."""
        return tuple((name, getattr(self, name)) for name in ENVIRONMENT_NAMES)

    @model_validator(mode="after")
    def _distinct(self) -> Environments:
        problems = []
        seen_hosts: dict[tuple[str, str], str] = {}
        seen_dbs: dict[str, str] = {}
        for name, env in self.items():
            host = (env.ssh_conn_id, env.install_path)
            if host in seen_hosts:
                message = (
                    f"{name} and {seen_hosts[host]} share ssh_conn_id {env.ssh_conn_id} and install_path "
                    f"{env.install_path}; each environment is its own installation"
                )
                problems.append((f"{name}.install_path", message))
            if env.db_conn_id in seen_dbs:
                message = (
                    f"{name} and {seen_dbs[env.db_conn_id]} share db_conn_id {env.db_conn_id}; "
                    "each environment has its own config database"
                )
                problems.append((f"{name}.db_conn_id", message))
            seen_hosts.setdefault(host, name)
            seen_dbs.setdefault(env.db_conn_id, name)
        if problems:
            raise field_errors(problems)
        return self


class Calendar(StrictModel):
    """The customer's business calendar: SLA budgets count only its business days."""

    timezone: TimezoneName = "UTC"
    weekend: tuple[Weekday, ...] = ("sat", "sun")
    holiday_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    holiday_subdivision: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,16}$")] | None = None
    holidays: tuple[IsoDate, ...] = Field(default=(), max_length=400)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'"
            ) from None
        return name

    @field_validator("weekend")
    @classmethod
    def _weekend_sensible(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(days)) != len(days):
            raise ValueError(f"lists a day twice: {list(days)}")
        if len(days) == len(WEEKDAY_NAMES):
            raise ValueError("lists all seven days; at least one day must be a working day")
        return days

    @model_validator(mode="after")
    def _holidays_supported(self) -> Calendar:
        if self.holiday_country is None:
            if self.holiday_subdivision is not None:
                raise field_error(
                    "holiday_subdivision", "is given without holiday_country; set the country too"
                )
            return self
        subdivisions = _supported_subdivisions(self.holiday_country)
        if subdivisions is None:
            raise field_error(
                "holiday_country",
                f"{self.holiday_country!r} is not a country the holidays library knows; use an ISO 3166-1 "
                "alpha-2 code such as DE, US or GB",
            )
        if self.holiday_subdivision is not None and self.holiday_subdivision not in subdivisions:
            raise field_error(
                "holiday_subdivision",
                f"{self.holiday_subdivision!r} is not a subdivision of {self.holiday_country}; "
                f"use one of {', '.join(subdivisions) or '(none)'}",
            )
        return self


@cache
def _supported_subdivisions(country: str) -> tuple[str, ...] | None:
    """Subdivision codes the holidays library has for ``country``; ``None`` if it lacks the country.

    Imported lazily: loading the holidays library costs about a second, paid only by calendars with a
    holiday country.
    """
    import holidays

    try:
        return tuple(holidays.country_holidays(country).subdivisions)
    except NotImplementedError:
        return None


def _known_budget(unit_id: str, info: ValidationInfo) -> str:
    """A budget unit id of the process model (the one in the validation context, else the default)."""
    process: ProcessModel = (info.context or {}).get("process_model") or load_process_model()
    known = [unit.id for unit in process.budget_units]
    if unit_id not in known:
        raise ValueError(f"unknown budget; use one of {', '.join(known)}")
    return unit_id


BudgetId = Annotated[StrictStr, AfterValidator(_known_budget)]


class Users(StrictModel):
    """Airflow user names allowed to answer the human gates of each role."""

    consultant: tuple[Username, ...] = Field(min_length=1, max_length=MAX_LIST)
    project_manager: tuple[Username, ...] = Field(min_length=1, max_length=MAX_LIST)


class FixLoop(StrictModel):
    """How many fix-and-retest rounds an environment may take before the run asks to abort."""

    max_rounds: Annotated[int, NumberRange(1, 50, integer=True)] = 5


class CustomerWait(StrictModel):
    """Customer-owned gates have their own reminder budget (business days between reminders)."""

    reminder_days: Annotated[int, NumberRange(1, 60, integer=True)] = 5


class Alerts(StrictModel):
    """Where SLA misses and failures are sent besides the owner's and the project managers' e-mail."""

    email: StrictBool = True
    webhook_conn_id: ConnId | None = Field(
        default=None, description="Airflow connection of a webhook (e.g. Slack) notified as well."
    )
    cc: tuple[Email, ...] = Field(default=(), max_length=MAX_LIST)


class CustomerConfig(StrictModel):
    """One customer's managed upgrade: everything the DAG needs besides secrets (those are connections)."""

    customer_id: CustomerId
    name: Line
    platinum_support: StrictBool
    contacts: Contacts
    request_case: RequestCase
    questionnaire: Questionnaire
    versions: Versions
    release_source: ReleaseSource
    environments: Environments
    test_cases: tuple[TestCase, ...] = Field(min_length=1, max_length=200)
    calendar: Calendar = Calendar()
    users: Users
    duration_overrides: dict[BudgetId, Annotated[int, NumberRange(0, 365, integer=True)]] = Field(
        default_factory=dict
    )
    fix_loop: FixLoop = FixLoop()
    customer_wait: CustomerWait = CustomerWait()
    alerts: Alerts = Alerts()
    change_freezes: tuple[ChangeFreeze, ...] = Field(
        default=(),
        max_length=MAX_LIST,
        description="Date ranges on which no environment's upgrade starts, with a reason.",
    )

    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _users_have_addresses(self) -> CustomerConfig:
        problems = []
        for role in USER_ROLES:
            known = {contact.user for contact in getattr(self.contacts, role)}
            for index, user in enumerate(getattr(self.users, role)):
                if user not in known:
                    problems.append(
                        (f"users.{role}[{index}]", f"{user!r} has no e-mail address for SLA alerts; add "
                         f"'user: {user}' to that person's entry under contacts.{role}")
                    )  # fmt: skip
        if problems:
            raise field_errors(problems)
        return self

    @field_validator("platinum_support")
    @classmethod
    def _eligible(cls, value: bool) -> bool:
        if not value:
            raise ValueError("must be true: only Platinum Support members are eligible for a Managed Upgrade")
        return value

    @field_validator("test_cases")
    @classmethod
    def _unique_ids(cls, cases: tuple[Any, ...]) -> tuple[Any, ...]:
        seen: set[str] = set()
        for index, case in enumerate(cases):
            if case.id in seen:
                raise field_error(f"[{index}].id", f"duplicate test case id {case.id!r}")
            seen.add(case.id)
        return cases

    @model_validator(mode="after")
    def _test_cases_fit_environments(self) -> CustomerConfig:
        problems = environment_problems(self.test_cases, self.environments.items())
        if problems:
            raise field_errors(problems)
        return self

    @field_validator("customer_id")
    @classmethod
    def _matches_file_name(cls, customer_id: str, info: ValidationInfo) -> str:
        file_stem = (info.context or {}).get("file_stem")
        if file_stem is not None and customer_id != file_stem:
            raise ValueError(
                f"{customer_id!r} must match the file name {file_stem}.yaml; rename the file or fix the id"
            )
        return customer_id

    # --- derived values -------------------------------------------------------------------------

    @property
    def dag_id(self) -> str:
        """``managed_upgrade__<customer_id>`` (:func:`managed_upgrade.dag_ids.dag_id_for`)."""
        return dag_id_for(self.customer_id)

    @property
    def source(self) -> str | None:
        """The file this config was loaded from, if any."""
        return self._source

    def environment(self, name: str) -> Environment:
        """The ``dev``, ``uat`` or ``prod`` environment."""
        if name not in ENVIRONMENT_NAMES:
            raise KeyError(f"unknown environment {name!r}; use one of {', '.join(ENVIRONMENT_NAMES)}")
        environment: Environment = getattr(self.environments, name)
        return environment

    def test_cases_for(self, name: str) -> tuple[CommandTestCase | SqlTestCase | HttpTestCase, ...]:
        """The test cases that run on environment ``name``, in file order."""
        self.environment(name)
        return tuple(case for case in self.test_cases if name in case.environments)

    def process_model(self, base: ProcessModel | None = None) -> ProcessModel:
        """The process model (default: ``include/process.yaml``) with this customer's duration overrides."""
        return (base or load_process_model()).with_overrides(self.duration_overrides)

    def contact_emails(self, role: Role) -> tuple[str, ...]:
        """E-mail addresses of the ``customer``, ``consultant`` or ``project_manager`` contacts."""
        return tuple(contact.email for contact in getattr(self.contacts, role))

    def user_emails(self, users: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """E-mail addresses of Airflow ``users`` (consultants, project managers) via ``contacts[].user``.

        Raises :class:`LookupError` naming the user when no contact has that user name.
        """
        by_user = {
            contact.user: contact.email
            for role in USER_ROLES
            for contact in getattr(self.contacts, role)
            if contact.user
        }
        missing = [user for user in users if user not in by_user]
        if missing:
            raise LookupError(
                f"no contact of customer {self.customer_id} has user {', '.join(missing)}; add "
                "'user: <name>' to that person's entry under contacts.consultant or contacts.project_manager"
            )
        return tuple(by_user[user] for user in users)

    @property
    def release_dir(self) -> str:
        """``<product>/<target version>``: the release's directory under the repository root."""
        return f"{self.release_source.product}/{self.versions.target}"
