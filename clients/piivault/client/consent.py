"""``PiiVault.consent``: ConsentService, the consent ledger."""

from __future__ import annotations

import grpc

from piivault.client._calls import CallSettings, new_request_id, unary
from piivault.v1 import consent_pb2 as pb
from piivault.v1 import consent_pb2_grpc as pb_grpc


class Consent:
    """Record and read consents. Every method is retried on UNAVAILABLE: grants and withdrawals are idempotent on
    their ``request_id`` (generated once per call when not given, and sent again on every retry); the rest are reads.
    """

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.ConsentServiceStub(channel)

    def grant(
        self,
        customer_id: str,
        *,
        purpose: str,
        notice_version: str,
        notice_sha256: str,
        channel: pb.ConsentChannel.ValueType,
        scope: pb.ConsentScope.ValueType = pb.CONSENT_SCOPE_STANDARD,
        given_by: pb.GivenBy.ValueType = pb.GIVEN_BY_UNSPECIFIED,
        evidence_ref: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.GrantConsentResponse:
        """Record a grant, with the notice shown (version and SHA-256 of its text) and where it was collected."""
        request_id = request_id or new_request_id()
        request = pb.GrantConsentRequest(
            customer_id=customer_id,
            purpose=purpose,
            scope=scope,
            given_by=given_by,
            notice_version=notice_version,
            notice_sha256=notice_sha256,
            channel=channel,
            evidence_ref=evidence_ref,
            request_id=request_id,
        )
        return unary(
            self._settings, self._stub.GrantConsent, request, request_id=request_id, idempotent=True, timeout=timeout
        )

    def withdraw(
        self,
        customer_id: str,
        *,
        purpose: str,
        channel: pb.ConsentChannel.ValueType,
        scope: pb.ConsentScope.ValueType = pb.CONSENT_SCOPE_UNSPECIFIED,
        evidence_ref: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.WithdrawConsentResponse:
        """Record a withdrawal of one scope, or (scope unspecified) of every scope of the purpose."""
        request_id = request_id or new_request_id()
        request = pb.WithdrawConsentRequest(
            customer_id=customer_id,
            purpose=purpose,
            scope=scope,
            channel=channel,
            evidence_ref=evidence_ref,
            request_id=request_id,
        )
        return unary(
            self._settings, self._stub.WithdrawConsent, request, request_id=request_id, idempotent=True, timeout=timeout
        )

    def list(
        self, customer_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.ListConsentsResponse:
        """The current state of every consent that applies to the customer."""
        return unary(
            self._settings,
            self._stub.ListConsents,
            pb.ListConsentsRequest(customer_id=customer_id),
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )

    def history(
        self,
        customer_id: str,
        *,
        purpose: str = "",
        page_size: int = 0,
        page_token: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.GetConsentHistoryResponse:
        """Every grant and withdrawal, oldest first, one page at a time (``page_size`` 0: the default of 100)."""
        request = pb.GetConsentHistoryRequest(
            customer_id=customer_id, purpose=purpose, page_size=page_size, page_token=page_token
        )
        return unary(
            self._settings,
            self._stub.GetConsentHistory,
            request,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )
