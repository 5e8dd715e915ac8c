"""The fuzz target's world: a real vault (embedded SQLite in a temporary directory), reached either through the real
gRPC server on a loopback port (``grpc``) or through the very handlers that server runs, called in process with a
stand-in ServicerContext (``direct``: the call guard's lenient decoding, authentication, authorisation, the servicer,
the domain validation and the error mapping, without the transport), plus a token per role and pools of live objects.

The oracle, applied to every call:

- no status in ``FAILURE_CODES`` (``UNKNOWN`` and ``INTERNAL`` above all: an unhandled exception in the server);
- no request value — anything shaped like personal data: digits, '@', non-ASCII text — in the status message or its
  details (``google.rpc.Status``), in a log line the call wrote, or in an audit row the call appended;
- in ``direct`` mode, no exception other than the status the guard aborted with (the target's process would crash).

A failure raises ``FuzzFailure``, whose message names the RPC, the mode and what broke, never the value.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import structlog
from google.protobuf import any_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from audit.events import AuditDraft, clean
from audit.log import AuditLog
from consent.purposes import PurposeRegistry
from tests.fuzz.messages import (
    MODES,
    Built,
    Pool,
    Rpc,
    SeedBuilder,
    decoded_strings,
    discover,
    echo_candidates,
    hostile,
    strings_of,
    vocabulary,
)
from vault import logs
from vault.api.guard import CallGuard
from vault.api.server import start_server
from vault.app import Vault
from vault.auth.policy import ALLOWED_ROLES
from vault.auth.roles import ROLES
from vault.config import Settings
from vault.storage.db import Database, DriverTransaction
from vault.storage.migrate import upgrade

FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNIMPLEMENTED,  # a discovered RPC the server does not serve
        grpc.StatusCode.DEADLINE_EXCEEDED,  # a call that hangs
        grpc.StatusCode.UNAVAILABLE,  # the server died, or the embedded database failed
        grpc.StatusCode.DATA_LOSS,  # nothing a caller sends may make stored ciphertext fail its integrity check
    }
)
CALL_TIMEOUT_SECONDS = 60.0
_DETAILS_KEY = "grpc-status-details-bin"
_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.Help,
    error_details_pb2.QuotaFailure,
    error_details_pb2.DebugInfo,
)


class FuzzFailure(AssertionError):
    """The oracle's verdict on one input."""


@dataclass
class Outcome:
    code: grpc.StatusCode
    message: str = ""
    details: list[str] = field(default_factory=list)  # every text in the google.rpc.Status details
    responses: list[bytes] = field(default_factory=list)


def status_texts(trailing: Iterable[tuple[str, Any]] | None) -> list[str]:
    texts: list[str] = []
    for key, value in trailing or ():
        if key != _DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        texts.append(status.message)
        for detail in status.details:
            texts.extend(_detail_texts(detail))
    return texts


def _detail_texts(detail: any_pb2.Any) -> Iterator[str]:
    for kind in _DETAIL_TYPES:
        descriptor: Any = kind.DESCRIPTOR
        if detail.Is(descriptor):
            message = kind()
            detail.Unpack(message)
            yield from strings_of(message)
            if isinstance(message, error_details_pb2.ErrorInfo):
                yield from message.metadata.keys()
            return
    yield detail.value.decode("utf-8", "replace")  # a detail type this table does not know: search its bytes


class _Aborted(Exception):
    """What the stand-in context raises on abort, as grpc's own context does (the guard's error path)."""


class FakeContext:
    """The ServicerContext methods the guard and the servicers use, recording the status a call aborts with."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.trailing: tuple[tuple[str, Any], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> float:
        return CALL_TIMEOUT_SECONDS

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted()

    def abort_with_status(self, status: grpc.Status) -> None:
        self.trailing = tuple(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: tuple[tuple[str, Any], ...]) -> None:
        self.trailing = tuple(metadata)


class _Recorder:
    """Stands in for ``grpc.server`` while ``start_server`` wires the services: keeps the guard and the handlers."""

    def __init__(self, *args: Any, interceptors: list[Any] | None = None, **kwargs: Any) -> None:
        executor = args[0] if args else kwargs.get("thread_pool")
        if isinstance(executor, futures.Executor):
            executor.shutdown(wait=False)
        self.interceptors = list(interceptors or [])
        self.generic: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        pass  # the generic handlers hold the same methods

    def add_insecure_port(self, address: str) -> int:
        return 1

    def start(self) -> None:
        pass

    def stop(self, grace: float | None) -> Any:
        return mock.Mock()


@dataclass
class _Details:
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class DirectCaller:
    """The guarded handlers ``start_server`` registers, called in process: everything but the HTTP/2 transport."""

    def __init__(self, vault: Vault) -> None:
        with mock.patch("grpc.server", _Recorder):
            running = start_server(vault, "127.0.0.1:0")
        recorder: Any = running.server
        guards = [i for i in recorder.interceptors if isinstance(i, CallGuard)]
        if len(guards) != 1:
            raise RuntimeError("start_server no longer installs exactly one CallGuard")
        self._guard: CallGuard = guards[0]
        self._generic = recorder.generic
        self._handlers: dict[str, Any] = {}

    def _handler(self, path: str) -> Any:
        if path not in self._handlers:

            def continuation(details: Any) -> Any:
                for generic in self._generic:
                    found = generic.service(details)
                    if found is not None:
                        return found
                return None

            self._handlers[path] = self._guard.intercept_service(continuation, _Details(path))
        return self._handlers[path]

    def call(self, rpc: Rpc, payloads: list[bytes], token: str) -> Outcome:
        handler = self._handler(rpc.path)
        if handler is None:
            return Outcome(grpc.StatusCode.UNIMPLEMENTED)
        context = FakeContext((("authorization", f"Bearer {token}"),))
        requests = [handler.request_deserializer(payload) for payload in payloads]
        try:
            if handler.stream_unary is not None:
                produced = [handler.stream_unary(iter(requests), context)]
            elif handler.unary_stream is not None:
                produced = list(handler.unary_stream(requests[0], context))
            else:
                produced = [handler.unary_unary(requests[0], context)]
        except _Aborted:
            return Outcome(context.code, context.details, status_texts(context.trailing))
        return Outcome(grpc.StatusCode.OK, responses=[handler.response_serializer(item) for item in produced])

    def close(self) -> None:
        pass


class GrpcCaller:
    """The real server on a loopback port, called with raw bytes (no client-side serialization)."""

    def __init__(self, vault: Vault) -> None:
        self._running = start_server(vault, "127.0.0.1:0")
        self._channel = grpc.insecure_channel(
            f"127.0.0.1:{self._running.port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )

    def call(self, rpc: Rpc, payloads: list[bytes], token: str) -> Outcome:
        metadata = (("authorization", f"Bearer {token}"),)
        timeout = CALL_TIMEOUT_SECONDS
        channel = self._channel
        try:
            if rpc.client_streaming:
                send_stream = channel.stream_unary(rpc.path, request_serializer=None, response_deserializer=None)
                responses = [send_stream(iter(payloads), metadata=metadata, timeout=timeout)]
            elif rpc.server_streaming:
                stream = channel.unary_stream(rpc.path, request_serializer=None, response_deserializer=None)
                responses = list(stream(payloads[0], metadata=metadata, timeout=timeout))
            else:
                unary = channel.unary_unary(rpc.path, request_serializer=None, response_deserializer=None)
                responses = [unary(payloads[0], metadata=metadata, timeout=timeout)]
        except grpc.RpcError as error:
            call: Any = error
            return Outcome(call.code(), call.details() or "", status_texts(call.trailing_metadata()))
        return Outcome(grpc.StatusCode.OK, responses=responses)

    def close(self) -> None:
        self._channel.close()
        self._running.stop(grace=1)


class World:
    """Everything one fuzzing process needs; ``one_input`` runs one fuzzer input through one RPC."""

    def __init__(self, workdir: Path, via: str) -> None:
        self.audit_drafts: list[AuditDraft] = []
        self.log = io.StringIO()
        self._restore = _capture(self.log, self.audit_drafts)
        try:
            self._open(workdir, via)
        except BaseException:
            self._restore()  # inside pytest, the rest of the session must not keep this world's hooks
            raise

    def _open(self, workdir: Path, via: str) -> None:
        # A KEK from the environment cannot be rotated: a million inputs would otherwise grow the keyring by tens of
        # thousands of versions (RotateKek takes no input, so rotation itself is not what is fuzzed here).
        settings = Settings(
            data_dir=workdir / "var",
            local_kek=base64.b64encode(secrets.token_bytes(32)).decode(),
            key_settle_seconds=0,
            lookups_per_minute=0,
            lookups_per_day=0,
            find_floor_ms=0,
            analytics_settle_seconds=0,
        )
        database = Database.from_url(f"sqlite:///{workdir / 'piivault.db'}")
        upgrade(database.engine)
        self.database = database
        self.vault = Vault.open(settings, database=database)
        self.tokens = {role: self.vault.tokens.create(f"fuzz-{role}", role).secret for role in ROLES}
        self.rpcs = discover()
        self.by_name = {rpc.name: rpc for rpc in self.rpcs}
        self.roles = {rpc.path: sorted(ALLOWED_ROLES.get(rpc.path, ())) or ["service"] for rpc in self.rpcs}
        registry = PurposeRegistry.default()
        self.pool = Pool(
            purposes={role: sorted(p.name for p in registry if role in p.roles) for role in ROLES},
            consent_purposes=sorted(p.name for p in registry if p.requires_consent),
        )
        self.vocabulary = vocabulary(self.rpcs) | {p.name for p in registry} | set(ROLES)
        self.caller: DirectCaller | GrpcCaller = DirectCaller(self.vault) if via == "direct" else GrpcCaller(self.vault)
        self.outcomes: dict[str, int] = {}
        self.replenish(random.Random(0), customers=6)
        self.audit_drafts.clear()
        self.log.seek(0)
        self.log.truncate()

    def close(self) -> None:
        self.caller.close()
        self.vault.close()
        self.database.dispose()
        self._restore()

    # --- pools ----------------------------------------------------------------------------------------------------

    def replenish(self, rng: random.Random, customers: int = 2) -> None:
        """New live customers (with consents, a purchase and a verified DSAR request): inputs erase and merge them."""
        builder = SeedBuilder(self.pool, lambda low, high: rng.randint(low, high))
        for _ in range(customers):
            message = builder.build(self.by_name["CreateCustomer"], "service")
            created = self._setup_call("CreateCustomer", "service", message)
            customer_id = _find_text(created, "customer_id")
            assert builder.last_person is not None
            self.pool.add_customer(builder.last_person, customer_id)
            for purpose in self.pool.consent_purposes:
                grant = builder.build(self.by_name["GrantConsent"], "service")
                _set(grant, customer_id=customer_id, purpose=purpose)
                self._setup_call("GrantConsent", "service", grant, required=False)
            purchase = builder.build(self.by_name["RecordPurchase"], "service")
            _set(purchase, customer_id=customer_id)
            self._setup_call("RecordPurchase", "service", purchase, required=False)
            # One verified data-subject request of every type, so that each DSAR step finds one it applies to.
            opened = builder.build(self.by_name["OpenRequest"], "dpo")
            kinds: Any = opened.DESCRIPTOR.fields_by_name["type"].enum_type
            for kind in kinds.values[1:]:
                _set(opened, customer_id=customer_id)
                opened.type = kind.number  # type: ignore[attr-defined]
                request_id = _find_text(self._setup_call("OpenRequest", "dpo", opened), "request_id")
                verify = self.by_name["VerifyRequest"].request()
                _set(verify, request_id=request_id)
                self._setup_call("VerifyRequest", "dpo", verify, required=False)
                self.pool.add_dsar(request_id)
        self.audit_drafts.clear()
        self.log.seek(0)
        self.log.truncate()

    def _setup_call(self, name: str, role: str, message: Message, required: bool = True) -> Message:
        rpc = self.by_name[name]
        outcome = self.caller.call(rpc, [message.SerializeToString()], self.tokens[role])
        response = rpc.response()
        if outcome.code == grpc.StatusCode.OK and outcome.responses:
            response.ParseFromString(outcome.responses[0])
        elif required:
            raise RuntimeError(f"setting up the fuzz pools: {name} answered {outcome.code.name}")
        return response

    # --- one input ------------------------------------------------------------------------------------------------

    def one_input(self, choose: Callable[[int, int], int], take: Callable[[int], bytes]) -> None:
        """``choose(low, high)`` and ``take(count)`` read the fuzzer's input (FuzzedDataProvider in the target)."""
        rpc = self.rpcs[choose(0, len(self.rpcs) - 1)]
        roles = self.roles[rpc.path]
        role = roles[choose(0, len(roles) - 1)]
        mode = MODES[choose(0, len(MODES) - 1)]
        count = choose(1, 3) if rpc.client_streaming else 1
        builder = SeedBuilder(self.pool, choose)
        payloads: list[bytes] = []
        values: list[str] = []
        for index in range(count):
            last = index == count - 1
            if mode == "raw":
                payload = take(-1 if last else choose(0, 4096))
                built = Built(payload, decoded_strings(rpc, payload))
            elif mode == "merged":
                payload = builder.build(rpc, role).SerializeToString() + take(-1 if last else choose(0, 1024))
                built = Built(payload, decoded_strings(rpc, payload))
            elif mode == "hostile" and last:
                built = hostile(builder.build(rpc, role), choose)
            else:
                seed = builder.build(rpc, role)
                built = Built(seed.SerializeToString(), list(strings_of(seed)))
            payloads.append(built.payload)
            values.extend(built.values)
        outcome = self.caller.call(rpc, payloads, self.tokens[role])
        key = f"{rpc.name} {outcome.code.name}"
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        self.check(rpc, mode, outcome, echo_candidates(iter(values), self.vocabulary))

    def check(self, rpc: Rpc, mode: str, outcome: Outcome, values: list[str]) -> None:
        where = f"{rpc.path} ({mode})"
        if outcome.code in FAILURE_CODES:
            raise FuzzFailure(f"{where} answered {outcome.code.name}")
        texts = [outcome.message, *outcome.details]
        log_text = self.log.getvalue()
        self.log.seek(0)
        self.log.truncate()
        audit_text = "\x00".join(str(value) for draft in self.audit_drafts for value in astuple(draft))
        self.audit_drafts.clear()
        for value in values:
            if any(value in text for text in texts):
                raise FuzzFailure(f"{where}: a request value came back in the {outcome.code.name} status")
            if value in log_text or json.dumps(value)[1:-1] in log_text:
                raise FuzzFailure(f"{where}: a request value was written to a log line")
            if value in audit_text or clean(value, 64) in audit_text:
                raise FuzzFailure(f"{where}: a request value was written to an audit row")


def _capture(log: io.StringIO, drafts: list[AuditDraft]) -> Callable[[], None]:
    """Send the product's log lines (configured as in production, at debug level) to ``log`` and copy every audit
    event into ``drafts`` (each reaches the chain through ``AuditLog.append``, the group committer's hook).

    Returns what undoes both: a world also runs inside pytest, where the rest of the session must not write into it.
    Loggers are not cached, so no logger keeps writing to a closed world's buffer.
    """
    saved_logging = structlog.get_config()
    _forget_cached_loggers()
    structlog.configure(
        processors=logs.processors(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=log),
        cache_logger_on_first_use=False,
    )
    original = AuditLog.append

    def append(self: AuditLog, transaction: DriverTransaction, items: Sequence[object]) -> None:
        original(self, transaction, items)
        drafts.extend(item for item in items if isinstance(item, AuditDraft))

    AuditLog.append = append  # type: ignore[method-assign]

    def restore() -> None:
        AuditLog.append = original  # type: ignore[method-assign]
        structlog.configure(**saved_logging)

    return restore


def _forget_cached_loggers() -> None:
    """Production caches each module's logger on first use, with the stream and level configured then. A test that
    ran the CLI in process (CliRunner) leaves the call guard's logger pinned to a closed stream at warning level: its
    error line would raise instead of reaching this world's buffer. Forget what the product's loggers cached."""
    proxy = type(structlog.get_logger())
    for module in list(sys.modules.values()):
        if module is None or not module.__name__.startswith(("vault", "consent", "audit")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, proxy) and "bind" in vars(value):
                del value.bind  # the proxy binds afresh from the current configuration


def _find_text(message: Message, name: str) -> str:
    """The first string field called ``name`` in a response, at any depth."""
    for descriptor, value in message.ListFields():
        if descriptor.name == name and descriptor.type == FieldDescriptor.TYPE_STRING:
            return str(value)
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE and not descriptor.is_repeated:
            found = _find_text(value, name)
            if found:
                return found
    return ""


def _set(message: Message, **values: str) -> None:
    for name, value in values.items():
        setattr(message, name, value)
