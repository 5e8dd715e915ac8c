"""AuditService servicer: query events (streamed pages), verify the chain, hand out signed checkpoints."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from audit.events import AuditDraft, AuditEvent, is_customer_id
from audit.log import AuditLog
from audit.queries import AuditQueries, EventFilter
from audit.verify import ChainVerifier, Checkpoint
from piivault.v1 import audit_pb2 as pb
from piivault.v1 import audit_pb2_grpc as pb_grpc
from vault.api.context import current_caller
from vault.errors import InvalidArgument

DEFAULT_PAGE = 1000
MAX_PAGE = 100_000
_TOKEN_PREFIX = "a1:"  # noqa: S105 - a page-token format version, not a secret


def _timestamp_us(value: Timestamp, present: bool) -> int:
    return value.seconds * 1_000_000 + value.nanos // 1000 if present else 0


def event_to_pb(event: AuditEvent) -> pb.AuditEvent:
    when = Timestamp()
    when.FromDatetime(dt.datetime.fromtimestamp(event.time_us / 1_000_000, dt.UTC))
    return pb.AuditEvent(
        seq=event.seq,
        event_time=when,
        principal=event.principal,
        role=event.role,
        action=event.action,
        customer_ids=list(event.customer_ids),
        fields=list(event.fields),
        purpose=event.purpose,
        outcome=event.outcome,
        request_id=event.request_id,
        peer=event.peer,
        mac=event.mac,
    )


def _checkpoint_to_pb(checkpoint: Checkpoint) -> pb.Checkpoint:
    return pb.Checkpoint(
        seq=checkpoint.seq,
        head_mac=checkpoint.head_mac,
        time_us=checkpoint.time_us,
        public_key=checkpoint.public_key,
        signature=checkpoint.signature,
    )


def _decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        if text.startswith(_TOKEN_PREFIX) and text[len(_TOKEN_PREFIX) :].isdigit():
            return int(text[len(_TOKEN_PREFIX) :])
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidArgument.single("page_token", "must be a next_page_token returned by QueryEvents")


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, queries: AuditQueries, verifier: ChainVerifier, log: AuditLog) -> None:
        self._queries = queries
        self._verifier = verifier
        self._log = log

    def QueryEvents(
        self, request: pb.QueryEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.QueryEventsResponse]:
        if request.page_size < 0:
            raise InvalidArgument.single("page_size", "must not be negative")
        if request.customer_id and not is_customer_id(request.customer_id):
            raise InvalidArgument.single("customer_id", "must be a customer id as returned by CreateCustomer")
        limit = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        where = EventFilter(
            customer_id=request.customer_id,
            principal=request.principal,
            action=request.action,
            outcome=request.outcome,
            start_us=_timestamp_us(request.start_time, request.HasField("start_time")),
            end_us=_timestamp_us(request.end_time, request.HasField("end_time")),
        )
        after = _decode_token(request.page_token)
        subjects = (request.customer_id,) if request.customer_id else ()
        self._log.record(AuditDraft.of(current_caller.get(), "ok", subjects))  # reading the log is audited too
        taken = 0
        held: list[AuditEvent] | None = None
        more = False
        for chunk in self._queries.events(where, after, limit + 1):
            if taken + len(chunk) > limit:
                chunk = chunk[: limit - taken]
                more = True
            taken += len(chunk)
            if held is not None:
                yield pb.QueryEventsResponse(events=[event_to_pb(e) for e in held])
            held = chunk
            if more:
                break
        last = held or []
        token = base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{last[-1].seq}".encode()).decode() if more and last else ""
        yield pb.QueryEventsResponse(events=[event_to_pb(e) for e in last], next_page_token=token)

    def VerifyChain(self, request: pb.VerifyChainRequest, context: grpc.ServicerContext) -> pb.VerifyChainResponse:
        trusted = [
            Checkpoint(c.seq, c.head_mac, c.time_us, c.public_key, c.signature) for c in request.trusted_checkpoints
        ]
        report = self._verifier.verify(trusted)
        self._log.record(AuditDraft.of(current_caller.get(), "ok" if report.intact else "chain_broken"))
        return pb.VerifyChainResponse(
            intact=report.intact,
            events_checked=report.events_checked,
            head_seq=report.head_seq,
            first_bad_seq=report.first_bad_seq or 0,
            problem=report.problem,
            checkpoints_checked=report.checkpoints_checked,
        )

    def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.GetCheckpointResponse:
        self._log.record(AuditDraft.of(current_caller.get(), "ok"))
        self._log.checkpoint_now()
        checkpoints = self._verifier.checkpoints()
        return pb.GetCheckpointResponse(checkpoint=_checkpoint_to_pb(checkpoints[-1]) if checkpoints else None)
