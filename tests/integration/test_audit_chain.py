"""The audit chain: fault injection (fail closed, no PII out) and 1,000 random tamperings, each caught at its seq."""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from audit.events import AuditDraft, Caller
from audit.verify import ChainVerifier
from tests.support.people import People, caller, profile_of
from vault.app import Vault
from vault.crypto import ChainMac, SecretKey, Signer
from vault.customers.models import IdentifierKind
from vault.errors import Unavailable
from vault.storage.db import Database
from vault.storage.migrate import upgrade

AUDITOR = Caller("auditor-1", "auditor", "test")


def test_reads_fail_closed_when_the_audit_write_fails(
    vault: Vault, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 randomized trials: whenever the audit event cannot be written, the call returns nothing."""
    stored = [people.next() for _ in range(10)]
    ids = [vault.customers.create(caller(), "", profile_of(p)).customer_id for p in stored]
    real_append = vault.audit.append
    rng = random.Random(20261122)
    failing = {"now": False}

    def flaky_append(connection: object, items: list[object]) -> None:
        if failing["now"]:
            raise OperationalError("INSERT INTO audit_events", {}, Exception("disk I/O error"))
        real_append(connection, items)  # type: ignore[arg-type]

    monkeypatch.setattr(vault.audit, "append", flaky_append)
    monkeypatch.setattr(vault.writer, "_before_commit", flaky_append)
    leaked = 0
    refused = 0
    versions = dict.fromkeys(ids, 1)  # tracked here, so that updates fail only for the audit, never as stale
    for trial in range(1000):
        failing["now"] = rng.random() < 0.5
        index = rng.randrange(len(stored))
        operation = rng.choice(("get", "find", "page", "create", "update"))
        try:
            if operation == "get":
                result: object = vault.customers.get(caller(), ids[index])
            elif operation == "find":
                result = vault.customers.find(caller(), IdentifierKind.MOBILE, stored[index].mobile)
            elif operation == "page":
                result = vault.customers.page(caller(), 5, "")
            elif operation == "create":
                result = vault.customers.create(caller(), f"t{trial}", profile_of(people.next()))
            else:
                updated = vault.customers.update(
                    caller(), profile_of(stored[index]), ids[index], ["address"], versions[ids[index]]
                )
                versions[ids[index]] = updated.version
                result = updated
        except Unavailable:
            refused += 1
            assert failing["now"]
            continue
        if failing["now"]:
            leaked += 1
        assert result is not None
    assert leaked == 0
    assert refused > 300
    failing["now"] = False
    assert vault.audit_verifier.verify().intact


def test_a_failed_write_leaves_neither_the_change_nor_its_event(vault: Vault, people: People) -> None:
    person = people.next()

    def refuse(connection: object, items: list[object]) -> None:
        raise OperationalError("INSERT INTO audit_events", {}, Exception("disk full"))

    vault.writer._before_commit = refuse
    with pytest.raises(Unavailable):
        vault.customers.create(caller(), "", profile_of(person))
    vault.writer._before_commit = vault.audit.append
    assert vault.customers.find(caller(), IdentifierKind.MOBILE, person.mobile) == []


# -- tampering ---------------------------------------------------------------------------------------------------

EVENTS = 200
COLUMNS = (
    "time_us",
    "principal",
    "role",
    "action",
    "customer_ids",
    "fields",
    "purpose",
    "outcome",
    "request_id",
    "peer",
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, Signer]:
    """A database holding a 200-event chain, built once; each trial tampers with a copy."""
    folder = tmp_path_factory.mktemp("chain")
    database = Database.from_url(f"sqlite:///{folder / 'chain.db'}")
    upgrade(database.engine)
    from audit.log import AuditLog
    from vault.storage.group_commit import GroupCommitter

    mac_key = SecretKey.generate()
    signer = Signer(SecretKey.generate())
    log = AuditLog(ChainMac(mac_key), signer, checkpoint_every=50)
    writer = GroupCommitter(database, before_commit=log.append)
    log.attach(writer)
    rng = random.Random(7)
    for n in range(EVENTS):
        log.record(
            AuditDraft.of(
                Caller(f"p{n % 7}", "service", "/piivault.v1.CustomerService/GetCustomer", f"r{n}", "ipv4:10.0.0.1:5"),
                "ok",
                (f"00000000-0000-4000-8000-{rng.randrange(10**12):012d}",),
                ("mobile", "name"),
            )
        )
    database.dispose()
    return folder / "chain.db", mac_key.reveal(), signer


def _mutate(path: Path, rng: random.Random) -> tuple[str, int]:
    """Apply one random tampering with sqlite3 directly; return its kind and the first sequence it breaks."""
    connection = sqlite3.connect(path)
    kind = rng.choice(("edit", "delete", "insert", "swap", "truncate"))
    with connection:
        if kind == "edit":
            seq = rng.randrange(1, EVENTS + 1)
            column = rng.choice((*COLUMNS, "mac"))
            (value,) = connection.execute(f"SELECT {column} FROM audit_events WHERE seq = ?", (seq,)).fetchone()
            if isinstance(value, bytes):
                position = rng.randrange(len(value))
                changed: object = (
                    value[:position] + bytes([value[position] ^ 1 + rng.randrange(255)]) + value[position + 1 :]
                )
            elif isinstance(value, int):
                changed = value + rng.choice((-1, 1))
            else:
                changed = value + "x" if not value else value[:-1] + chr(ord(value[-1]) ^ 1)
            connection.execute(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (changed, seq))
            return kind, seq
        if kind == "delete":
            seq = rng.randrange(1, EVENTS + 1)
            connection.execute("DELETE FROM audit_events WHERE seq = ?", (seq,))
            return kind, seq
        if kind == "insert":
            row = connection.execute(
                "SELECT * FROM audit_events WHERE seq = ?", (rng.randrange(1, EVENTS + 1),)
            ).fetchone()
            forged = (EVENTS + 1, *row[1:-1], rng.randbytes(32))
            connection.execute(f"INSERT INTO audit_events VALUES ({','.join('?' * len(forged))})", forged)
            return kind, EVENTS + 1
        if kind == "swap":
            first, second = sorted(rng.sample(range(1, EVENTS + 1), 2))
            a = connection.execute(
                f"SELECT {','.join(COLUMNS)}, mac FROM audit_events WHERE seq = ?", (first,)
            ).fetchone()
            b = connection.execute(
                f"SELECT {','.join(COLUMNS)}, mac FROM audit_events WHERE seq = ?", (second,)
            ).fetchone()
            assignments = ", ".join(f"{c} = ?" for c in (*COLUMNS, "mac"))
            connection.execute(f"UPDATE audit_events SET {assignments} WHERE seq = ?", (*b, first))
            connection.execute(f"UPDATE audit_events SET {assignments} WHERE seq = ?", (*a, second))
            return kind, first
        cut = rng.randrange(1, EVENTS + 1)
        connection.execute("DELETE FROM audit_events WHERE seq >= ?", (cut,))
        return kind, cut


def test_a_thousand_random_tamperings_are_each_caught_at_the_right_sequence(
    pristine: tuple[Path, bytes, Signer], tmp_path: Path
) -> None:
    source, mac_key, signer = pristine
    chain = ChainMac(SecretKey(mac_key))
    intact_copy = tmp_path / "intact.db"
    shutil.copy(source, intact_copy)
    database = Database.from_url(f"sqlite:///{intact_copy}")
    assert ChainVerifier(database, chain, signer.public_key).verify().intact
    database.dispose()
    rng = random.Random(424242)
    kinds: dict[str, int] = {}
    for trial in range(1000):
        copy = tmp_path / f"t{trial % 4}.db"
        shutil.copy(source, copy)
        kind, expected = _mutate(copy, rng)
        database = Database.from_url(f"sqlite:///{copy}")
        report = ChainVerifier(database, chain, signer.public_key).verify()
        database.dispose()
        assert not report.intact, (trial, kind)
        assert report.first_bad_seq == expected, (trial, kind, report)
        kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) == {"edit", "delete", "insert", "swap", "truncate"}


def test_truncation_hidden_by_rewriting_the_head_is_caught_by_a_checkpoint(
    pristine: tuple[Path, bytes, Signer], tmp_path: Path
) -> None:
    source, mac_key, signer = pristine
    copy = tmp_path / "cut.db"
    shutil.copy(source, copy)
    connection = sqlite3.connect(copy)
    with connection:
        (mac,) = connection.execute("SELECT mac FROM audit_events WHERE seq = 120").fetchone()
        connection.execute("DELETE FROM audit_events WHERE seq > 120")
        connection.execute("UPDATE audit_head SET seq = 120, mac = ?", (mac,))  # the attacker fixes the head too
    connection.close()
    database = Database.from_url(f"sqlite:///{copy}")
    report = ChainVerifier(database, ChainMac(SecretKey(mac_key)), signer.public_key).verify()
    database.dispose()
    assert not report.intact
    assert report.first_bad_seq == 121  # the checkpoint at 150 (one every 50 events) proves events are missing


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_parallel_verification_finds_the_same_first_bad_sequence(
    pristine: tuple[Path, bytes, Signer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Split over two processes, including breaks right at the boundary between their ranges."""
    import audit.verify

    monkeypatch.setattr(audit.verify, "PARALLEL_THRESHOLD", 0)
    source, mac_key, signer = pristine
    copy = tmp_path / "p.db"
    shutil.copy(source, copy)
    boundary = audit.verify._split(EVENTS, 2)[0][1]
    if seed <= 2:  # the last event of the first range, or the first of the second
        expected = boundary + seed - 1
        connection = sqlite3.connect(copy)
        with connection:
            connection.execute("DELETE FROM audit_events WHERE seq = ?", (expected,))
        connection.close()
    else:
        _, expected = _mutate(copy, random.Random(seed))
    database = Database.from_url(f"sqlite:///{copy}")
    verifier = ChainVerifier(database, ChainMac(SecretKey(mac_key)), signer.public_key, mac_key)
    single = verifier.verify(workers=1)
    parallel = verifier.verify(workers=2)
    database.dispose()
    assert single.first_bad_seq == expected
    assert (parallel.intact, parallel.first_bad_seq) == (False, expected)


def test_verification_while_events_are_appended_reports_no_false_alarm(vault: Vault) -> None:
    import threading

    stop = threading.Event()
    draft = AuditDraft.of(Caller("pos", "service", "/piivault.v1.CustomerService/GetCustomer"), "ok")

    def append() -> None:
        while not stop.is_set():
            vault.audit.record(draft)

    writers = [threading.Thread(target=append) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        # On a loaded machine the writers may need a moment to start; wait for the first event, then verify while
        # they keep appending (a short pause between runs lets them make progress).
        deadline = time.monotonic() + 30
        while vault.audit_verifier.verify().events_checked == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        reports = []
        for _ in range(25):
            reports.append(vault.audit_verifier.verify())
            time.sleep(0.01)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert [r.problem for r in reports if not r.intact] == []
    assert reports[-1].events_checked > reports[0].events_checked


def test_malformed_customer_ids_and_field_names_never_reach_an_event() -> None:
    draft = AuditDraft.of(
        Caller("pos", "service", "x"),
        "ok",
        ("13800138000 张三", "00000000-0000-4000-8000-000000000001"),
        ("mobile", "13800138000"),
    )
    assert draft.customer_ids == ("00000000-0000-4000-8000-000000000001",)
    assert draft.fields == ("mobile",)
