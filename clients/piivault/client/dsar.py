"""``PiiVault.dsar``: DsarService, data-subject requests (role ``dpo``)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import field_mask_pb2

from piivault.client._calls import CallSettings, ResponseStream, unary
from piivault.v1 import customers_pb2, dsar_pb2
from piivault.v1 import dsar_pb2_grpc as pb_grpc

pb = dsar_pb2


class Dsar:
    """Open, verify, reject and complete data-subject requests. A request is named by its ``dsar_id`` (the
    ``DsarRequest.request_id``, ``dsar_…``); the ``request_id`` keyword of every method is the call's own id.

    Retried on UNAVAILABLE: ``get`` and ``list`` (reads), ``lift_restriction`` and ``set_legal_hold`` (they set a flag
    to a value; setting it again changes nothing). Never retried: ``open`` (a repeat would open a second request),
    ``verify``, ``reject`` and the completing calls ``export_data``, ``erase``, ``rectify``, ``restrict`` (each moves
    the request on, so a repeat after a lost reply fails with FAILED_PRECONDITION; read the request with ``get``).
    """

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.DsarServiceStub(channel)

    def open(
        self,
        type: pb.DsarType.ValueType,
        *,
        customer_id: str | None = None,
        mobile: str | None = None,
        email: str | None = None,
        national_id: str | None = None,
        member_id: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.OpenRequestResponse:
        """Open a request for the customer with this id, or holding this identifier (in any accepted spelling)."""
        subject = {
            "customer_id": customer_id,
            "mobile": mobile,
            "email": email,
            "national_id": national_id,
            "member_id": member_id,
        }
        given = {name: value for name, value in subject.items() if value is not None}
        if len(given) > 1:
            raise ValueError(f"open takes one subject, not {len(given)} ({', '.join(given)})")
        request = pb.OpenRequestRequest(type=type, **given)
        return unary(
            self._settings, self._stub.OpenRequest, request, request_id=request_id, idempotent=False, timeout=timeout
        )

    def verify(
        self, dsar_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.VerifyRequestResponse:
        """Record that the requester's identity was verified."""
        request = pb.VerifyRequestRequest(request_id=dsar_id)
        return unary(
            self._settings, self._stub.VerifyRequest, request, request_id=request_id, idempotent=False, timeout=timeout
        )

    def reject(
        self,
        dsar_id: str,
        *,
        reason: pb.RejectionReason.ValueType,
        text: str,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.RejectRequestResponse:
        """Reject a request with a reason code and the explanation given to the customer (PIPL art. 50)."""
        request = pb.RejectRequestRequest(request_id=dsar_id, reason=reason, text=text)
        return unary(
            self._settings, self._stub.RejectRequest, request, request_id=request_id, idempotent=False, timeout=timeout
        )

    def get(
        self, dsar_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.GetRequestResponse:
        request = pb.GetRequestRequest(request_id=dsar_id)
        return unary(
            self._settings, self._stub.GetRequest, request, request_id=request_id, idempotent=True, timeout=timeout
        )

    def list(
        self,
        *,
        status: pb.DsarStatus.ValueType = pb.DSAR_STATUS_UNSPECIFIED,
        overdue_only: bool = False,
        page_size: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.ListRequestsResponse:
        """Requests, overdue first, then by due date (``page_size`` 0: the default of 100)."""
        request = pb.ListRequestsRequest(status=status, overdue_only=overdue_only, page_size=page_size)
        return unary(
            self._settings, self._stub.ListRequests, request, request_id=request_id, idempotent=True, timeout=timeout
        )

    def export_data(self, dsar_id: str, *, request_id: str | None = None, timeout: float | None = None) -> bytes:
        """Complete a verified ACCESS or PORTABILITY request: the signed export package (a zip file)."""
        stream = ResponseStream(
            self._settings,
            self._stub.ExportData,
            pb.ExportDataRequest(request_id=dsar_id),
            request_id=request_id,
            idempotent=False,
            timeout=timeout,
        )
        with stream:
            return b"".join(part.chunk for part in stream)

    def erase(
        self, dsar_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.EraseCustomerResponse:
        """Complete a verified ERASURE request; ``receipt`` is the signed erasure receipt (JSON)."""
        request = pb.EraseCustomerRequest(request_id=dsar_id)
        return unary(
            self._settings, self._stub.EraseCustomer, request, request_id=request_id, idempotent=False, timeout=timeout
        )

    def rectify(
        self,
        dsar_id: str,
        customer: customers_pb2.Customer,
        *,
        fields: Sequence[str],
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.RectifyCustomerResponse:
        """Complete a verified RECTIFICATION request: ``fields`` take their values from ``customer``."""
        request = pb.RectifyCustomerRequest(
            request_id=dsar_id, customer=customer, update_mask=field_mask_pb2.FieldMask(paths=list(fields))
        )
        return unary(
            self._settings,
            self._stub.RectifyCustomer,
            request,
            request_id=request_id,
            idempotent=False,
            timeout=timeout,
        )

    def restrict(
        self, dsar_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.RestrictProcessingResponse:
        """Complete a verified RESTRICTION request: every read of the customer is refused until lifted."""
        request = pb.RestrictProcessingRequest(request_id=dsar_id)
        return unary(
            self._settings,
            self._stub.RestrictProcessing,
            request,
            request_id=request_id,
            idempotent=False,
            timeout=timeout,
        )

    def lift_restriction(
        self, customer_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.LiftRestrictionResponse:
        request = pb.LiftRestrictionRequest(customer_id=customer_id)
        return unary(
            self._settings, self._stub.LiftRestriction, request, request_id=request_id, idempotent=True, timeout=timeout
        )

    def set_legal_hold(
        self, customer_id: str, hold: bool = True, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.SetLegalHoldResponse:
        """Place (``hold=True``) or lift (``hold=False``) a legal hold, which blocks erasure while it lasts."""
        request = pb.SetLegalHoldRequest(customer_id=customer_id, hold=hold)
        return unary(
            self._settings, self._stub.SetLegalHold, request, request_id=request_id, idempotent=True, timeout=timeout
        )
