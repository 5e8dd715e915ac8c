"""The canary leak scan: when a pytest session ends, everything the tests left behind is searched for the synthetic
personal data the session made, in every encoding a leak could take. A hit fails the session.

Canaries (the values searched for)
    Every ``Person`` that ``tests.support.people.People`` makes in the test process — name, mobile in national and
    E.164 form, e-mail, national id, address, member id — is registered as it is made (``People.next`` is wrapped for
    the session). So is ``CANARY_PERSON``, whose values carry a distinctive ``金丝雀``/``canary`` mark; tests that must
    plant a leak on purpose (``tests/reliability/test_canary.py``) use it. People made only inside a subprocess (the
    bench smoke runs) are not registered.

Where
    - every regular file under pytest's basetemp (symbolic links are not followed): the SQLite databases with their
      ``-wal``, ``-shm`` and ``-journal`` files, whole, so free pages are searched too; the logs servers started by the
      tests wrote (``ServerProcess`` writes ``server.log`` into the test's directory); analytics exports, audit
      exports, keyrings, ledgers, copies, private PostgreSQL clusters' data directories — whatever a test wrote there;
    - the structured log of in-process servers: before every test, structlog is set up as production sets it up (JSON,
      allow-list redaction, debug level) writing to ``<basetemp>/canary/structlog.jsonl``; a test (or the CLI run in
      process) that calls ``vault.logs.configure`` keeps its level and stream, but loggers are no longer cached, so no
      module's logger stays pinned to a stream this scan never sees;
    - every status in-process servers returned to a client (message and ``google.rpc.Status`` details), appended to
      ``<basetemp>/canary/statuses.bin`` by a wrapper around the call guard's status builders;
    - every PostgreSQL database the session created through the ``postgres_databases`` fixture: before they are
      dropped, every row of every table of every schema is copied out (``COPY … TO STDOUT``: text, with ``bytea`` as
      hex) into ``<basetemp>/canary/postgres/<database>/<schema>.<table>.copy``.

Encodings
    UTF-8, UTF-16 (little- and big-endian), GB18030 and JSON ``\\uXXXX`` escapes (how the product's logs write
    non-ASCII) are needles: one pass of an Aho-Corasick automaton over the raw bytes. Base64 (standard and URL-safe)
    and hex (either case) are searched by decoding: every run of their alphabet is decoded at every alignment and the
    decoded bytes are searched the same way, so a value inside a longer encoded blob is found too. A needle shorter
    than 8 bytes (6 in UTF-8) is left out: it would match random ciphertext by chance, and the database files hold
    hundreds of megabytes of it. That drops two-character names in UTF-16 and GB18030 (they stay covered in UTF-8,
    JSON, base64 and hex) and three-character names in UTF-16 and GB18030.

Legitimate plaintext (the only files not searched)
    Some files hold personal data by design: the import files tests give to ``piivault import``, export packages for the
    data subject, the planted leaks of the canary's own test. A file or directory is skipped only if
    - a test declared it with ``allow(path, reason)`` (the path and everything under it), or
    - it matches a row of ``RULES``: the test that owns the directory (by node id pattern) and the file's path inside
      that test's ``tmp_path`` (by exact pattern), with the reason; or
    - it is a directory a module- or session-scoped fixture made that matches a row of ``SESSION_RULES`` (by its path
      under basetemp), with the reason: today only the virtualenv the SDK test installs the client into.
    Nothing is skipped by suffix or directory name alone.

Result
    Each hit prints as ``canary leak: mobile/utf-16-le in test_x0/server.log`` (or ``… in PostgreSQL database D,
    table T``): the kind of value and the encoding, never the value. Any hit sets the session's exit status to failed.
    A summary line follows (values, files, megabytes, databases dumped, hits, seconds). ``--collect-only`` scans
    nothing; ``PIIVAULT_CANARY=0`` turns the scan off (it is on by default, in ``make test`` and in CI).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fnmatch
import json
import logging
import mmap
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ahocorasick_rs
import psycopg
import pytest
import structlog
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.support.people import People, Person, national_id
from tests.support.scan import personal_values
from vault import logs
from vault.api import guard

ENABLE_ENV = "PIIVAULT_CANARY"
PLUGIN_NAME = "piivault-canary"

CANARY_PERSON = Person(
    name="金丝雀测试员",
    mobile="13999999999",
    email="canary.leak-check@canary.example.test",
    national_id=national_id(dt.date(1999, 9, 9), 999),
    birth_date="1999-09-09",
    address="金丝雀省泄漏检查市测试路9号",
    member_id="MCANARY0099",
)

# (test node id pattern, path inside that test's tmp_path, why it may hold personal data in clear)
RULES: tuple[tuple[str, str, str], ...] = tuple(
    ("tests/integration/test_import.py::*", name, "a channel's import file, the input given to the importer")
    for name in ("a.csv", "b.csv", "c.csv", "d.xlsx", "customers.csv", "orders.csv", "members.csv")
)

# (a directory under basetemp that a module- or session-scoped fixture makes, why it may hold personal data in clear)
SESSION_RULES: tuple[tuple[str, str], ...] = (
    (
        "sdk-venv*/venv",
        "tests/e2e/test_sdk_standalone.py installs the client SDK here: installed source code (its docstrings and "
        "metadata show the README's example customer), no data",
    ),
)

_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "gb18030")
_MIN_BYTES = {"utf-8": 6}
_MIN_OTHER = 8
_MIN_BASE64_RUN = 12  # 9 bytes: every canary but a two-character name (6 bytes), still found in UTF-8, JSON and hex


def long_enough(encoding: str, needle: bytes) -> bool:
    """Whether a needle is long enough to search binary data for (see "Encodings" above): a shorter one matches
    ciphertext, MACs and varints by chance."""
    return len(needle) >= _MIN_BYTES.get(encoding, _MIN_OTHER)


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{12,}")
_HEX_RUN = re.compile(rb"[0-9a-fA-F]{12,}")
_HEX_ONLY = re.compile(rb"[0-9a-f]+|[0-9A-F]+")
_SEPARATOR = b"\n\xff\xff\xff\xff\n"
_TO_STANDARD_BASE64 = bytes.maketrans(b"-_", b"+/")


@dataclass
class Registry:
    """Canary values, each with the kinds of value it was registered as (``mobile``, ``email``, ...)."""

    values: dict[str, set[str]] = field(default_factory=dict)

    def add(self, kind: str, value: str) -> None:
        if value.strip():
            self.values.setdefault(value, set()).add(kind)

    def add_person(self, person: Person) -> None:
        for kind, value in personal_values(person):
            self.add(kind, value)


class Needles:
    """Every encoded form of every canary value, in one automaton; ``find`` returns labels such as ``mobile/hex``."""

    def __init__(self, registry: Registry) -> None:
        labelled: dict[bytes, set[str]] = {}
        for value, kinds in registry.values.items():
            for encoding, needle in _encoded(value):
                labelled.setdefault(needle, set()).update(f"{kind}/{encoding}" for kind in kinds)
        self._needles = list(labelled)
        self._labels = [labelled[needle] for needle in self._needles]
        self._automaton = (
            ahocorasick_rs.BytesAhoCorasick(self._needles, implementation=ahocorasick_rs.Implementation.ContiguousNFA)
            if self._needles
            else None
        )

    def __len__(self) -> int:
        return len(self._needles)

    def _raw(self, haystack: bytes | mmap.mmap) -> set[str]:
        if self._automaton is None:
            return set()
        found: set[str] = set()
        for index, _, _ in self._automaton.find_matches_as_indexes(haystack, overlapping=True):
            found |= self._labels[index]
        return found

    def find(self, haystack: bytes | mmap.mmap) -> set[str]:
        found = self._raw(haystack)
        for how, blobs in _decoded_runs(haystack).items():
            # One search over all the decoded runs of a kind; the separator cannot occur in any needle (0xFF is in no
            # UTF-8 or GB18030 text, and U+FFFF in no name or address), so no match spans two runs.
            for label in self._raw(_SEPARATOR.join(blobs)):
                kind, encoding = label.split("/", 1)
                found.add(f"{kind}/{how}" if encoding == "utf-8" else f"{kind}/{how}+{encoding}")
        return found


def _encoded(value: str) -> Iterator[tuple[str, bytes]]:
    for encoding in _ENCODINGS:
        if encoding == "gb18030" and value.isascii():
            continue  # the same bytes as UTF-8
        try:
            needle = value.encode(encoding)
        except UnicodeEncodeError:
            continue
        if long_enough(encoding, needle):
            yield encoding, needle
    if not value.isascii():
        yield "json", json.dumps(value)[1:-1].encode()


def _decoded_runs(haystack: bytes | mmap.mmap) -> dict[str, list[bytes]]:
    """The bytes behind every base64 and hex run, decoded at every alignment (a value may sit mid-blob).

    A run of hex digits only is decoded as hex, not also as base64: the base64 of a value holds other characters too
    (a value of one repeated digit aside, which no canary is), and a database is full of hex ids and digests."""
    decoded: dict[str, list[bytes]] = {"base64": [], "hex": []}
    taken: set[tuple[int, int]] = set()
    for match in _BASE64_RUN.finditer(haystack):
        run = match.group()
        if _HEX_ONLY.fullmatch(run):
            decoded["hex"].extend(_from_hex(run))
            taken.add(match.span())
            continue
        run = run.translate(_TO_STANDARD_BASE64)
        for start in range(4):
            chunk = run[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            if len(chunk) >= _MIN_BASE64_RUN:
                try:
                    decoded["base64"].append(base64.b64decode(chunk))
                except binascii.Error:
                    continue
    for match in _HEX_RUN.finditer(haystack):
        if match.span() not in taken:  # e.g. after "\\x", or inside a longer run of the base64 alphabet
            decoded["hex"].extend(_from_hex(match.group()))
    return decoded


def _from_hex(run: bytes) -> Iterator[bytes]:
    for start in range(2):
        chunk = run[start:]
        yield bytes.fromhex(chunk[: len(chunk) - len(chunk) % 2].decode())


# --- what a test may declare -------------------------------------------------------------------------------------

_ALLOWED: dict[Path, str] = {}


def allow(path: Path, reason: str) -> None:
    """Declare ``path`` (a file, or a directory and everything under it) legitimate plaintext, with the reason."""
    if not reason.strip():
        raise ValueError("say why the file may hold personal data in clear")
    _ALLOWED[path.resolve()] = reason


def registry() -> Registry:
    """The session's canaries (also for tests that want to check a value is one)."""
    return _REGISTRY


_REGISTRY = Registry()


# --- PostgreSQL ----------------------------------------------------------------------------------------------------

_TABLES = """
    SELECT table_schema, table_name FROM information_schema.tables
    WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
"""


def dump_postgres(urls: Iterable[str], into: Path, workers: int = 4) -> int:
    """Copy every row of every table of each database into ``into/<database>/<schema>.<table>.copy``."""
    targets = list(urls)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda url: _dump_one(url, into), targets))
    return len(targets)


def _dump_one(url: str, into: Path) -> None:
    parsed = make_url(url)
    target = into / str(parsed.database)
    target.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        autocommit=True,
    ) as connection:
        tables = connection.execute(_TABLES).fetchall()
        for schema, table in tables:
            statement = sql.SQL("COPY {}.{} TO STDOUT").format(sql.Identifier(schema), sql.Identifier(table))
            with (
                (target / f"{schema}.{table}.copy").open("wb") as sink,
                connection.cursor() as cursor,
                cursor.copy(statement) as copy,
            ):
                for chunk in copy:
                    sink.write(chunk)


# --- the plugin ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    label: str
    where: str


class CanaryPlugin:
    """Registered by ``tests/conftest.py``; see the module docstring."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.base = Path()
        self.owners: dict[Path, str] = {}  # a test's tmp_path → its node id
        self.databases_dumped = 0
        self.dump_seconds = 0.0
        self._restore: list[Callable[[], None]] = []
        self._status_lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self.base / "canary"

    @property
    def postgres_directory(self) -> Path:
        return self.directory / "postgres"

    # session start: canaries, structlog, statuses

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        factory: pytest.TempPathFactory = self.config._tmp_path_factory  # type: ignore[attr-defined]
        self.base = factory.getbasetemp().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        _REGISTRY.add_person(CANARY_PERSON)
        self._wrap_people()
        self._record_statuses()
        self._never_cache_loggers()

    def _wrap_people(self) -> None:
        original = People.next

        def next_person(people: People) -> Person:
            person = original(people)
            _REGISTRY.add_person(person)
            return person

        setattr(People, "next", next_person)  # noqa: B010 - mypy refuses a method assigned a function
        self._restore.append(lambda: setattr(People, "next", original))

    def _never_cache_loggers(self) -> None:
        """Production caches each logger on first use. In a test session that pins a module's logger to whatever
        stream a test configured (the CLI's, run in process by CliRunner, is closed when the command returns): the
        module's later lines would go nowhere, out of this scan's sight, or fail on the closed stream. So whoever calls
        ``vault.logs.configure`` during the session gets its processors, level and stream, uncached."""
        original = logs.configure

        def configure(level: str = "info", stream: Any = None) -> None:
            original(level, stream)
            structlog.configure(cache_logger_on_first_use=False)

        setattr(logs, "configure", configure)  # noqa: B010 - mypy refuses assigning to a module's function
        self._restore.append(lambda: setattr(logs, "configure", original))

    def _record_statuses(self) -> None:
        sink = (self.directory / "statuses.bin").open("ab")
        # The guard builds every status through these two names (looked up at call time): wrap them for the session.
        module: Any = guard
        to_status, internal_status = module.to_status, module.internal_status

        def record(status: Any) -> Any:
            with self._status_lock:
                sink.write(f"{status.code.name}\t{status.details}\n".encode())
                for _, value in status.trailing_metadata or ():
                    sink.write(value if isinstance(value, bytes) else str(value).encode())
                    sink.write(b"\n")
                sink.flush()
            return status

        module.to_status = lambda error: record(to_status(error))
        module.internal_status = lambda: record(internal_status())

        def restore() -> None:
            module.to_status, module.internal_status = to_status, internal_status
            sink.close()

        self._restore.append(restore)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Before every test (a test may have reconfigured or reset structlog): production's processors, debug level,
        # into the scanned file. Not cached, so no logger keeps writing to a stream a test has closed.
        structlog.configure(
            processors=logs.processors(),
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=structlog.PrintLoggerFactory(file=self._structlog_sink()),
            cache_logger_on_first_use=False,
        )

    def _structlog_sink(self) -> Any:
        if not hasattr(self, "_structlog_file"):
            self._structlog_file = (self.directory / "structlog.jsonl").open("a", encoding="utf-8")
            self._restore.append(self._structlog_file.close)
        return self._structlog_file

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        tmp_path = funcargs.get("tmp_path")
        if isinstance(tmp_path, Path):
            self.owners[tmp_path.resolve()] = item.nodeid

    # PostgreSQL, called by the postgres_databases fixture before it drops its databases

    def dump_postgres(self, urls: list[str]) -> None:
        started = time.perf_counter()
        self.databases_dumped += dump_postgres(urls, self.postgres_directory)
        self.dump_seconds += time.perf_counter() - started

    # session end: the scan

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()
        if self.config.option.collectonly:
            return
        started = time.perf_counter()
        needles = Needles(_REGISTRY)
        files = scanned = 0
        hits: list[Hit] = []
        for path in self._files():
            files += 1
            size, found = _scan_file(path, needles)
            scanned += size
            hits.extend(Hit(label, self._where(path)) for label in sorted(found))
        seconds = time.perf_counter() - started
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"canary leak: {hit.label} in {hit.where}" for hit in hits]
        lines.append(
            f"canary scan: {len(_REGISTRY.values)} values ({len(needles)} needles), {files} files "
            f"({scanned / 1e6:.1f} MB) incl. {self.databases_dumped} PostgreSQL databases "
            f"(dumped in {self.dump_seconds:.1f} s), {len(hits)} hits, scanned in {seconds:.1f} s"
        )
        if reporter is not None:
            reporter.write_line("")  # end the progress line
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line)
        if hits:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _files(self) -> Iterator[Path]:
        for root, directories, names in os.walk(self.base):
            here = Path(root)
            directories[:] = [d for d in directories if not (here / d).is_symlink() and not self._allowed(here / d)]
            for name in names:
                path = here / name
                if not path.is_symlink() and path.is_file() and not self._allowed(path):
                    yield path

    def _allowed(self, path: Path) -> bool:
        if path in _ALLOWED:
            return True
        under_base = path.relative_to(self.base).as_posix()
        if any(fnmatch.fnmatchcase(under_base, pattern) for pattern, _ in SESSION_RULES):
            return True
        for directory, nodeid in self._owners_of(path):
            inside = path.relative_to(directory).as_posix()
            for node_pattern, file_pattern, _ in RULES:
                if fnmatch.fnmatchcase(nodeid, node_pattern) and fnmatch.fnmatchcase(inside, file_pattern):
                    return True
        return False

    def _owners_of(self, path: Path) -> Iterator[tuple[Path, str]]:
        for parent in path.parents:
            nodeid = self.owners.get(parent)
            if nodeid is not None:
                yield parent, nodeid
            if parent == self.base:
                return

    def _where(self, path: Path) -> str:
        inside = path.relative_to(self.base)
        if path.is_relative_to(self.postgres_directory):
            database = path.parent.name
            return f"PostgreSQL database {database}, table {path.name.removesuffix('.copy')}"
        return inside.as_posix()

    def unconfigure(self) -> None:
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()


def _scan_file(path: Path, needles: Needles) -> tuple[int, set[str]]:
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return 0, set()
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return size, needles.find(view)
    except (FileNotFoundError, PermissionError, ValueError):
        return 0, set()  # removed while walking, or not mappable (a socket, a FIFO)


def install(config: pytest.Config) -> CanaryPlugin | None:
    """Register the plugin unless ``PIIVAULT_CANARY=0``; called from ``tests/conftest.py``."""
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return None
    plugin = CanaryPlugin(config)
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    return plugin


def plugin_of(config: pytest.Config) -> CanaryPlugin | None:
    found = config.pluginmanager.get_plugin(PLUGIN_NAME)
    return found if isinstance(found, CanaryPlugin) else None
