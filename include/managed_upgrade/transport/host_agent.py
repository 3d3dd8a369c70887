"""Runs ON a customer host (``python3 -c <source> <command> <args>``) to make and describe files exactly.

Why a script and not ``find``/``tar -tv``/``sha256sum`` command lines parsed on the worker: file names
may hold any byte, so this prints exact JSON instead; and one remote command doing several things
at once is much cheaper than several commands (each SSH command costs a login-shell start on the
host). It uses the standard library only (the host has the ``python3`` the vendor installer needs),
takes every input as an argv element, and runs the host's own ``tar``/``zstd`` as argv lists.

Commands:
    tree DIR [--no-hash]  every entry under DIR: path, type, mode, size, sha256 (files), target (links)
    list ARCHIVE          every member of a .tar.zst / .tar.gz with the sha256 of its content (read
                          from the archive itself), and the sha256 of the archive file
    receive FILE N        write stdin to FILE from byte N on (N > 0: FILE must hold exactly N bytes,
                          which are kept), hashing while writing; prints sha256 and size of the file
    backup DIR OUT COMPRESSION [DUMP]
                          archive DIR into OUT/install.tar.zst (COMPRESSION zstd, or auto on a host
                          with zstd) or OUT/install.tar.gz (gzip, or auto without zstd) with GNU tar,
                          while reading the archive back from disk as it grows (decompressed, every
                          member hashed: the manifest is what the archive really holds) and walking
                          DIR (the archive must hold exactly what the folder holds). The three
                          overlap: the disk, not the CPU, is the bottleneck. With DUMP, stdin is
                          written to OUT/DUMP meanwhile, hashed as it arrives.
    remove PATH [ROOT...]  delete PATH (a folder with everything in it, or a file or symlink) only if it
                          obeys the path rules below with the ROOTs as allowed roots, both as written and
                          as it really is (the parent's symlinks resolved with realpath, the ROOTs too);
                          a symlink is removed itself, never followed; prints whether anything was removed

The path rules (:func:`path_problem`) are also what :mod:`managed_upgrade.transport.path_policy` applies
on the worker, so the worker and the host refuse the same paths: never a system directory (/, /bin,
/boot, /dev, /etc, /lib*, /proc, /root, /run, /sbin, /sys, /usr, /var except /var/opt and /var/local),
never /home, /tmp, /opt, ... themselves, never a path through ``.ssh`` or ``.gnupg``, and, given roots,
only strictly below one of them.
"""

# ruff: noqa: PTH108, PTH112, PTH113, PTH114, PTH115, PTH118, PTH119, PTH120, PTH123, PTH202, S108
# (runs on customer hosts: plain os.path; it names /tmp to refuse it)

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import time
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # typing only: the host's python3 never evaluates these
    import io
    from collections.abc import Iterable
    from typing import IO, Protocol, TypedDict

    from _typeshed import ReadableBuffer

    class Entry(TypedDict):
        path: str
        type: str
        mode: int
        size: int
        sha256: str | None
        target: str | None

    class Tree(TypedDict):
        root: str
        entries: list[Entry]

    class Listing(TypedDict):
        archive: str
        sha256: str
        size: int
        entries: list[Entry]

    class Received(TypedDict):
        path: str
        sha256: str
        size: int

    class ArchiveFile(TypedDict):
        name: str
        size: int
        sha256: str

    class Backup(TypedDict):
        compression: str
        archive: ArchiveFile
        tree: list[Entry]
        manifest: list[Entry]
        dump: Received | None

    class Removed(TypedDict):
        path: str
        real: str
        removed: bool

    class _ListOutcome(TypedDict, total=False):
        listing: Listing
        error: str

    class _DumpOutcome(TypedDict, total=False):
        dump: Received
        dump_error: str

    class _Digest(Protocol):
        def update(self, data: ReadableBuffer, /) -> None: ...

    class _ReadsInto(Protocol):
        def readinto(self, buffer: bytearray, /) -> int | None: ...


CHUNK = 4 * 1024 * 1024
_BLOCK = 512
_F_SETPIPE_SZ = 1031  # Linux fcntl command
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


def _entry(
    path: str, kind: str, mode: int, size: int = 0, sha256: str | None = None, target: str | None = None
) -> Entry:
    return {"path": path, "type": kind, "mode": mode, "size": size, "sha256": sha256, "target": target}


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def describe_tree(root: str, hashes: bool = True) -> Tree:
    """Entries of ``root`` sorted by path (relative, ``/``-separated), symlinks not followed."""
    if not os.path.isdir(root):
        raise SystemExit("not a directory: " + root)
    entries: list[Entry] = []
    for current, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(current, name)
            rel = os.path.relpath(full, root)
            info = os.lstat(full)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entries.append(_entry(rel, "symlink", mode, target=os.readlink(full)))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(_entry(rel, "dir", mode))
            elif stat.S_ISREG(info.st_mode):
                digest = _file_sha256(full) if hashes else None
                entries.append(_entry(rel, "file", mode, info.st_size, digest))
            else:
                entries.append(_entry(rel, "other", mode))
    entries.sort(key=lambda entry: entry["path"])
    return {"root": root, "entries": entries}


def _decoder(archive: str) -> list[str]:
    if archive.endswith(".zst"):
        return ["zstd", "-q", "-d", "-c"]
    if archive.endswith(".gz"):
        return ["gzip", "-d", "-c"]
    raise SystemExit("unknown archive type: " + archive)


class _Blocks:
    """Exact reads and hashed skips over a tar stream without copying member data in Python."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.raw = cast("_ReadsInto", getattr(stream, "raw", stream))  # a pipe's unbuffered file
        self.buffer = bytearray(1024 * 1024)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0

    def _refill(self) -> bool:
        self.start = 0
        self.end = self.raw.readinto(self.buffer) or 0
        return self.end > 0

    def read(self, count: int) -> bytes:
        """``count`` bytes (member headers and names: small, so copying is fine)."""
        parts = []
        while count:
            if self.start == self.end and not self._refill():
                raise SystemExit("archive ends in the middle of a member")
            take = min(count, self.end - self.start)
            parts.append(bytes(self.view[self.start : self.start + take]))
            self.start += take
            count -= take
        return b"".join(parts)

    def consume(self, count: int, digest: _Digest | None = None) -> None:
        """Pass over ``count`` bytes, feeding them to ``digest`` if given."""
        while count:
            if self.start == self.end and not self._refill():
                raise SystemExit("archive ends in the middle of a member")
            take = min(count, self.end - self.start)
            if digest is not None:
                digest.update(self.view[self.start : self.start + take])
            self.start += take
            count -= take

    def at_end(self) -> bool:
        return self.start == self.end and not self._refill()


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    index = 0
    while index < len(data) and data[index : index + 1] != b"\0":
        space = data.index(b" ", index)
        length = int(data[index:space])
        key, _, value = data[space + 1 : index + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        index += length
    return records


def scan_tar(stream: IO[bytes]) -> list[Entry]:
    """Entries of an uncompressed tar stream with the sha256 of every regular file's content."""
    blocks = _Blocks(stream)
    entries: list[Entry] = []
    long_name: str | None = None
    long_link: str | None = None
    pax: dict[str, str] = {}
    while not blocks.at_end():
        header = blocks.read(_BLOCK)
        if header == bytes(_BLOCK):
            break  # end-of-archive marker
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise SystemExit("corrupt tar header: " + str(exc)) from None
        padded = -(-info.size // _BLOCK) * _BLOCK
        if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            value = blocks.read(padded)[: info.size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = value
            else:
                long_link = value
            continue
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            records = _pax_records(blocks.read(padded)[: info.size])
            if info.type == tarfile.XHDTYPE:
                pax = records
            continue
        name = pax.get("path") or long_name or info.name
        target = pax.get("linkpath") or long_link or info.linkname or None
        size = int(pax["size"]) if "size" in pax else info.size
        long_name = long_link = None
        pax = {}
        sha256 = None
        if info.type in _REGULAR:
            digest = hashlib.sha256()
            blocks.consume(size, digest)
            blocks.consume(-(-size // _BLOCK) * _BLOCK - size)
            sha256 = digest.hexdigest()
            kind = "file"
        else:
            blocks.consume(-(-size // _BLOCK) * _BLOCK)
            kind = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}.get(info.type, "other")
        name = name[2:] if name.startswith("./") else name
        name = name.rstrip("/")
        if name in ("", "."):
            continue
        size = size if kind == "file" else 0
        entries.append(
            _entry(name, kind, info.mode & 0o7777, size, sha256, target if kind == "symlink" else None)
        )
    entries.sort(key=lambda entry: entry["path"])
    return entries


def _follow(
    path: str, writer: subprocess.Popen[bytes] | None, sink: IO[bytes], digest: _Digest, errors: list[str]
) -> None:
    """Feed ``path`` to ``sink`` while ``writer`` is still appending to it, hashing what is read."""
    try:
        with open(path, "rb") as source:
            while True:
                chunk = source.read(CHUNK)
                if chunk:
                    digest.update(chunk)
                    sink.write(chunk)
                    continue
                if writer is None or writer.poll() is not None:
                    chunk = source.read()
                    if not chunk:
                        break
                    digest.update(chunk)
                    sink.write(chunk)
                    continue
                time.sleep(0.005)
    except Exception as exc:  # reported by the caller
        errors.append("reading " + path + ": " + repr(exc))
    finally:
        try:
            sink.close()
        except OSError as exc:
            errors.append(repr(exc))


def _collect(stream: IO[bytes], into: list[bytes]) -> None:
    into.append(stream.read())


def list_archive(archive: str, writer: subprocess.Popen[bytes] | None = None) -> Listing:
    """Read ``archive`` back from disk (following it while ``writer`` still writes it): hash the file,
    decompress it and hash every member."""
    digest = hashlib.sha256()
    errors: list[str] = []
    decoder = subprocess.Popen(_decoder(archive), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert decoder.stdin is not None and decoder.stdout is not None  # both are pipes
    for pipe in (decoder.stdin, decoder.stdout):
        # Fewer, bigger reads and writes; where not allowed (not Linux, a lower pipe limit) the default works.
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, 1024 * 1024)
    feeder = threading.Thread(target=_follow, args=(archive, writer, decoder.stdin, digest, errors))
    feeder.start()
    try:
        entries = scan_tar(decoder.stdout)
        decoder.stdout.read()  # tar pads the end with zero blocks; drain so the decoder can finish
    except BaseException:
        decoder.kill()  # unblocks the feeder, whose write then fails
        raise
    finally:
        feeder.join()
        decoder.stdout.close()
        code = decoder.wait()
    if errors or code != 0:
        raise SystemExit(
            "cannot read " + archive + " back (decoder exit " + str(code) + "): " + " ".join(errors)
        )
    return {
        "archive": archive,
        "sha256": digest.hexdigest(),
        "size": os.path.getsize(archive),
        "entries": entries,
    }


def receive(path: str, offset: int) -> Received:
    """Append stdin to ``path`` after its first ``offset`` bytes; digest and size of the whole file."""
    digest = hashlib.sha256()
    if offset:
        if not os.path.isfile(path) or os.path.getsize(path) != offset:
            raise SystemExit("cannot resume " + path + ": it does not hold exactly " + str(offset) + " bytes")
        with open(path, "rb") as existing:
            while True:
                chunk = existing.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
    else:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    size = offset
    buffer = bytearray(1024 * 1024)
    view = memoryview(buffer)
    stdin = cast("io.BufferedReader", sys.stdin.buffer).raw
    try:
        while True:
            count = stdin.readinto(view)
            if not count:
                break
            received = view[:count]
            digest.update(received)
            written = 0
            while written < count:
                written += os.write(descriptor, received[written:])
            size += count
    finally:
        os.close(descriptor)
    return {"path": path, "sha256": digest.hexdigest(), "size": size}


def _run_receive(path: str, results: _DumpOutcome) -> None:
    try:
        results["dump"] = receive(path, 0)
    except BaseException as exc:  # reported by the caller
        results["dump_error"] = repr(exc)


def backup(install: str, out: str, compression: str = "auto", dump_name: str | None = None) -> Backup:
    """Archive, manifest and list-back at once (see the module docstring); JSON for the worker."""
    if not os.path.isdir(install) or not os.path.isdir(out):
        raise SystemExit("backup needs an existing install folder and output folder")
    if compression == "auto":
        compression = "zstd" if shutil.which("zstd") else "gzip"
    if compression not in ("zstd", "gzip"):
        raise SystemExit("compression must be auto, zstd or gzip, not " + compression)
    flag, name = ("--zstd", "install.tar.zst") if compression == "zstd" else ("--gzip", "install.tar.gz")
    archive = os.path.join(out, name)
    results: _DumpOutcome = {}
    receiver = None
    if dump_name:
        receiver = threading.Thread(target=_run_receive, args=(os.path.join(out, dump_name), results))
        receiver.start()
    open(archive, "wb").close()  # exists before the lister opens it
    argv = ["tar", flag, "--create", "--hard-dereference", "--file", archive, "--directory", install, "."]
    writer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writer_errors: list[bytes] = []
    drain = threading.Thread(target=_collect, args=(writer.stderr, writer_errors))
    drain.start()
    listed: _ListOutcome = {}

    def list_back() -> None:
        try:
            listed["listing"] = list_archive(archive, writer)
        except BaseException as exc:  # reported below
            listed["error"] = str(exc)

    lister = threading.Thread(target=list_back)
    lister.start()
    tree = describe_tree(install, hashes=False)
    drain.join()
    code = writer.wait()
    lister.join()
    if receiver is not None:
        receiver.join()
    if code != 0:
        detail = b"".join(writer_errors).decode(errors="replace").strip()
        raise SystemExit("tar exited " + str(code) + " archiving " + install + ": " + detail)
    if "error" in listed:
        raise SystemExit(listed["error"])
    if "dump_error" in results:
        raise SystemExit("writing the dump failed: " + results["dump_error"])
    listing = listed["listing"]
    return {
        "compression": flag[2:],
        "archive": {"name": name, "size": listing["size"], "sha256": listing["sha256"]},
        "tree": tree["entries"],
        "manifest": listing["entries"],
        "dump": results.get("dump"),
    }


# --- where operations may write or delete ----------------------------------------------------------

SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
)
"""Never written or deleted in or below, whatever the allowed roots say (any top-level ``lib*`` too)."""
SYSTEM_TREE_EXCEPTIONS = ("/var/opt", "/var/local")
"""Below /var, the folders for local software and data: usable when an allowed root covers them."""
BARE_DIRECTORIES = (
    "/",
    "/home",
    "/tmp",
    "/var/tmp",
    "/mnt",
    "/media",
    "/opt",
    "/srv",
    "/data",
    *SYSTEM_TREE_EXCEPTIONS,
)
"""Shared parents: never a folder an operation owns itself (folders below them may be)."""
SECRET_COMPONENTS = (".ssh", ".gnupg")
"""A path through one of these is refused anywhere: key material is never written or deleted."""


def normalize_path(path: object) -> str | None:
    """``path`` with ``.``, ``..`` and repeated slashes resolved lexically; None unless absolute."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        return None
    return "/" + os.path.normpath(path).lstrip("/")


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def system_path_problem(path: str) -> str | None:
    """Why the normalized ``path`` may never be written or deleted, whatever the roots say; or None."""
    if path in BARE_DIRECTORIES:
        return "is " + path + " itself; only a folder below it can be used"
    parts = path.split("/")
    for part in parts:
        if part in SECRET_COMPONENTS:
            return "goes through " + part + "; key material is never written or deleted"
    top = "/" + parts[1]
    if (top in SYSTEM_TREES or parts[1].startswith("lib")) and not any(
        _below(path, allowed) for allowed in SYSTEM_TREE_EXCEPTIONS
    ):
        return "is in the system directory " + top
    return None


def root_problem(root: str) -> str | None:
    """Why ``root`` cannot be an allowed root (/, a system directory, through .ssh); or None."""
    normal = normalize_path(root)
    if normal is None:
        return "is not an absolute path"
    if normal == "/":
        return "is / itself; name the folders operations may use, such as /opt or /srv"
    if normal in BARE_DIRECTORIES:
        return None
    return system_path_problem(normal)


def path_problem(path: str, roots: Iterable[str] | None = None) -> str | None:
    """Why ``path`` may not be written or deleted (given ``roots``: strictly below one of them); or None."""
    normal = normalize_path(path)
    if normal is None:
        return "is not an absolute path"
    problem = system_path_problem(normal)
    if problem or roots is None:
        return problem
    normal_roots = [root for root in (normalize_path(root) for root in roots) if root]
    for root in normal_roots:
        if normal == root:
            return "is the allowed root " + root + " itself; use a folder below it"
    for root in normal_roots:
        if normal.startswith(root.rstrip("/") + "/"):
            return None
    return "is not under the allowed roots (" + (", ".join(normal_roots) or "none given") + ")"


def remove(path: str, roots: Iterable[str] | None = None) -> Removed:
    """Delete ``path`` if the rules allow it as written and as it really is (see the module docstring)."""
    problem = path_problem(path, roots)
    if problem:
        raise SystemExit("refusing to remove " + str(path) + ": it " + problem)
    normal = normalize_path(path)
    assert normal is not None  # path_problem refuses a path that is not absolute
    real = os.path.join(os.path.realpath(os.path.dirname(normal)), os.path.basename(normal))
    real_roots = None if roots is None else [os.path.realpath(root) for root in roots]
    problem = path_problem(real, real_roots)
    if problem:
        raise SystemExit("refusing to remove " + path + ": it is really " + real + ", which " + problem)
    if not os.path.lexists(real):
        return {"path": path, "real": real, "removed": False}
    if os.path.isdir(real) and not os.path.islink(real):
        shutil.rmtree(real)
    else:
        os.unlink(real)
    return {"path": path, "real": real, "removed": True}


def main(argv: list[str]) -> int:
    result: Tree | Listing | Received | Backup | Removed
    if len(argv) in (2, 3) and argv[0] == "tree" and argv[2:] in ([], ["--no-hash"]):
        result = describe_tree(argv[1], hashes=argv[2:] != ["--no-hash"])
    elif len(argv) == 2 and argv[0] == "list":
        result = list_archive(argv[1])
    elif len(argv) == 3 and argv[0] == "receive" and argv[2].isascii() and argv[2].isdigit():
        result = receive(argv[1], int(argv[2]))
    elif len(argv) in (4, 5) and argv[0] == "backup":
        result = backup(*argv[1:])
    elif len(argv) >= 2 and argv[0] == "remove":
        result = remove(argv[1], argv[2:] or None)
    else:
        raise SystemExit(
            "usage: host_agent tree DIR [--no-hash] | list ARCHIVE | receive FILE OFFSET"
            " | backup DIR OUT auto|zstd|gzip [DUMP] | remove PATH [ROOT...]"
        )
    json.dump(result, sys.stdout, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
