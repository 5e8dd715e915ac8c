"""``PiiVault.analytics``: AnalyticsService, the pseudonymised purchase feed (role ``analyst``)."""

from __future__ import annotations

import grpc

from piivault.client._calls import CallSettings, ResponseStream
from piivault.v1 import analytics_pb2 as pb
from piivault.v1 import analytics_pb2_grpc as pb_grpc


class Analytics:
    """The incremental export of pseudonymised purchases and tombstones. Retried on UNAVAILABLE before its first
    page (it only reads; pass the last page's ``next_cursor`` to resume after a later failure)."""

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.AnalyticsServiceStub(channel)

    def export_purchases(
        self,
        *,
        cursor: str = "",
        page_size: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> ResponseStream[pb.ExportPurchasesResponse]:
        """Pages of purchases and tombstones after ``cursor`` (empty: everything); keep the last ``next_cursor``.
        Consumers must delete what they hold for every tombstoned pseudonym."""
        request = pb.ExportPurchasesRequest(cursor=cursor, page_size=page_size)
        return ResponseStream(
            self._settings,
            self._stub.ExportPurchases,
            request,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )
