"""``PiiVault.audit``: AuditService (roles ``auditor`` and ``admin``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from piivault.client._calls import CallSettings, ResponseStream, unary
from piivault.v1 import audit_pb2 as pb
from piivault.v1 import audit_pb2_grpc as pb_grpc


class Audit:
    """Query and verify the tamper-evident audit log. Every method is retried on UNAVAILABLE: queries and
    verification only read, and a repeated ``get_checkpoint`` merely signs the chain head once more. A query stream is
    retried only before its first response (after that the caller has part of the answer; resume with the page token).
    ``verify_chain`` recomputes the whole chain, so it gets the long ``stream_timeout`` by default.
    """

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.AuditServiceStub(channel)

    def query_events(
        self,
        *,
        customer_id: str = "",
        principal: str = "",
        action: str = "",
        outcome: str = "",
        start_time: dt.datetime | None = None,
        end_time: dt.datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> ResponseStream[pb.QueryEventsResponse]:
        """Events matching every filter given, oldest first, in chunks; the last chunk may carry ``next_page_token``
        (``page_size`` caps the events of one call: 0 means the default of 1000, at most 100000)."""
        request = pb.QueryEventsRequest(
            customer_id=customer_id,
            principal=principal,
            action=action,
            outcome=outcome,
            page_size=page_size,
            page_token=page_token,
        )
        if start_time is not None:
            request.start_time.CopyFrom(_timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(_timestamp(end_time))
        return ResponseStream(
            self._settings, self._stub.QueryEvents, request, request_id=request_id, idempotent=True, timeout=timeout
        )

    def events(
        self,
        *,
        customer_id: str = "",
        principal: str = "",
        action: str = "",
        outcome: str = "",
        start_time: dt.datetime | None = None,
        end_time: dt.datetime | None = None,
        page_size: int = 1000,
        timeout: float | None = None,
    ) -> Iterator[pb.AuditEvent]:
        """Every matching event, following page tokens (each page is one call with its own deadline)."""
        token = ""
        while True:
            last = ""
            for chunk in self.query_events(
                customer_id=customer_id,
                principal=principal,
                action=action,
                outcome=outcome,
                start_time=start_time,
                end_time=end_time,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            ):
                yield from chunk.events
                last = chunk.next_page_token or last
            if not last:
                return
            token = last

    def verify_chain(
        self,
        trusted_checkpoints: Sequence[pb.Checkpoint] = (),
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.VerifyChainResponse:
        """Recompute the whole chain; ``intact`` is true only when every event, the head and every checkpoint the
        auditor kept verify, else ``first_bad_seq`` and ``problem`` say where and what."""
        request = pb.VerifyChainRequest(trusted_checkpoints=list(trusted_checkpoints))
        return unary(
            self._settings,
            self._stub.VerifyChain,
            request,
            request_id=request_id,
            idempotent=True,
            timeout=self._settings.stream_timeout if timeout is None else timeout,
        )

    def get_checkpoint(
        self, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.GetCheckpointResponse:
        """Sign the current chain head; keep the checkpoint outside the vault."""
        return unary(
            self._settings,
            self._stub.GetCheckpoint,
            pb.GetCheckpointRequest(),
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )


def _timestamp(when: dt.datetime) -> Timestamp:
    if when.tzinfo is None:
        raise ValueError("audit query times must be timezone-aware (events are stored in UTC)")
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(dt.UTC))
    return stamp
