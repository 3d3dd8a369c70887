"""Carries the fixes made on Dev to UAT and Prod: a checksummed bundle of files and SQL, captured and applied.

A consultant fixes a failing sanity test on the Dev host and records the fix: the files they changed
(paths relative to the install folder) and SQL for the configuration database. The fix is captured
from the Dev host into a :class:`FixBundle` -- each file with its mode, size, sha256 and base64 content,
the SQL scripts in order, and who recorded which round -- stored in the ledger as JSON, and
"Transfer fixes from Development" applies the merged bundle of every round to UAT and later Prod.

Why a self-checking format: the bundle crosses weeks and machines (ledger JSON, worker memory, SFTP).
Parsing re-checks every file's sha256 and the bundle's own checksum, so a damaged or edited bundle is
refused before anything is touched. Paths are relative, without ``..`` or empty segments, from a
strict character set; on the host no path may lead through a symlink out of the install folder.

Applying is all or nothing: files are first written as ``.part`` siblings and their sha256 checked on
the host, the SQL runs in one transaction that stays open, then the files are renamed into place (the
replaced ones kept aside), and only then is the transaction committed. Any failure rolls the SQL
back, puts the replaced files back and removes what was added, and the error names the environment
and the file or SQL line at fault. Transaction control (``BEGIN``/``COMMIT``/``ROLLBACK``) in fix SQL
is refused, because it would break that promise. The install folder written to must really lie under
the environment's allowed roots (:func:`managed_upgrade.transport.path_policy.confine`), checked before the
first file is written.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import posixpath
import re
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import psycopg2
import psycopg2.extensions
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from managed_upgrade.errors import OperationError
from managed_upgrade.sandbox.readonly_sql import UnsafeQueryError, leading_keyword, split_statements
from managed_upgrade.transport.database import DbTarget
from managed_upgrade.transport.path_policy import Roots, confine
from managed_upgrade.transport.remote import RemoteHost
from managed_upgrade.vocabulary import require

log = logging.getLogger(__name__)

FORMAT: Final = 1
MAX_BUNDLE_BYTES = 10 * 1024 * 1024
"""Total size of the files one bundle may carry (a fix is a few settings or scripts, not a release)."""

MAX_PATH_LENGTH = 1024
PATH_SEGMENT_PATTERN = r"^\.?[A-Za-z0-9_@+=,~-][A-Za-z0-9._@+=,~-]{0,199}$"
"""One segment of a fix file path: letters, digits and ``. _ @ + = , ~ -`` (a leading dot for hidden
files), never ``.`` or ``..``; at most 201 characters, so the ``.part`` sibling still fits a file name."""
_SEGMENT = re.compile(PATH_SEGMENT_PATTERN, re.ASCII)

TRANSACTION_CONTROL = frozenset({"begin", "start", "commit", "end", "rollback", "abort"})
"""First words of statements that would end or restart the one transaction a fix runs in."""

SQL_LOCK_TIMEOUT = "30s"
SQL_STATEMENT_TIMEOUT = "10min"


# --- errors -----------------------------------------------------------------------------------


class FixBundleError(OperationError):
    """Base class: a fix could not be captured, stored or applied."""


class UnsafeFixPathError(FixBundleError, ValueError):
    """A fix file path is absolute, climbs out with ``..``, or holds characters we do not accept."""


class FixSqlError(FixBundleError, ValueError):
    """Fix SQL cannot be run as part of one transaction (transaction control, unterminated quotes)."""


class BundleTooLargeError(FixBundleError, ValueError):
    """The files of a fix exceed :data:`MAX_BUNDLE_BYTES`."""


class CorruptBundleError(FixBundleError, ValueError):
    """A stored bundle does not match its own checksums (or is not a bundle at all); nothing was applied."""


class FixCaptureError(FixBundleError):
    """A file named in a fix cannot be captured from the host (missing, a symlink, too large)."""


class FixApplyError(FixBundleError):
    """Applying a bundle failed; everything it had changed was undone (the message says so)."""


# --- paths and SQL ----------------------------------------------------------------------------


def require_fix_path(path: object) -> str:
    """``path`` if it is a safe path relative to an install folder, else :class:`UnsafeFixPathError`."""
    if not isinstance(path, str) or not path:
        raise UnsafeFixPathError(f"fix file path must be a non-empty text, got {path!r}")
    shown = path if len(path) <= 200 else path[:200] + "..."
    if len(path) > MAX_PATH_LENGTH:
        raise UnsafeFixPathError(f"fix file path {shown!r} is longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/"):
        raise UnsafeFixPathError(
            f"fix file path {shown!r} is absolute; give it relative to the install folder "
            "(e.g. settings/x.properties)"
        )
    segments = path.split("/")
    if ".." in segments:
        raise UnsafeFixPathError(
            f"fix file path {shown!r} has a '..' segment; it must stay inside the install folder"
        )
    for segment in segments:
        if not segment or segment == ".":
            raise UnsafeFixPathError(f"fix file path {shown!r} has an empty or '.' segment; write it plainly")
        if not _SEGMENT.fullmatch(segment):
            raise UnsafeFixPathError(
                f"fix file path {shown!r}: segment {segment[:80]!r} may only hold letters, digits "
                "and . _ @ + = , ~ -"
            )
    return path


def check_fix_sql(sql: str) -> int:
    """The number of statements in ``sql``; :class:`FixSqlError` if it cannot run inside one transaction.

    Split by PostgreSQL's own scanner (:func:`~managed_upgrade.sandbox.readonly_sql.split_statements`), so a
    ``COMMIT`` inside a string, comment or dollar-quoted body is not mistaken for one.
    """
    if not isinstance(sql, str):
        raise FixSqlError(f"fix SQL must be text, got {type(sql).__name__}")
    if "\x00" in sql:
        raise FixSqlError("fix SQL contains a NUL character")
    try:
        statements = split_statements(sql)
        keywords = [leading_keyword(statement) for statement in statements]
    except UnsafeQueryError as error:
        raise FixSqlError(f"fix SQL cannot be read: {error}") from error
    for number, keyword in enumerate(keywords, start=1):
        if keyword in TRANSACTION_CONTROL:
            raise FixSqlError(
                f"fix SQL statement {number} starts with {keyword.upper()}: transaction control is not "
                "allowed, every fix runs in one transaction of its own (leave BEGIN/COMMIT out)"
            )
    return len(statements)


# --- the format -------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BundleFile(_Frozen):
    """One file of a fix: where it goes (relative to the install folder), its mode and its content."""

    path: str
    mode: int = Field(ge=0, le=0o777, description="Permission bits only (no setuid/setgid/sticky).")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content: str = Field(description="The bytes, base64-encoded.", repr=False)

    @model_validator(mode="after")
    def _consistent(self) -> BundleFile:
        require_fix_path(self.path)
        try:
            data = base64.b64decode(self.content, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"file {self.path}: content is not valid base64 ({error})") from None
        if len(data) != self.size:
            raise ValueError(f"file {self.path}: content is {len(data)} bytes, the bundle says {self.size}")
        actual = _sha256(data)
        if actual != self.sha256:
            raise ValueError(f"file {self.path}: content has sha256 {actual}, the bundle says {self.sha256}")
        return self

    @classmethod
    def of(cls, path: str, data: bytes, mode: int) -> BundleFile:
        return cls(
            path=path,
            mode=mode & 0o777,
            size=len(data),
            sha256=_sha256(data),
            content=base64.b64encode(data).decode("ascii"),
        )

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.content)


class SqlScript(_Frozen):
    """The SQL one fix round ran on Dev, as the consultant wrote it; scripts run in round order."""

    environment: str
    round: int = Field(ge=0)
    sql: str = Field(min_length=1)
    statements: int = Field(ge=1)

    @model_validator(mode="after")
    def _runnable(self) -> SqlScript:
        counted = check_fix_sql(self.sql)
        if counted != self.statements:
            raise ValueError(
                f"SQL of {self.environment} round {self.round}: {counted} statements, "
                f"the bundle says {self.statements}"
            )
        return self

    @classmethod
    def of(cls, environment: str, round_number: int, sql: str) -> SqlScript:
        return cls(environment=environment, round=round_number, sql=sql, statements=check_fix_sql(sql))

    def locate(self, position: int | None) -> str:
        """``"line N: <text>"`` of a 1-based character position PostgreSQL reported, for messages."""
        if not position or position < 1 or position > len(self.sql):
            first = next((line.strip() for line in self.sql.splitlines() if line.strip()), "")
            return f"starting {first[:160]!r}"
        line_number = self.sql.count("\n", 0, position - 1) + 1
        line = self.sql.splitlines()[line_number - 1].strip()
        return f"line {line_number}: {line[:160]!r}"


class Provenance(_Frozen):
    """Who recorded which fix round, when and why: kept for every round a merged bundle holds."""

    environment: str
    round: int = Field(ge=0)
    task_id: str
    question: int = Field(ge=0)
    recorded_by: str
    recorded_at: AwareDatetime
    description: str
    files: tuple[str, ...] = ()
    sql_statements: int = Field(default=0, ge=0)


class FixBundle(_Frozen):
    """Files, SQL and provenance of one or more fix rounds, sealed by a checksum over all of it."""

    format: Literal[1] = FORMAT
    files: tuple[BundleFile, ...] = ()
    sql: tuple[SqlScript, ...] = ()
    provenance: tuple[Provenance, ...] = ()
    checksum: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _sealed(self) -> FixBundle:
        paths = [item.path for item in self.files]
        duplicates = sorted({path for path in paths if paths.count(path) > 1})
        if duplicates:
            raise ValueError(f"the bundle lists {', '.join(duplicates)} more than once")
        _check_size(self.files)
        expected = _seal(self.files, self.sql, self.provenance)
        if expected != self.checksum:
            raise ValueError(
                f"bundle checksum is {self.checksum} but its content hashes to {expected}: it was changed "
                "or damaged after it was recorded"
            )
        return self

    @classmethod
    def create(
        cls,
        files: Iterable[BundleFile] = (),
        sql: Iterable[SqlScript] = (),
        provenance: Iterable[Provenance] = (),
    ) -> FixBundle:
        """A sealed bundle (its checksum computed here)."""
        files, sql, provenance = tuple(files), tuple(sql), tuple(provenance)
        _check_size(files)
        return cls(files=files, sql=sql, provenance=provenance, checksum=_seal(files, sql, provenance))

    @property
    def is_empty(self) -> bool:
        """Nothing to apply (a round may record only a description)."""
        return not self.files and not self.sql

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.files)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form for the ledger."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any, source: str = "fix bundle") -> FixBundle:
        """Parse and verify; :class:`CorruptBundleError` names ``source`` and every problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'bundle'}: {item['msg']}"
                for item in error.errors(include_url=False)
            )
            raise CorruptBundleError(f"{source} is not a valid fix bundle: {problems}") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "fix bundle") -> FixBundle:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise CorruptBundleError(f"{source} is not JSON: {error}") from None
        return cls.from_dict(data, source)

    def summary(self) -> dict[str, Any]:
        """Compact, JSON-able (XCom, logs): checksum, rounds, files with checksums, SQL counts."""
        return {
            "checksum": self.checksum,
            "rounds": [f"{item.environment}#{item.round}" for item in self.provenance],
            "files": [{"path": item.path, "sha256": item.sha256, "size": item.size} for item in self.files],
            "sql_scripts": len(self.sql),
            "sql_statements": sum(item.statements for item in self.sql),
            "bytes": self.total_bytes,
        }


def _check_size(files: Sequence[BundleFile]) -> None:
    total = sum(item.size for item in files)
    if total > MAX_BUNDLE_BYTES:
        largest = max(files, key=lambda item: item.size)
        raise BundleTooLargeError(
            f"fix files total {total / 1048576:.1f} MiB, more than the {MAX_BUNDLE_BYTES // 1048576} MiB "
            f"a fix bundle may carry (largest: {largest.path}, {largest.size / 1048576:.1f} MiB); "
            "large files belong in a release, not in a fix"
        )


def _seal(files: Sequence[BundleFile], sql: Sequence[SqlScript], provenance: Sequence[Provenance]) -> str:
    """sha256 of the canonical JSON of everything but the checksum itself."""
    body = {
        "format": FORMAT,
        "files": [item.model_dump(mode="json") for item in files],
        "sql": [item.model_dump(mode="json") for item in sql],
        "provenance": [item.model_dump(mode="json") for item in provenance],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _sha256(canonical.encode("utf-8"))


def merge_bundles(bundles: Iterable[FixBundle]) -> FixBundle:
    """One bundle of several rounds given in order: a later round's file wins, every round's SQL is kept."""
    files: dict[str, BundleFile] = {}
    sql: list[SqlScript] = []
    provenance: list[Provenance] = []
    for bundle in bundles:
        for item in bundle.files:
            files.pop(item.path, None)  # re-insert: the file's place follows the round that wrote it last
            files[item.path] = item
        sql.extend(bundle.sql)
        provenance.extend(bundle.provenance)
    return FixBundle.create(files.values(), sql, provenance)


# --- on an environment: capture from Dev, apply anywhere ----------------------------------------


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def _real_install_path(host: RemoteHost, install_path: str) -> str:
    require("absolute path", install_path)
    if not host.is_dir(install_path):
        raise FixBundleError(f"{host.label}: install folder {install_path} does not exist")
    return host.sftp.normalize(install_path)


def capture_files(
    host: RemoteHost, install_path: str, paths: Sequence[str], limit: int = MAX_BUNDLE_BYTES
) -> tuple[BundleFile, ...]:
    """Read the named files from the host (relative to ``install_path``), each checked there by sha256.

    Every problem of every file is reported at once (missing, not a regular file, a symlinked folder
    on the way, too large), so the consultant can correct the list in one go.
    """
    root = _real_install_path(host, install_path)
    problems: list[str] = []
    found: list[tuple[str, str, int, int]] = []
    for path in dict.fromkeys(paths):
        try:
            require_fix_path(path)
        except UnsafeFixPathError as error:
            problems.append(str(error))
            continue
        full = posixpath.join(install_path, path)
        attrs = host.stat(full)
        if attrs is None:
            problems.append(f"{path}: not found under {install_path}")
            continue
        mode = attrs.st_mode or 0
        if stat.S_ISLNK(mode):
            problems.append(f"{path}: is a symlink; a fix carries regular files only")
            continue
        if not stat.S_ISREG(mode):
            problems.append(f"{path}: is not a regular file")
            continue
        parent_real = host.sftp.normalize(posixpath.dirname(full))
        if parent_real != posixpath.join(root, posixpath.dirname(path)).rstrip("/"):
            problems.append(f"{path}: a folder on its way is a symlink (it resolves to {parent_real})")
            continue
        found.append((path, full, attrs.st_size or 0, stat.S_IMODE(mode)))
    total = sum(size for _, _, size, _ in found)
    if total > limit:
        problems.append(
            f"the files total {total / 1048576:.1f} MiB, more than the {limit // 1048576} MiB "
            "a fix bundle may carry"
        )
    if problems:
        raise FixCaptureError(f"{host.label}: cannot capture the fix files: " + "; ".join(problems))
    captured = [BundleFile.of(path, host.read_bytes(full), mode) for path, full, _, mode in found]
    on_host = host_sha256s(host, [full for _, full, _, _ in found])
    for item, (_, full, _, _) in zip(captured, found, strict=True):
        if on_host[full] != item.sha256:
            raise FixCaptureError(
                f"{host.label}: {item.path} changed while it was read (sha256 {item.sha256} read, "
                f"{on_host[full]} on the host); record the fix again once nobody edits it"
            )
    return tuple(captured)


def host_sha256s(host: RemoteHost, paths: Sequence[str]) -> dict[str, str]:
    """sha256 of each file, computed on the host in one command (one SSH exec costs ~0.2 s).

    The paths are absolute fix paths (no spaces, newlines or backslashes), so ``sha256sum``'s
    ``<digest>  <path>`` lines parse unambiguously.
    """
    if not paths:
        return {}
    output = host.run(["sha256sum", "--", *paths]).text
    digests: dict[str, str] = {}
    for line in output.splitlines():
        digest, _, name = line.partition("  ")
        digests[name] = digest.strip().lower()
    missing = [path for path in paths if not re.fullmatch(r"[0-9a-f]{64}", digests.get(path, ""))]
    if missing:
        raise FixBundleError(
            f"{host.label}: sha256sum gave no checksum for {', '.join(missing)}: {output[:300]!r}"
        )
    return digests


@contextmanager
def sql_transaction(database: DbTarget, scripts: Sequence[SqlScript], label: str) -> Iterator[int]:
    """Run ``scripts`` in one transaction, committed when the ``with`` body finishes without error.

    Yields the number of statements run. A failing script rolls everything back and raises
    :class:`FixApplyError` naming the environment, the round and the SQL line PostgreSQL pointed at;
    an exception in the body rolls back too (so a caller can record the fix before it is committed).
    """
    if not scripts:
        yield 0
        return
    connection = database.connect()
    try:
        connection.autocommit = False
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = %s", (SQL_LOCK_TIMEOUT,))
            cursor.execute("SET LOCAL statement_timeout = %s", (SQL_STATEMENT_TIMEOUT,))
            for script in scripts:
                try:
                    cursor.execute(script.sql)
                except psycopg2.Error as error:
                    connection.rollback()
                    position = getattr(error.diag, "statement_position", None)
                    where = script.locate(int(position) if position else None)
                    detail = (error.pgerror or str(error)).strip().splitlines()[0]
                    raise FixApplyError(
                        f"{label}: the SQL of fix {script.environment} round {script.round} failed on "
                        f"database {database.dbname} at {where}: {detail}; the transaction was rolled "
                        "back, no statement of this fix is applied"
                    ) from error
        if connection.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
            connection.rollback()
            raise FixApplyError(f"{label}: the fix SQL ended its own transaction; refusing to continue")
        yield sum(script.statements for script in scripts)
        connection.commit()
    except BaseException:
        if not connection.closed:
            with contextlib.suppress(psycopg2.Error):
                connection.rollback()
        raise
    finally:
        connection.close()


@dataclass(frozen=True)
class AppliedFix:
    """What :func:`apply_fix_bundle` did."""

    checksum: str
    files: tuple[dict[str, Any], ...]
    sql_statements: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "checksum": self.checksum,
            "files": list(self.files),
            "sql_statements": self.sql_statements,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class _Staged:
    item: BundleFile
    target: str
    part: str
    aside: str
    existed: bool
    moved_aside: bool = False
    placed: bool = False


class _FileChanges:
    """Files written as ``.part``, renamed into place with the old ones kept aside, undone on failure."""

    def __init__(self, host: RemoteHost, install_path: str, root: str) -> None:
        self.host = host
        self.install_path = install_path
        self.root = root
        self.token = uuid.uuid4().hex[:12]
        self.staged: list[_Staged] = []
        self.created_dirs: list[str] = []

    def _ensure_parent(self, item: BundleFile) -> str:
        parent = posixpath.dirname(posixpath.join(self.install_path, item.path))
        missing: list[str] = []
        existing = parent
        while not self.host.exists(existing):
            missing.append(existing)
            existing = posixpath.dirname(existing)
        real = self.host.sftp.normalize(existing)
        if not _inside(real, self.root):
            raise FixApplyError(
                f"{self.host.label}: {item.path} would be written through {existing}, which resolves to "
                f"{real}, outside the install folder {self.root}; nothing was applied"
            )
        if not self.host.is_dir(real):
            raise FixApplyError(
                f"{self.host.label}: {item.path} needs the folder {existing}, but that is a file; "
                "nothing was applied"
            )
        for directory in reversed(missing):
            self.host.sftp.mkdir(directory)
            self.created_dirs.append(directory)
        return parent

    def stage(self, item: BundleFile) -> None:
        parent = self._ensure_parent(item)
        name = posixpath.basename(item.path)
        target = posixpath.join(parent, name)
        attrs = self.host.stat(target)
        if attrs is not None and not stat.S_ISREG(attrs.st_mode or 0):
            kind = "a symlink" if stat.S_ISLNK(attrs.st_mode or 0) else "not a regular file"
            raise FixApplyError(
                f"{self.host.label}: {item.path} exists there but is {kind}; nothing was applied"
            )
        staged = _Staged(
            item,
            target,
            part=posixpath.join(parent, f".{name}.fix-{self.token}.part"),
            aside=posixpath.join(parent, f".{name}.fix-{self.token}.replaced"),
            existed=attrs is not None,
        )
        self.staged.append(staged)
        with self.host.sftp.open(staged.part, "wb") as handle:
            handle.set_pipelined(True)
            handle.write(item.data)
        self.host.sftp.chmod(staged.part, item.mode)

    def verify(self) -> None:
        """Every ``.part`` hashed on the host must match the bundle (one command for all of them)."""
        actual = host_sha256s(self.host, [staged.part for staged in self.staged])
        for staged in self.staged:
            if actual[staged.part] != staged.item.sha256:
                raise FixApplyError(
                    f"{self.host.label}: {staged.item.path} arrived with sha256 {actual[staged.part]}, the "
                    f"bundle says {staged.item.sha256}; nothing was applied"
                )

    def place(self) -> None:
        for staged in self.staged:
            if staged.existed:
                self.host.rename(staged.target, staged.aside)
                staged.moved_aside = True
            self.host.rename(staged.part, staged.target)
            staged.placed = True

    def undo(self) -> list[str]:
        """Put everything back; returns what could not be undone (empty when all went back)."""
        leftovers: list[str] = []
        for staged in reversed(self.staged):
            try:
                if staged.placed and not staged.moved_aside:
                    self.host.remove_file(staged.target)
                if staged.moved_aside:
                    self.host.rename(staged.aside, staged.target)
                self.host.remove_file(staged.part)
            except Exception as error:  # keep undoing the rest; report what stayed
                leftovers.append(f"{staged.item.path} ({error})")
        for directory in reversed(self.created_dirs):
            try:
                self.host.sftp.rmdir(directory)
            except OSError as error:
                leftovers.append(f"{directory} ({error})")
        return leftovers

    def finish(self) -> None:
        for staged in self.staged:
            if staged.moved_aside:
                self.host.remove_file(staged.aside)


def apply_fix_bundle(
    host: RemoteHost,
    install_path: str,
    database: DbTarget,
    bundle: FixBundle,
    label: str | None = None,
    allowed_roots: Roots = None,
) -> AppliedFix:
    """Apply every file and SQL script of ``bundle`` to one environment, all or nothing (see module doc).

    ``allowed_roots``: the environment's roots; ``install_path`` must really lie below one of them.
    """
    started = time.monotonic()
    label = label or host.label
    confine(host, install_path, allowed_roots, action="apply a fix to")
    root = _real_install_path(host, install_path)
    changes = _FileChanges(host, install_path, root)
    try:
        for item in bundle.files:
            changes.stage(item)
        changes.verify()
        with sql_transaction(database, bundle.sql, label) as statements:
            changes.place()
    except BaseException as error:
        leftovers = changes.undo()
        if leftovers:
            raise FixApplyError(
                f"{label}: applying the fix bundle failed ({error}) and undoing it left these behind: "
                f"{'; '.join(leftovers)}; the config DB was rolled back"
            ) from error
        if isinstance(error, FixBundleError):
            raise
        if isinstance(error, Exception):
            raise FixApplyError(
                f"{label}: applying the fix bundle failed: {type(error).__name__}: {error}; "
                "nothing was applied (files put back, SQL rolled back)"
            ) from error
        raise
    changes.finish()
    files = tuple(
        {"path": staged.item.path, "sha256": staged.item.sha256, "replaced": staged.existed}
        for staged in changes.staged
    )
    log.info(
        "%s: applied fix bundle %s (%d files, %d SQL statements) to %s and %s",
        label,
        bundle.checksum[:12],
        len(files),
        statements,
        install_path,
        database.dbname,
    )
    return AppliedFix(bundle.checksum, files, statements, time.monotonic() - started)


def new_provenance(
    *,
    environment: str,
    round_number: int,
    task_id: str,
    question: int,
    recorded_by: str,
    recorded_at: datetime,
    description: str,
    files: Sequence[BundleFile],
    sql: Sequence[SqlScript],
) -> Provenance:
    """The provenance entry of one recorded fix round."""
    return Provenance(
        environment=environment,
        round=round_number,
        task_id=task_id,
        question=question,
        recorded_by=recorded_by,
        recorded_at=recorded_at,
        description=description,
        files=tuple(item.path for item in files),
        sql_statements=sum(item.statements for item in sql),
    )
