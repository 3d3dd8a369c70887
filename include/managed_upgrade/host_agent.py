"""Runs ON a customer host (``python3 -c <this source> <command> <args>``) to describe files exactly.

Why a script and not ``find``/``tar -tv`` output: file names may hold any byte, and parsing the text of
``tar -tv`` or ``sha256sum`` breaks on spaces and newlines. This prints exact JSON instead. It uses the
standard library only (the host has the ``python3`` the vendor installer needs, nothing more), takes
its inputs only as argv elements, and never builds a command line.

Commands:
    tree DIR         every entry under DIR: path, type, mode, size, sha256 (files), target (links)
    archive FILE     every member of a .tar.zst / .tar.gz archive (path, type, mode, size, target) and
                     the sha256 of the archive file, computed in the same pass as the listing
    receive FILE N   write stdin to FILE from byte N on (N > 0: FILE must hold exactly N bytes, which
                     are kept), hashing while writing; prints the sha256 and size of the whole file.
                     Hashing in the same pass overlaps it with the disk writes instead of re-reading.
"""

# ruff: noqa: PTH112, PTH113, PTH115, PTH118, PTH123, PTH202  this runs on customer hosts under any python3: plain os.path keeps it portable

import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading

CHUNK = 4 * 1024 * 1024


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


def _feed(archive_path, sink, digest, errors):
    try:
        with open(archive_path, "rb") as source:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                sink.write(chunk)
    except Exception as exc:  # reported by the main thread
        errors.append(repr(exc))
    finally:
        try:
            sink.close()
        except OSError as exc:
            errors.append(repr(exc))


def describe_archive(archive_path):
    """Members of a ``.tar.zst`` (via the ``zstd`` binary) or ``.tar.gz`` archive, plus its sha256."""
    digest = hashlib.sha256()
    errors = []
    if archive_path.endswith(".zst"):
        decoder = ["zstd", "-q", "-d", "-c"]
    elif archive_path.endswith(".gz"):
        decoder = ["gzip", "-d", "-c"]
    else:
        raise SystemExit("unknown archive type: " + archive_path)
    process = subprocess.Popen(decoder, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    feeder = threading.Thread(target=_feed, args=(archive_path, process.stdin, digest, errors))
    feeder.start()
    entries = []
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|", bufsize=CHUNK) as archive:
            for member in archive:
                name = member.name[2:] if member.name.startswith("./") else member.name
                name = name.rstrip("/")
                if name in ("", "."):
                    continue
                if member.issym():
                    kind = "symlink"
                elif member.isdir():
                    kind = "dir"
                elif member.isfile():
                    kind = "file"
                else:
                    kind = "other"
                size = member.size if kind == "file" else 0
                entries.append(_entry(name, kind, member.mode & 0o7777, size, target=member.linkname or None))
    finally:
        feeder.join()
        process.stdout.close()
        code = process.wait()
    if errors or code != 0:
        raise SystemExit(
            "cannot read " + archive_path + ": decoder exit " + str(code) + " " + " ".join(errors)
        )
    entries.sort(key=lambda entry: entry["path"])
    return {"archive": archive_path, "sha256": digest.hexdigest(), "entries": entries}


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


def main(argv):
    if len(argv) == 2 and argv[0] == "tree":
        result = describe_tree(argv[1])
    elif len(argv) == 2 and argv[0] == "archive":
        result = describe_archive(argv[1])
    elif len(argv) == 3 and argv[0] == "receive" and argv[2].isdigit():
        result = receive(argv[1], int(argv[2]))
    else:
        raise SystemExit("usage: host_agent tree DIR | archive FILE | receive FILE OFFSET")
    json.dump(result, sys.stdout, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
