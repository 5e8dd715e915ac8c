"""Engine set-up for both backends.

SQLite: WAL journal (readers never block the writer), foreign keys on, a busy timeout, and write transactions opened
with ``BEGIN IMMEDIATE``. A deferred transaction that reads and then writes can fail at once with SQLITE_BUSY when
another connection committed in between (the busy handler does not retry a lock upgrade); taking the write lock up
front turns that into an ordinary wait.

PostgreSQL: no wait for the server is unbounded on the request path. A server that is down refuses at once; one that
is unreachable, or accepts and never answers (a partition behind a proxy, a hung server), would otherwise hold a request
thread forever — psycopg has no client-side statement timeout, and the kernel acknowledges what a silent proxy or a
stopped server receives, so TCP keepalives cannot notice. So:

- connecting gives up after ``CONNECT_TIMEOUT_SECONDS`` (libpq ``connect_timeout``), and for as long again after a
  failed attempt requests fail at once rather than each waiting for an attempt of its own;
- inside ``answering_within(seconds)`` (the API guard wraps every call in it) every round trip — the pool's pre-ping,
  a statement, a commit — is cut after ``seconds`` without an answer: a watchdog shuts the socket down, psycopg raises
  ``OperationalError``, SQLAlchemy invalidates the pool, and the next checkout connects afresh (recovery needs no
  restart). Background work (retention, migrations, the CLI) runs without that budget: a full scan there may take
  minutes, and TCP keepalives (``_KEEPALIVES``) still end its wait on a peer that is gone.

A cut write transaction is rolled back by the server (it never saw COMMIT), or, when the cut hit the COMMIT itself,
may have committed: the caller gets UNAVAILABLE either way and retries with its request id (creates, purchases and
consents are idempotent), so nothing is half written or written twice.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy import Connection, Dialect, Engine, LargeBinary, Select, Table, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from vault.observability import tracing

_WRITE = "piivault_write"
# SQLite's page cache of each writer connection (two per process); readers keep SQLite's default 2 MiB. Inserts land
# all over the blind index and the purchase indexes, and with the default an import of 20,000 customers re-read pages
# it had just written: 32 MiB measured 4-12% more rows/s (two interleaved runs each, all figures in one direction).
WRITER_CACHE_KIB = 32 * 1024
_AUTOCOMMIT = "piivault_autocommit"
_BUSY_TIMEOUT_MS = 30_000
_WRITE_LOCK_TIMEOUT_SECONDS = 30.0
# How long a request waits for one answer from PostgreSQL (a statement, a commit, a ping). Request-path statements are
# small — one customer, one page, one group commit of at most 128 requests — and take milliseconds; one that needs
# seconds means a database in trouble, and UNAVAILABLE is the answer the caller can act on.
REQUEST_ANSWER_SECONDS = 3.0
# libpq's minimum; a connection on a LAN takes milliseconds, and one that is refused fails at once anyway.
CONNECT_TIMEOUT_SECONDS = 2
# libpq's defaults leave keepalives to the kernel (first probe after 2 hours): a peer that vanished is noticed after
# about 20 s instead (10 s idle, then 3 unanswered probes 3 s apart), without limiting how long a statement may run.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3}

_answer_budget: ContextVar[float | None] = ContextVar("piivault_answer_budget", default=None)


@contextmanager
def answering_within(seconds: float) -> Iterator[None]:
    """Bound every wait for a PostgreSQL answer made in this context (this thread's calls) to ``seconds``."""
    token = _answer_budget.set(seconds)
    try:
        yield
    finally:
        _answer_budget.reset(token)


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class Database:
    """The engine plus the two ways the services use it: ``read()`` and ``write()`` transactions.

    On SQLite, writers inside one process queue on a lock before asking SQLite for its write lock, and they use their
    own small pool of connections whose busy timeout is zero: SQLite's busy handler waits by sleeping with back-off
    (up to 100 ms), which measured as p99 latencies above a second under contention, so the write lock is instead
    polled every 0.2 ms (``_begin_immediate``). Reads on SQLite run without BEGIN: a single SELECT is atomic, and an
    explicit transaction per read measured as a fifth of a read's cost.
    """

    def __init__(self, engine: Engine, write_engine: Engine | None = None) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_engine = write_engine or engine
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._checkpointer: _Checkpointer | None = None

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 20, sqlite_synchronous: str = "NORMAL") -> Database:
        engine = make_engine(url, pool_size=pool_size, sqlite_synchronous=sqlite_synchronous)
        if engine.dialect.name != "sqlite":
            return cls(engine)
        writer = _sqlite_engine(
            normalize_url(url), 2, sqlite_synchronous, busy_timeout_ms=0, cache_kib=WRITER_CACHE_KIB
        )
        database = cls(engine, writer)
        database._checkpointer = _Checkpointer(writer)
        return database

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write: on SQLite it holds the write lock from its first statement.

        On the request path, waiting for SQLite's write lock (held by another thread or process) ends with the
        caller's answer budget, as a PostgreSQL statement does: ``OperationalError``, which callers answer with
        UNAVAILABLE."""
        with self._write_turn() as deadline, self._write_engine.connect() as connection:
            connection = connection.execution_options(**{_WRITE: deadline})
            with connection.begin():
                yield connection

    @contextmanager
    def _write_turn(self) -> Iterator[float]:
        """This process's turn to write (on SQLite, its in-process lock), and the ``time.monotonic()`` deadline for
        SQLite's write lock: one budget for both waits, this process's and then SQLite's."""
        deadline = time.monotonic() + _lock_wait_seconds()
        lock = self._write_lock
        if lock is not None and not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _still_locked()
        try:
            yield deadline
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def write_driver(self) -> Iterator[DriverTransaction]:
        """``write()`` on the driver's own connection, without SQLAlchemy's connection, transaction and event machinery,
        for the few fixed statements of an audit-only commit (every read's): that machinery measured as more than a
        third of such a commit's cost. Same pool, same lock, same deadline; a driver error comes out as SQLAlchemy's
        ``OperationalError`` naming the step that failed (no parameters attached), and a connection it left broken is
        discarded rather than pooled."""
        with self._write_turn() as deadline:
            pooled = _checkout(self._write_engine)
            driver: Any = pooled.driver_connection
            dialect = self._write_engine.dialect
            driver_error: type[Exception] = dialect.loaded_dbapi.Error
            step = "BEGIN IMMEDIATE"
            try:
                if self.is_sqlite:
                    _begin_immediate(lambda: driver.execute("BEGIN IMMEDIATE"), deadline)
                step = "the transaction's statements"
                yield DriverTransaction(driver, dialect.name, driver_error)
                step = "COMMIT"
                driver.commit()
            except driver_error as error:
                _roll_back_quietly(driver, driver_error)
                _discard_if_broken(pooled, dialect, error)
                raise OperationalError(step, None, error) from None
            except BaseException:
                _roll_back_quietly(driver, driver_error)
                _discard_if_broken(pooled, dialect, None)
                raise
            finally:
                pooled.close()

    @contextmanager
    def read_driver(self) -> Iterator[DriverReader]:
        """``read()`` on the driver's own connection, for fixed point lookups (``DriverQuery``) on the hottest paths
        (GetCustomer, FindCustomers): SQLAlchemy's connection and statement machinery measured as four fifths of such
        a lookup's cost. A driver error comes out as SQLAlchemy's (without parameters); a broken connection is
        discarded, not pooled."""
        pooled = _checkout(self.engine)
        dialect = self.engine.dialect
        driver_error: type[Exception] = dialect.loaded_dbapi.Error
        try:
            yield DriverReader(pooled.driver_connection, dialect)
        except driver_error as error:
            _discard_if_broken(pooled, dialect, error)
            raise DBAPIError.instance(None, None, error, driver_error, hide_parameters=True, dialect=dialect) from None
        finally:
            pooled.close()  # the pool's reset ends PostgreSQL's implicit read transaction

    @contextmanager
    def read(self) -> Iterator[Connection]:
        options = {_AUTOCOMMIT: True} if self.is_sqlite else {}
        with self.engine.connect() as connection:
            connection = connection.execution_options(**options)
            with connection.begin():
                yield connection

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction whose statements all see one consistent state (BEGIN on SQLite's WAL; REPEATABLE READ
        on PostgreSQL), for readers that compare several rows written by others meanwhile (chain verification)."""
        with self.engine.connect() as connection:
            if not self.is_sqlite:
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        self._write_engine.dispose()


def placeholder(dialect: str) -> str:
    """The driver's own parameter placeholder (sqlite3: ``?``; psycopg: ``%s``)."""
    return "?" if dialect == "sqlite" else "%s"


@dataclass(frozen=True)
class DriverTransaction:
    """A write transaction on the driver's own connection (sqlite3's or psycopg's), for hot paths that run a few
    fixed statements through the driver's cursor."""

    connection: Any
    dialect: str  # "sqlite" or "postgresql"
    error: type[Exception]  # the driver's base error class

    @classmethod
    def of(cls, connection: Connection) -> DriverTransaction:
        """The driver's side of a SQLAlchemy connection already in a transaction (same transaction)."""
        driver = connection.connection.driver_connection
        return cls(driver, connection.dialect.name, connection.dialect.loaded_dbapi.Error)


@dataclass(frozen=True)
class DriverReader:
    connection: Any  # the driver's connection: sqlite3's (autocommit) or psycopg's
    dialect: Dialect


@dataclass(frozen=True)
class _Prepared:
    sql: str
    positions: tuple[str, ...] | None  # parameter names in order, for positional drivers (sqlite3)
    processors: tuple[Callable[[Any], Any] | None, ...]
    record: Callable[..., Any]


class DriverQuery:
    """A fixed SELECT compiled once per dialect and run on the driver's cursor, its values converted by the columns'
    own SQLAlchemy types (so a row reads exactly as SQLAlchemy would return it: timezone-aware datetimes, booleans).
    Rows are named tuples with the selected columns' names."""

    def __init__(self, statement: Select[Any], name: str) -> None:
        self._statement = statement
        self._name = name
        self._prepared: dict[str, _Prepared] = {}

    def _prepare(self, dialect: Dialect) -> _Prepared:
        prepared = self._prepared.get(dialect.name)
        if prepared is None:
            compiled = self._statement.compile(dialect=dialect)
            # Only the simple statements this is for: every parameter bound at execution under its own name. A bound
            # constant, an expanding IN or an escaped name would need SQLAlchemy's own parameter processing.
            simple = "POSTCOMPILE" not in compiled.string and not compiled.escaped_bind_names
            if not simple or any(bind.value is not None or bind.callable for bind in compiled.binds.values()):
                raise ValueError(f"DriverQuery {self._name}: the statement needs SQLAlchemy's parameter processing")
            columns = list(self._statement.selected_columns)
            prepared = _Prepared(
                compiled.string,
                tuple(compiled.positiontup or ()) if compiled.positional else None,
                tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns),
                namedtuple(self._name, [column.name for column in columns]),
            )
            self._prepared[dialect.name] = prepared
        return prepared

    def first(self, reader: DriverReader, parameters: dict[str, Any]) -> Any | None:
        prepared = self._prepare(reader.dialect)
        bound: Any = parameters if prepared.positions is None else [parameters[name] for name in prepared.positions]
        if tracing.active():  # the span SQLAlchemy's statements get (vault.observability.tracing)
            with tracing.statement_span(reader.dialect.name, prepared.sql):
                values = reader.connection.execute(prepared.sql, bound).fetchone()
        else:
            values = reader.connection.execute(prepared.sql, bound).fetchone()
        if values is None:
            return None
        pairs = zip(values, prepared.processors, strict=True)
        return prepared.record(*(value if process is None else process(value) for value, process in pairs))


@dataclass(frozen=True)
class _PreparedInsert:
    sql: str
    processors: tuple[Callable[[Any], Any] | None, ...]  # one per column, in the statement's order
    keys: tuple[str, ...]  # the columns, in the statement's order

    def values(self, rows: Sequence[dict[str, Any]]) -> list[Sequence[Any]]:
        """Each row's values in the statement's order, converted where the column's type says so. The values are
        picked in one C call per row and only the few converted columns (times) are touched one by one: a Python
        step per value measured as a sixth of an imported purchase row's cost."""
        pick = itemgetter(*self.keys)
        convert = [(i, process) for i, process in enumerate(self.processors) if process is not None]
        if len(self.keys) > 1 and not convert:
            return [pick(row) for row in rows]
        picked: list[Sequence[Any]] = []
        for row in rows:
            values = [pick(row)] if len(self.keys) == 1 else list(pick(row))
            for i, process in convert:
                values[i] = process(values[i])
            picked.append(values)
        return picked


class DriverInsert:
    """An INSERT of whole rows into one table, built once per dialect and column set and run as the driver's
    ``executemany``, the values converted by the columns' own SQLAlchemy types. For the group commit's merged inserts
    (every create, purchase and imported row), where SQLAlchemy's per-row parameter processing measured as about a
    fifth of an imported customer's cost. A driver error comes out as SQLAlchemy's (an ``IntegrityError`` for a taken
    key), without parameters.

    Binary columns are passed as they are: both drivers bind ``bytes`` as a blob or bytea natively, and SQLAlchemy's
    processor for them only wraps each value in ``sqlite3.Binary``, a per-value call on the ciphertext columns."""

    def __init__(self, table: Table) -> None:
        # SQLAlchemy fills Python-side defaults into an insert; this path would not (server defaults still apply).
        with_defaults = [column.name for column in table.columns if column.default is not None]
        if with_defaults:
            raise ValueError(f"DriverInsert does not apply Python-side column defaults ({table.name}: {with_defaults})")
        self._table = table
        self._prepared: dict[tuple[str, tuple[str, ...]], _PreparedInsert] = {}

    def _prepare(self, dialect: Dialect, keys: tuple[str, ...]) -> _PreparedInsert:
        prepared = self._prepared.get((dialect.name, keys))
        if prepared is None:
            quote = dialect.identifier_preparer
            columns = [self._table.c[key] for key in keys]
            mark = placeholder(dialect.name)
            # Every interpolated piece is a table or column name of the schema, quoted by the dialect; never input.
            sql = (
                f"INSERT INTO {quote.format_table(self._table)} "  # noqa: S608
                f"({', '.join(quote.format_column(column) for column in columns)}) "
                f"VALUES ({', '.join([mark] * len(columns))})"
            )
            processors = tuple(
                None
                if isinstance(column.type, LargeBinary)
                else column.type.dialect_impl(dialect).bind_processor(dialect)
                for column in columns
            )
            prepared = _PreparedInsert(sql, processors, keys)
            self._prepared[(dialect.name, keys)] = prepared
        return prepared

    def execute(self, transaction: DriverTransaction, dialect: Dialect, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` (dicts of column values; rows naming other columns go in a statement of their own)."""
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_keys.setdefault(tuple(row), []).append(row)
        for keys, group in by_keys.items():
            prepared = self._prepare(dialect, keys)
            values = prepared.values(group)
            try:
                with (
                    tracing.statement_span(dialect.name, prepared.sql),
                    closing(transaction.connection.cursor()) as cursor,
                ):
                    cursor.executemany(prepared.sql, values)
            except transaction.error as error:
                raise DBAPIError.instance(
                    None, None, error, transaction.error, hide_parameters=True, dialect=dialect
                ) from None


def _checkout(engine: Engine) -> PoolProxiedConnection:
    """``engine.raw_connection()``, with a driver error while connecting (the database down, the pool's pre-ping
    failing) raised as SQLAlchemy's, as ``engine.connect()`` raises it: callers answer it with UNAVAILABLE."""
    dialect = engine.dialect
    driver_error: type[Exception] = dialect.loaded_dbapi.Error
    try:
        return engine.raw_connection()
    except driver_error as error:
        raise DBAPIError.instance(None, None, error, driver_error, hide_parameters=True, dialect=dialect) from None


def _discard_if_broken(pooled: PoolProxiedConnection, dialect: Dialect, error: Exception | None) -> None:
    """Invalidate a pooled driver connection that an error left unusable (a cut socket, a lost server), so that it is
    not handed out again; a healthy one (a lock timeout, a constraint) goes back to the pool."""
    driver = pooled.driver_connection
    broken = bool(getattr(driver, "broken", False))  # psycopg's own flag: the connection to the server is lost
    if not broken and error is not None:
        broken = dialect.is_disconnect(error, driver, None)  # type: ignore[arg-type]
    if broken:
        pooled.invalidate()


def _roll_back_quietly(driver: Any, driver_error: type[Exception]) -> None:
    with suppress(driver_error):
        driver.rollback()


def make_engine(url: str, *, pool_size: int = 20, sqlite_synchronous: str = "NORMAL") -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, pool_size, sqlite_synchronous)
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=5)
    failed_at = float("-inf")

    @event.listens_for(engine, "do_connect")
    def _on_connect(dialect: Any, record: ConnectionPoolEntry, cargs: Any, cparams: dict[str, Any]) -> Any:
        nonlocal failed_at
        # Within CONNECT_TIMEOUT_SECONDS of a failed attempt, a request does not try again: during an outage each call
        # would otherwise wait out a connection timeout of its own (and one more to audit its failure). An attempt
        # per interval still finds the database when it is back; background work always tries.
        if _answer_budget.get() is not None and time.monotonic() - failed_at < CONNECT_TIMEOUT_SECONDS:
            raise psycopg.OperationalError("the database could not be reached a moment ago")
        # Values given in the URL (``?connect_timeout=10``) win over ours.
        cparams.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        for name, value in _KEEPALIVES.items():
            cparams.setdefault(name, value)
        try:
            return _BoundedConnection.connect(*cargs, **cparams)
        except psycopg.OperationalError:
            failed_at = time.monotonic()
            raise

    return engine


def _sqlite_engine(
    url: str, pool_size: int, synchronous: str, busy_timeout_ms: int = _BUSY_TIMEOUT_MS, cache_kib: int = 0
) -> Engine:
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=30, connect_args={"check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        # Checkpoints run on a background thread (``_Checkpointer``), not inside a caller's commit: an automatic
        # checkpoint every 1000 pages measured as 40% of a small transaction's average cost.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # Deleted ciphertexts are overwritten, so erased data does not linger in free pages of the file.
        cursor.execute("PRAGMA secure_delete=ON")
        if cache_kib:
            cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(_WRITE):
            # On the driver's connection: while another process holds the lock every poll fails, and SQLAlchemy
            # wrapping each failure in its own exception measured as 0.13 ms of CPU a poll.
            driver = connection.connection.driver_connection
            assert driver is not None
            try:
                _begin_immediate(lambda: driver.execute("BEGIN IMMEDIATE"), options[_WRITE])
            except sqlite3.Error as error:  # as SQLAlchemy would have raised it: callers answer it with UNAVAILABLE
                raise DBAPIError.instance(
                    "BEGIN IMMEDIATE", None, error, sqlite3.Error, hide_parameters=True, dialect=connection.dialect
                ) from None
        elif not options.get(_AUTOCOMMIT, False):
            connection.exec_driver_sql("BEGIN")

    return engine


def _lock_wait_seconds() -> float:
    """How long a writer waits for SQLite's write lock: the caller's answer budget on the request path."""
    budget = _answer_budget.get()
    return _WRITE_LOCK_TIMEOUT_SECONDS if budget is None else min(budget, _WRITE_LOCK_TIMEOUT_SECONDS)


def _still_locked() -> OperationalError:
    return OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))


def _begin_immediate(begin: Callable[[], object], deadline: float) -> None:
    """Take SQLite's write lock (``begin`` runs BEGIN IMMEDIATE), polling every 0.2 ms while another process holds it
    (see ``Database``), until the ``time.monotonic()`` deadline."""
    while True:
        try:
            begin()
            return
        except (OperationalError, sqlite3.OperationalError) as error:
            cause = error.orig if isinstance(error, OperationalError) else error
            if "locked" not in str(cause) or time.monotonic() > deadline:
                raise
            time.sleep(0.0002)


class _Checkpointer:
    """Copies the SQLite WAL back into the database file every second, off the request path.

    PASSIVE checkpoints never block readers or writers; a TRUNCATE checkpoint at shutdown leaves an empty WAL.
    """

    def __init__(self, engine: Engine, interval_seconds: float = 1.0) -> None:
        self._engine = engine
        self._interval = interval_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._checkpoint("PASSIVE")

    def _checkpoint(self, mode: str) -> None:
        # Busy or closing: the next round (or the next start) checkpoints instead.
        with suppress(OperationalError), self._engine.connect() as connection:
            connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)
        self._checkpoint("TRUNCATE")


class _Watchdog:
    """Shuts down the socket of a PostgreSQL connection whose answer is overdue (see the module docstring).

    One daemon thread for the process, started on first use; arming and disarming a wait costs a lock and a heap push.
    The socket is shut down, not closed: psycopg still owns the descriptor and closes it when SQLAlchemy discards the
    connection. A wait is cut only while it is armed, under the lock its owner disarms it with, so a descriptor that
    was closed and reused meanwhile is never touched.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deadlines: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # ticket -> socket descriptor
        self._tickets = itertools.count()
        self._thread: threading.Thread | None = None
        self.cuts = 0

    def arm(self, descriptor: int, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        with self._lock:
            ticket = next(self._tickets)
            self._armed[ticket] = descriptor
            heapq.heappush(self._deadlines, (deadline, ticket))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pg-answer-watchdog", daemon=True)
                self._thread.start()
            elif self._deadlines[0][1] == ticket:
                self._lock.notify()
        return ticket

    def disarm(self, ticket: int) -> None:
        with self._lock:
            self._armed.pop(ticket, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                if not self._deadlines:
                    self._lock.wait()
                    continue
                deadline, ticket = self._deadlines[0]
                if ticket not in self._armed:
                    heapq.heappop(self._deadlines)
                    continue
                left = deadline - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                heapq.heappop(self._deadlines)
                descriptor = self._armed.pop(ticket)
                self.cuts += 1
                # fromfd works on a duplicate (closed on leaving), so psycopg's own descriptor stays open; shutdown
                # acts on the connection behind both, whatever its family (TCP or a Unix socket).
                with suppress(OSError), socket.fromfd(descriptor, socket.AF_INET, socket.SOCK_STREAM) as cut:
                    cut.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


class _BoundedConnection(psycopg.Connection[tuple[Any, ...]]):
    """A psycopg connection whose waits for the server end within the caller's answer budget, if it has one.

    ``wait`` is where psycopg blocks for every exchange with the server (statements, fetches, commit, rollback,
    pipeline syncs); connecting has its own timeout.
    """

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        budget = _answer_budget.get()
        if budget is None or self.closed:
            return super().wait(*args, **kwargs)
        ticket = _WATCHDOG.arm(self.pgconn.socket, budget)
        try:
            return super().wait(*args, **kwargs)
        finally:
            _WATCHDOG.disarm(ticket)
