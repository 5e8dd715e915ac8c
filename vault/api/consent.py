"""ConsentService servicer: convert, call the consent service once, convert back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import grpc

from consent.models import (
    Channel,
    ConsentAction,
    ConsentRecord,
    ConsentRequest,
    ConsentScope,
    ConsentState,
    ConsentStatus,
    GivenBy,
)
from consent.service import ConsentService
from piivault.v1 import consent_pb2 as pb
from piivault.v1 import consent_pb2_grpc as pb_grpc
from vault.api.context import current_caller
from vault.api.convert import timestamp
from vault.errors import InvalidArgument

T = TypeVar("T")
_SCOPES = {pb.CONSENT_SCOPE_STANDARD: ConsentScope.STANDARD, pb.CONSENT_SCOPE_SENSITIVE: ConsentScope.SENSITIVE}
_GIVEN_BY = {
    pb.GIVEN_BY_UNSPECIFIED: GivenBy.SUBJECT,
    pb.GIVEN_BY_SUBJECT: GivenBy.SUBJECT,
    pb.GIVEN_BY_GUARDIAN: GivenBy.GUARDIAN,
}
_CHANNELS = {
    pb.CONSENT_CHANNEL_POS: Channel.POS,
    pb.CONSENT_CHANNEL_WEB: Channel.WEB,
    pb.CONSENT_CHANNEL_MINI_PROGRAM: Channel.MINI_PROGRAM,
    pb.CONSENT_CHANNEL_APP: Channel.APP,
    pb.CONSENT_CHANNEL_CALL_CENTRE: Channel.CALL_CENTRE,
    pb.CONSENT_CHANNEL_PAPER: Channel.PAPER,
}
_SCOPES_TO_PB = {scope: number for number, scope in _SCOPES.items()}
_GIVEN_BY_TO_PB = {GivenBy.SUBJECT: pb.GIVEN_BY_SUBJECT, GivenBy.GUARDIAN: pb.GIVEN_BY_GUARDIAN}
_CHANNELS_TO_PB = {channel: number for number, channel in _CHANNELS.items()} | {
    Channel.SYSTEM: pb.CONSENT_CHANNEL_SYSTEM
}
_ACTIONS_TO_PB = {ConsentAction.GRANT: pb.CONSENT_ACTION_GRANT, ConsentAction.WITHDRAW: pb.CONSENT_ACTION_WITHDRAW}
_STATES_TO_PB = {
    ConsentState.GRANTED: pb.CONSENT_STATE_GRANTED,
    ConsentState.WITHDRAWN: pb.CONSENT_STATE_WITHDRAWN,
    ConsentState.NOT_GIVEN: pb.CONSENT_STATE_NOT_GIVEN,
}


def _enum(table: Mapping[Any, T], value: int, field: str, rule: str) -> T:
    found = table.get(value)
    if found is None:
        raise InvalidArgument.single(field, rule)
    return found


class ConsentServicer(pb_grpc.ConsentServiceServicer):
    def __init__(self, consents: ConsentService) -> None:
        self._consents = consents

    def GrantConsent(self, request: pb.GrantConsentRequest, context: grpc.ServicerContext) -> pb.GrantConsentResponse:
        grant = ConsentRequest(
            purpose=request.purpose,
            scope=_enum(_SCOPES, request.scope, "scope", "must be CONSENT_SCOPE_STANDARD or CONSENT_SCOPE_SENSITIVE"),
            channel=_enum(_CHANNELS, request.channel, "channel", "must be one of the ConsentChannel values"),
            given_by=_enum(_GIVEN_BY, request.given_by, "given_by", "must be one of the GivenBy values"),
            notice_version=request.notice_version,
            notice_sha256=request.notice_sha256,
            evidence_ref=request.evidence_ref,
        )
        record = self._consents.grant(current_caller.get(), request.customer_id, grant, request.request_id)
        return pb.GrantConsentResponse(record=record_to_pb(record))

    def WithdrawConsent(
        self, request: pb.WithdrawConsentRequest, context: grpc.ServicerContext
    ) -> pb.WithdrawConsentResponse:
        all_scopes = request.scope == pb.CONSENT_SCOPE_UNSPECIFIED
        withdrawal = ConsentRequest(
            purpose=request.purpose,
            scope=ConsentScope.STANDARD
            if all_scopes
            else _enum(_SCOPES, request.scope, "scope", "must be one of the ConsentScope values"),
            channel=_enum(_CHANNELS, request.channel, "channel", "must be one of the ConsentChannel values"),
            evidence_ref=request.evidence_ref,
        )
        records = self._consents.withdraw(
            current_caller.get(), request.customer_id, withdrawal, request.request_id, all_scopes=all_scopes
        )
        return pb.WithdrawConsentResponse(records=[record_to_pb(record) for record in records])

    def ListConsents(self, request: pb.ListConsentsRequest, context: grpc.ServicerContext) -> pb.ListConsentsResponse:
        statuses = self._consents.current(current_caller.get(), request.customer_id)
        return pb.ListConsentsResponse(consents=[status_to_pb(status) for status in statuses])

    def GetConsentHistory(
        self, request: pb.GetConsentHistoryRequest, context: grpc.ServicerContext
    ) -> pb.GetConsentHistoryResponse:
        page = self._consents.history(
            current_caller.get(), request.customer_id, request.purpose, request.page_size, request.page_token
        )
        return pb.GetConsentHistoryResponse(
            records=[record_to_pb(record) for record in page.records], next_page_token=page.next_page_token
        )


def record_to_pb(record: ConsentRecord) -> pb.ConsentRecord:
    return pb.ConsentRecord(
        record_id=record.record_id,
        customer_id=record.customer_id,
        revision=record.revision,
        purpose=record.purpose,
        scope=_SCOPES_TO_PB[record.scope],
        action=_ACTIONS_TO_PB[record.action],
        given_by=_GIVEN_BY_TO_PB[record.given_by],
        notice_version=record.notice_version,
        notice_sha256=record.notice_sha256.hex() if record.notice_sha256 else "",
        channel=_CHANNELS_TO_PB[record.channel],
        actor=record.actor,
        actor_role=record.actor_role,
        evidence_ref=record.evidence_ref,
        record_time=timestamp(record.record_time),
    )


def status_to_pb(status: ConsentStatus) -> pb.ConsentStatus:
    message = pb.ConsentStatus(
        purpose=status.purpose,
        scope=_SCOPES_TO_PB[status.scope],
        state=_STATES_TO_PB[status.state],
        given_by=_GIVEN_BY_TO_PB[status.given_by] if status.given_by else pb.GIVEN_BY_UNSPECIFIED,
        revision=status.revision,
    )
    if status.update_time is not None:
        message.update_time.CopyFrom(timestamp(status.update_time))
    return message
