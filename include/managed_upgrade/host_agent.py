"""Runs ON a customer host (``python3 -c <source> <command> <args>``) to make and describe files exactly.

Why a script and not ``find``/``tar -tv``/``sha256sum`` command lines parsed on the worker: file names
may hold any byte, so this prints exact JSON instead; and one remote command doing several things
at once is much cheaper than several commands (each SSH command costs a login-shell start on the
host). It uses the standard library only (the host has the ``python3`` the vendor installer needs),
takes every input as an argv element, and runs the host's own ``tar``/``zstd`` as argv lists.

Commands:
    tree DIR              every entry under DIR: path, type, mode, size, sha256 (files), target (links)
    list ARCHIVE          the members of a .tar.zst / .tar.gz, as listed by GNU tar, and its sha256
    receive FILE N        write stdin to FILE from byte N on (N > 0: FILE must hold exactly N bytes,
                          which are kept), hashing while writing; prints sha256 and size of the file
    backup DIR OUT COMPRESSION [DUMP]
                          archive DIR into OUT/install.tar.zst (COMPRESSION zstd, or auto on a host
                          with zstd) or OUT/install.tar.gz (gzip, or auto without zstd) with
                          GNU tar, while hashing every file of DIR for the manifest and listing the
                          archive back from disk as it grows (all three overlap: the disk is the
                          bottleneck, not the CPU); with DUMP, stdin is written to OUT/DUMP meanwhile
"""

# ruff: noqa: PTH112, PTH113, PTH115, PTH118, PTH123, PTH202  runs on customer hosts: plain os.path

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time

CHUNK = 4 * 1024 * 1024
_LISTING = re.compile(
    r'^(?P<mode>\S{10}) \S+\s+(?P<size>\d+|\d+,\s*\d+) \S+ \S+ (?P<name>"(?:[^"\\]|\\.)*")'
    r'(?: (?:->|link to) (?P<target>"(?:[^"\\]|\\.)*"))?$'
)
_KINDS = {"-": "file", "d": "dir", "l": "symlink"}
_C_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34, "?": 63}


def _entry(path, kind, mode, size=0, sha256=None, target=None):
    return {"path": path, "type": kind, "mode": mode, "size": size, "sha256": sha256, "target": target}


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def describe_tree(root):
    """Entries of ``root`` sorted by path (relative, ``/``-separated), symlinks not followed."""
    if not os.path.isdir(root):
        raise SystemExit("not a directory: " + root)
    entries = []
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
                entries.append(_entry(rel, "file", mode, info.st_size, _file_sha256(full)))
            else:
                entries.append(_entry(rel, "other", mode))
    entries.sort(key=lambda entry: entry["path"])
    return {"root": root, "entries": entries}


def _c_unquote(quoted):
    """A GNU tar ``--quoting-style=c`` string (C escapes, octal bytes) -> the name as os.walk spells it."""
    raw = bytearray()
    body = quoted[1:-1]
    index = 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            raw.extend(char.encode("utf-8", "surrogateescape"))
            index += 1
            continue
        following = body[index + 1]
        if following in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[index + 1 :]).group(0)
            raw.append(int(digits, 8))
            index += 1 + len(digits)
        else:
            raw.append(_C_ESCAPES[following])
            index += 2
    return raw.decode("utf-8", "surrogateescape")


def _mode_bits(text):
    bits = 0
    for position, char in enumerate(text[1:10]):
        if char != "-" and char not in "ST":
            bits |= 1 << (8 - position)
    specials = {3: 0o4000, 6: 0o2000, 9: 0o1000}
    for position, bit in specials.items():
        if text[position] in "sStT":
            bits |= bit
    return bits


def parse_listing(text):
    """Entries of ``tar --list --verbose --quoting-style=c`` output, in the :func:`describe_tree` shape."""
    entries = []
    for line in text.splitlines():
        match = _LISTING.match(line)
        if match is None:
            raise SystemExit("unexpected tar listing line: " + line[:200])
        name = _c_unquote(match["name"])
        name = name[2:] if name.startswith("./") else name
        name = name.rstrip("/")
        if name in ("", "."):
            continue
        kind = _KINDS.get(match["mode"][0], "other")
        size = int(match["size"]) if kind == "file" else 0
        target = _c_unquote(match["target"]) if match["target"] else None
        entries.append(_entry(name, kind, _mode_bits(match["mode"]), size, target=target))
    entries.sort(key=lambda entry: entry["path"])
    return entries


def _decoder(archive):
    if archive.endswith(".zst"):
        return ["zstd", "-q", "-d", "-c"]
    if archive.endswith(".gz"):
        return ["gzip", "-d", "-c"]
    raise SystemExit("unknown archive type: " + archive)


def _lister(archive):
    """``decoder | tar --list``: tar reading plain tar from a pipe is ~2x cheaper than ``tar --zstd -f -``."""
    decoder = subprocess.Popen(_decoder(archive), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    argv = [
        "tar",
        "--list",
        "--verbose",
        "--quoting-style=c",
        "--numeric-owner",
        "--full-time",
        "--file",
        "-",
    ]
    env = dict(os.environ, LC_ALL="C")
    lister = subprocess.Popen(
        argv, stdin=decoder.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    decoder.stdout.close()
    return decoder, lister


def _follow(path, writer, sink, digest, errors):
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


def _collect(stream, into):
    into.append(stream.read())


def list_archive(archive, writer=None):
    """List ``archive`` from disk (following it while ``writer`` still writes it) and hash it."""
    digest = hashlib.sha256()
    errors = []
    decoder, lister = _lister(archive)
    output, problems = [], []
    readers = [
        threading.Thread(target=_collect, args=(lister.stdout, output)),
        threading.Thread(target=_collect, args=(lister.stderr, problems)),
    ]
    for reader in readers:
        reader.start()
    _follow(archive, writer, decoder.stdin, digest, errors)
    for reader in readers:
        reader.join()
    code, decoded = lister.wait(), decoder.wait()
    if errors or code != 0 or decoded != 0:
        detail = " ".join(errors) + " " + b"".join(problems).decode(errors="replace")
        status = "decoder exit " + str(decoded) + ", tar exit " + str(code)
        raise SystemExit("cannot list " + archive + " (" + status + "): " + detail.strip())
    entries = parse_listing(output[0].decode("ascii", "replace"))
    return {
        "archive": archive,
        "sha256": digest.hexdigest(),
        "size": os.path.getsize(archive),
        "entries": entries,
    }


def receive(path, offset):
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
    stdin = sys.stdin.buffer.raw
    try:
        while True:
            count = stdin.readinto(buffer)
            if not count:
                break
            chunk = view[:count]
            digest.update(chunk)
            written = 0
            while written < count:
                written += os.write(descriptor, chunk[written:])
            size += count
    finally:
        os.close(descriptor)
    return {"path": path, "sha256": digest.hexdigest(), "size": size}


def _run_receive(path, results):
    try:
        results["dump"] = receive(path, 0)
    except BaseException as exc:  # reported by the caller
        results["dump_error"] = repr(exc)


def backup(install, out, compression="auto", dump_name=None):
    """Archive, manifest and list-back at once (see the module docstring); JSON for the worker."""
    if not os.path.isdir(install) or not os.path.isdir(out):
        raise SystemExit("backup needs an existing install folder and output folder")
    if compression == "auto":
        compression = "zstd" if shutil.which("zstd") else "gzip"
    if compression not in ("zstd", "gzip"):
        raise SystemExit("compression must be auto, zstd or gzip, not " + compression)
    flag, name = ("--zstd", "install.tar.zst") if compression == "zstd" else ("--gzip", "install.tar.gz")
    archive = os.path.join(out, name)
    results = {}
    receiver = None
    if dump_name:
        receiver = threading.Thread(target=_run_receive, args=(os.path.join(out, dump_name), results))
        receiver.start()
    open(archive, "wb").close()  # exists before the lister opens it
    argv = ["tar", flag, "--create", "--hard-dereference", "--file", archive, "--directory", install, "."]
    writer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writer_errors = []
    drain = threading.Thread(target=_collect, args=(writer.stderr, writer_errors))
    drain.start()
    listing = {}

    def list_back():
        try:
            listing.update(list_archive(archive, writer))
        except BaseException as exc:  # reported below
            listing["error"] = str(exc)

    lister = threading.Thread(target=list_back)
    lister.start()
    manifest = describe_tree(install)
    drain.join()
    code = writer.wait()
    lister.join()
    if receiver is not None:
        receiver.join()
    if code != 0:
        detail = b"".join(writer_errors).decode(errors="replace").strip()
        raise SystemExit("tar exited " + str(code) + " archiving " + install + ": " + detail)
    if "error" in listing:
        raise SystemExit(listing["error"])
    if "dump_error" in results:
        raise SystemExit("writing the dump failed: " + results["dump_error"])
    return {
        "compression": flag[2:],
        "archive": {"name": name, "size": listing["size"], "sha256": listing["sha256"]},
        "manifest": manifest["entries"],
        "listing": listing["entries"],
        "dump": results.get("dump"),
    }


def main(argv):
    if len(argv) == 2 and argv[0] == "tree":
        result = describe_tree(argv[1])
    elif len(argv) == 2 and argv[0] == "list":
        result = list_archive(argv[1])
    elif len(argv) == 3 and argv[0] == "receive" and argv[2].isdigit():
        result = receive(argv[1], int(argv[2]))
    elif len(argv) in (4, 5) and argv[0] == "backup":
        result = backup(*argv[1:])
    else:
        raise SystemExit(
            "usage: host_agent tree DIR | list ARCHIVE | receive FILE OFFSET"
            " | backup DIR OUT auto|zstd|gzip [DUMP]"
        )
    json.dump(result, sys.stdout, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
