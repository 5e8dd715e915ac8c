"""DsarService servicer: convert, call the DSAR service once, convert back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from piivault.v1 import dsar_pb2 as pb
from piivault.v1 import dsar_pb2_grpc as pb_grpc
from vault.api.context import current_caller
from vault.api.convert import profile_from_pb, timestamp
from vault.customers.models import IdentifierKind
from vault.dsar.models import DsarRequest, DsarStatus, DsarType, RejectionReason
from vault.dsar.service import DsarService
from vault.errors import InvalidArgument

CHUNK = 64 * 1024
_TYPES = {
    pb.DSAR_TYPE_ACCESS: DsarType.ACCESS,
    pb.DSAR_TYPE_PORTABILITY: DsarType.PORTABILITY,
    pb.DSAR_TYPE_ERASURE: DsarType.ERASURE,
    pb.DSAR_TYPE_RECTIFICATION: DsarType.RECTIFICATION,
    pb.DSAR_TYPE_RESTRICTION: DsarType.RESTRICTION,
}
_STATUSES = {
    pb.DSAR_STATUS_RECEIVED: DsarStatus.RECEIVED,
    pb.DSAR_STATUS_VERIFIED: DsarStatus.VERIFIED,
    pb.DSAR_STATUS_COMPLETED: DsarStatus.COMPLETED,
    pb.DSAR_STATUS_REJECTED: DsarStatus.REJECTED,
}
_REASONS = {
    pb.REJECTION_REASON_IDENTITY_NOT_VERIFIED: RejectionReason.IDENTITY_NOT_VERIFIED,
    pb.REJECTION_REASON_LEGAL_RETENTION: RejectionReason.LEGAL_RETENTION,
    pb.REJECTION_REASON_LEGAL_HOLD: RejectionReason.LEGAL_HOLD,
    pb.REJECTION_REASON_MANIFESTLY_UNFOUNDED: RejectionReason.MANIFESTLY_UNFOUNDED,
    pb.REJECTION_REASON_DUPLICATE: RejectionReason.DUPLICATE,
    pb.REJECTION_REASON_OTHER: RejectionReason.OTHER,
}
_SUBJECTS = {
    "mobile": IdentifierKind.MOBILE,
    "email": IdentifierKind.EMAIL,
    "national_id": IdentifierKind.NATIONAL_ID,
    "member_id": IdentifierKind.MEMBER_ID,
}
_TYPES_TO_PB = {value: number for number, value in _TYPES.items()}
_STATUSES_TO_PB = {value: number for number, value in _STATUSES.items()}
_REASONS_TO_PB = {value: number for number, value in _REASONS.items()}


class DsarServicer(pb_grpc.DsarServiceServicer):
    def __init__(self, dsar: DsarService) -> None:
        self._dsar = dsar

    def OpenRequest(self, request: pb.OpenRequestRequest, context: grpc.ServicerContext) -> pb.OpenRequestResponse:
        which = request.WhichOneof("subject")
        if which is None:
            raise InvalidArgument.single(
                "subject", "exactly one of customer_id, mobile, email, national_id or member_id must be set"
            )
        kind = None if which == "customer_id" else _SUBJECTS[which]
        type_ = _TYPES.get(request.type)
        if type_ is None:
            raise InvalidArgument.single("type", "must be one of the DsarType values")
        opened = self._dsar.open(current_caller.get(), kind, getattr(request, which), type_)
        return pb.OpenRequestResponse(request=self._to_pb(opened))

    def VerifyRequest(
        self, request: pb.VerifyRequestRequest, context: grpc.ServicerContext
    ) -> pb.VerifyRequestResponse:
        return pb.VerifyRequestResponse(
            request=self._to_pb(self._dsar.verify(current_caller.get(), request.request_id))
        )

    def RejectRequest(
        self, request: pb.RejectRequestRequest, context: grpc.ServicerContext
    ) -> pb.RejectRequestResponse:
        rejected = self._dsar.reject(
            current_caller.get(), request.request_id, _REASONS.get(request.reason), request.text
        )
        return pb.RejectRequestResponse(request=self._to_pb(rejected))

    def GetRequest(self, request: pb.GetRequestRequest, context: grpc.ServicerContext) -> pb.GetRequestResponse:
        return pb.GetRequestResponse(request=self._to_pb(self._dsar.get(current_caller.get(), request.request_id)))

    def ListRequests(self, request: pb.ListRequestsRequest, context: grpc.ServicerContext) -> pb.ListRequestsResponse:
        status = None
        if request.status != pb.DSAR_STATUS_UNSPECIFIED:
            status = _STATUSES.get(request.status)
            if status is None:
                raise InvalidArgument.single("status", "must be one of the DsarStatus values")
        found = self._dsar.list(current_caller.get(), status, request.overdue_only, request.page_size)
        return pb.ListRequestsResponse(requests=[self._to_pb(r) for r in found])

    def ExportData(
        self, request: pb.ExportDataRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ExportDataResponse]:
        package = self._dsar.export(current_caller.get(), request.request_id)
        for start in range(0, len(package), CHUNK):
            yield pb.ExportDataResponse(chunk=package[start : start + CHUNK])

    def EraseCustomer(
        self, request: pb.EraseCustomerRequest, context: grpc.ServicerContext
    ) -> pb.EraseCustomerResponse:
        completed, receipt = self._dsar.erase(current_caller.get(), request.request_id)
        return pb.EraseCustomerResponse(request=self._to_pb(completed), receipt=receipt)

    def RectifyCustomer(
        self, request: pb.RectifyCustomerRequest, context: grpc.ServicerContext
    ) -> pb.RectifyCustomerResponse:
        completed = self._dsar.rectify(
            current_caller.get(),
            request.request_id,
            profile_from_pb(request.customer),
            list(request.update_mask.paths),
        )
        return pb.RectifyCustomerResponse(request=self._to_pb(completed))

    def RestrictProcessing(
        self, request: pb.RestrictProcessingRequest, context: grpc.ServicerContext
    ) -> pb.RestrictProcessingResponse:
        return pb.RestrictProcessingResponse(
            request=self._to_pb(self._dsar.restrict(current_caller.get(), request.request_id))
        )

    def LiftRestriction(
        self, request: pb.LiftRestrictionRequest, context: grpc.ServicerContext
    ) -> pb.LiftRestrictionResponse:
        self._dsar.lift_restriction(current_caller.get(), request.customer_id)
        return pb.LiftRestrictionResponse()

    def SetLegalHold(self, request: pb.SetLegalHoldRequest, context: grpc.ServicerContext) -> pb.SetLegalHoldResponse:
        self._dsar.set_legal_hold(current_caller.get(), request.customer_id, request.hold)
        return pb.SetLegalHoldResponse()

    def _to_pb(self, request: DsarRequest) -> pb.DsarRequest:
        message = pb.DsarRequest(
            request_id=request.request_id,
            customer_id=request.customer_id,
            type=_TYPES_TO_PB[request.type],
            status=_STATUSES_TO_PB[request.status],
            open_time=timestamp(request.open_time),
            due_date=request.due_date.isoformat(),
            overdue=request.overdue(self._dsar.today()),
            opened_by=request.opened_by,
            rejection_text=request.rejection_text,
            receipt_id=request.receipt_id,
        )
        if request.close_time is not None:
            message.close_time.CopyFrom(timestamp(request.close_time))
        if request.rejection_reason is not None:
            message.rejection_reason = _REASONS_TO_PB[request.rejection_reason]
        return message
