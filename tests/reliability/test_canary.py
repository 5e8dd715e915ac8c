"""The test of the canary leak scan (``tests/support/canary.py``): a pytest session whose tests plant a canary person's
mobile in clear — in a SQLite database, base64 in a server log, in a PostgreSQL table — fails and names each leak by
kind, encoding and place (never the value); the same session with the value kept to a declared file passes.

Each case runs pytest in a subprocess on a planted test file in ``tmp_path``, with the repository's fixtures loaded as
a plugin (``-p tests.conftest``) and its own basetemp inside ``tmp_path`` (declared legitimate plaintext here, so that
this session's own scan does not count the planted leaks).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import canary

ROOT = Path(__file__).resolve().parents[2]

PLANTED = """
from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from tests.support import canary

MOBILE = canary.CANARY_PERSON.mobile
LEAK = {leak}


def test_sqlite(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "planted.db") as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES (?)", (MOBILE if LEAK else "nothing personal",))


def test_server_log(tmp_path: Path) -> None:
    note = base64.b64encode(("caller " + MOBILE).encode()).decode()
    log = tmp_path / "server.log"
    log.write_text(json.dumps({{"event": "rpc", "code": "OK", "note": note if LEAK else "nothing"}}) + "\\n")
    if not LEAK:  # the value goes to a declared file instead: legitimate plaintext, not searched
        declared = tmp_path / "subject-export.json"
        declared.write_text(json.dumps({{"mobile": MOBILE}}))
        canary.allow(declared, "the data subject's own export")


@pytest.mark.postgres
def test_postgres(postgres_databases) -> None:
    url = postgres_databases.create().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE planted (body text)")
        connection.execute("INSERT INTO planted VALUES (%s)", (MOBILE if LEAK else "nothing personal",))
"""

INI = """
[pytest]
markers =
    postgres: needs PostgreSQL
    slow: slow
    local_keyring: local keyring only
"""


POSTGRES = bool(os.environ.get("PIIVAULT_TEST_POSTGRES_URL"))


def run_planted(tmp_path: Path, *, leak: bool) -> subprocess.CompletedProcess[str]:
    """The planted session; its PostgreSQL test runs whenever this session has PostgreSQL (as in CI)."""
    canary.allow(tmp_path, "the canary's own test plants leaks here, in a pytest session of its own")
    (tmp_path / "pytest.ini").write_text(INI)
    planted = tmp_path / "test_planted.py"
    planted.write_text(textwrap.dedent(PLANTED).format(leak=leak))
    # The inner session must not fail for a skipped PostgreSQL test, and runs the scan as it is by default.
    env = {k: v for k, v in os.environ.items() if k not in ("PIIVAULT_REQUIRE_POSTGRES", canary.ENABLE_ENV)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.conftest",
        "-c",
        str(tmp_path / "pytest.ini"),
        "--rootdir",
        str(tmp_path),
        "--basetemp",
        str(tmp_path / "basetemp"),
        str(planted),
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def leaks(done: subprocess.CompletedProcess[str]) -> list[str]:
    return sorted(line for line in done.stdout.splitlines() if line.startswith("canary leak:"))


def test_every_encoding_of_a_value_is_found_also_inside_a_longer_encoded_blob() -> None:
    person = canary.CANARY_PERSON
    registry = canary.Registry()
    registry.add_person(person)
    needles = canary.Needles(registry)
    noise = bytes(range(256)) * 4

    def found(blob: bytes) -> set[str]:
        return needles.find(noise + blob + noise)

    address = person.address
    assert "address/utf-8" in found(address.encode())
    assert "address/utf-16-le" in found(address.encode("utf-16-le"))
    assert "address/utf-16-be" in found(address.encode("utf-16-be"))
    assert "address/gb18030" in found(address.encode("gb18030"))
    assert "address/json" in found(json.dumps({"a": address}).encode())
    for offset in range(3):  # the value at every alignment inside a longer base64 blob, standard and URL-safe
        blob = b"x" * offset + person.email.encode() + b"tail"
        assert "email/base64" in found(base64.b64encode(blob))
        assert "email/base64" in found(base64.urlsafe_b64encode(b"\xfb\xff" + blob))
    assert "national_id/hex" in found(b"\\x" + ("?" + person.national_id).encode().hex().encode())
    assert "national_id/hex" in found(person.national_id.encode().hex().upper().encode())
    assert {"mobile/utf-8", "mobile-e164/utf-8"} <= found(b"+86" + person.mobile.encode())
    assert found(b"13999999990 " + person.email.encode()[:-1]) == set()  # a neighbour is not a hit


def test_planted_leaks_fail_the_session_and_each_is_named(tmp_path: Path) -> None:
    done = run_planted(tmp_path, leak=True)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    # The planted tests themselves pass: the scan alone fails the session.
    assert ("3 passed" if POSTGRES else "2 passed, 1 skipped") in done.stdout, done.stdout
    found = leaks(done)
    assert any(line.startswith("canary leak: mobile/utf-8 in test_sqlite0/planted.db") for line in found), found
    assert any(line.startswith("canary leak: mobile/base64 in test_server_log0/server.log") for line in found), found
    in_postgres = [line for line in found if "in PostgreSQL database piivault_test_" in line]
    if POSTGRES:
        assert [line.split(" in ")[0] for line in in_postgres] == ["canary leak: mobile/utf-8"], found
        assert in_postgres[0].endswith(", table public.planted"), found
    assert len(found) == 2 + len(in_postgres), found
    assert canary.CANARY_PERSON.mobile not in done.stdout + done.stderr  # labels, never the value


def test_the_same_session_with_the_value_only_in_a_declared_file_passes(tmp_path: Path) -> None:
    done = run_planted(tmp_path, leak=False)
    assert done.returncode == pytest.ExitCode.OK, done.stdout + done.stderr
    assert leaks(done) == []
    assert ", 0 hits," in done.stdout
    assert (f"{1 if POSTGRES else 0} PostgreSQL databases") in done.stdout
