"""The release checksum manifest: strict parsing, safe file names, exact listing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from managed_upgrade.errors import ManifestError
from managed_upgrade.transport.manifest import FILE_NAME_PATTERN, Manifest, file_sha256, require_file_name

DIGEST_A = "a" * 64
DIGEST_B = "0123456789abcdef" * 4


def test_parses_sha256sum_output_in_order() -> None:
    manifest = Manifest.parse(f"{DIGEST_A}  installer.py\n{DIGEST_B}  payload.tar.gz\n")
    assert manifest.names == ("installer.py", "payload.tar.gz")
    assert manifest.expected("payload.tar.gz") == DIGEST_B


def test_accepts_binary_marker_and_upper_case_hex() -> None:
    manifest = Manifest.parse(f"{DIGEST_B.upper()} *payload.tar.gz\n\n")
    assert manifest.expected("payload.tar.gz") == DIGEST_B


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{DIGEST_A} installer.py", "SHA256SUMS:1: not"),  # one space, no mode marker
        ("deadbeef  installer.py", "not '<sha256>  <name>'"),
        (f"{DIGEST_A}  a.py\n{DIGEST_B}  a.py", "a.py is listed twice"),
        (f"{DIGEST_A}  SHA256SUMS", "must not list itself"),
        ("\n\n", "lists no files"),
    ],
)
def test_rejects_malformed_manifests(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.parse(text, "SHA256SUMS")


@pytest.mark.parametrize(
    "name",
    [
        "1.0; rm -rf /",
        "$(id)",
        "`id`.tar",
        "it's.tar",
        'a"b.tar',
        "with space.tar",
        "../installer.py",
        "sub/dir.tar",
        "-rf",
        ".hidden",
    ],
)
def test_rejects_file_names_that_could_mean_something_to_a_shell_or_a_path(name: str) -> None:
    with pytest.raises(ManifestError, match="SHA256SUMS:1: file name"):
        Manifest.parse(f"{DIGEST_A}  {name}\n", "SHA256SUMS")


def test_a_newline_cannot_smuggle_a_second_entry_name() -> None:
    with pytest.raises(ManifestError, match="SHA256SUMS:2: not"):
        Manifest.parse(f"{DIGEST_A}  ok.tar\n$(touch /tmp/x)\n")


def test_check_listing_names_unlisted_and_missing_files() -> None:
    manifest = Manifest.parse(f"{DIGEST_A}  installer.py\n{DIGEST_B}  payload.tar.gz\n")
    manifest.check_listing(["SHA256SUMS", "installer.py", "payload.tar.gz"], "release 11.0.0")
    with pytest.raises(ManifestError) as error:
        manifest.check_listing(["SHA256SUMS", "installer.py", "extra.bin"], "release 11.0.0")
    assert "not listed in SHA256SUMS: extra.bin" in str(error.value)
    assert "listed in SHA256SUMS but missing: payload.tar.gz" in str(error.value)


names = st.from_regex(FILE_NAME_PATTERN, fullmatch=True).filter(
    lambda name: name != "SHA256SUMS" and name not in (".", "..")
)


@given(st.dictionaries(names, st.binary(min_size=32, max_size=32).map(lambda b: b.hex()), min_size=1))
def test_render_then_parse_round_trips(entries: dict[str, str]) -> None:
    manifest = Manifest(entries)
    assert Manifest.parse(manifest.render()).entries == entries


def test_file_sha256_matches_hashlib(tmp_path) -> None:
    path = tmp_path / "blob"
    data = bytes(range(256)) * 50_000
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_require_file_name_message_names_the_value() -> None:
    with pytest.raises(ManifestError, match=r"'a b' is not allowed"):
        require_file_name("a b")
