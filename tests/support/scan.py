"""Scanning stored bytes for plaintext personal data (SQLite files with WAL, PostgreSQL tables, logs)."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, MetaData, select
from sqlalchemy.engine import make_url

from tests.support.people import Person


def personal_values(person: Person) -> tuple[tuple[str, str], ...]:
    """A person's personal data as (kind, value): what must never be found at rest, in logs or in labels."""
    return (
        ("name", person.name),
        ("mobile", person.mobile),
        ("mobile-e164", "+86" + person.mobile),
        ("email", person.email),
        ("national_id", person.national_id),
        ("address", person.address),
        ("member_id", person.member_id),
    )


def needles(people: Iterable[Person]) -> dict[str, bytes]:
    """The plaintext forms of each person's personal data that must never be found at rest."""
    found: dict[str, bytes] = {}
    for person in people:
        for label, value in personal_values(person):
            for encoding in ("utf-8", "utf-16-le", "gb18030"):
                found[f"{label}/{encoding}:{value}"] = value.encode(encoding)
            found[f"{label}/base64:{value}"] = base64.b64encode(value.encode())
            found[f"{label}/hex:{value}"] = value.encode().hex().encode()  # how pg_dump shows bytea
    return found


def find_in_bytes(haystack: bytes, wanted: dict[str, bytes]) -> list[str]:
    return [label for label, needle in wanted.items() if needle in haystack]


def sqlite_files(database_file: Path) -> bytes:
    """The database file and its WAL and shared-memory files, as one blob."""
    blob = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(str(database_file) + suffix)
        if path.exists():
            blob += path.read_bytes()
    return blob


def table_dump(engine: Engine) -> bytes:
    """Every row of every table, raw bytes and text, as one blob (a stand-in for pg_dump)."""
    metadata = MetaData()
    metadata.reflect(engine)
    parts: list[bytes] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        parts.append(bytes(value))
                    else:
                        parts.append(str(value).encode())
    return b"\x00".join(parts)


def pg_dump(url: str) -> bytes:
    """A real ``pg_dump`` of the database (custom format is compressed, so plain SQL is used)."""
    parsed = make_url(url)
    done = subprocess.run(
        [
            "pg_dump",
            "--no-owner",
            f"--host={parsed.host or '127.0.0.1'}",
            f"--port={parsed.port or 5432}",
            f"--username={parsed.username or 'postgres'}",
            str(parsed.database),
        ],
        capture_output=True,
        timeout=120,
        check=True,
        env={**os.environ, "PGPASSWORD": parsed.password or ""},
    )
    return done.stdout
