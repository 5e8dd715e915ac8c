"""``PiiVault.purchases``: PurchaseService."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import grpc

from piivault.client._calls import CallSettings, client_stream, unary
from piivault.v1 import purchases_pb2 as pb
from piivault.v1 import purchases_pb2_grpc as pb_grpc


class Purchases:
    """Record purchases (and returns) under the customer's pseudonym.

    Both calls are idempotent on ``(purchase.source, purchase.order_id)``: the same order sent again with the same
    content answers ``duplicate=True`` and records nothing. So ``record`` is retried on UNAVAILABLE, and so is
    ``record_many`` when its purchases are given as a sequence (a list or tuple, which can be sent again; a generator
    is sent once). A retried stream reports the orders the lost attempt had recorded as ``duplicates``.
    """

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.PurchaseServiceStub(channel)

    def record(
        self,
        customer_id: str,
        purchase: pb.Purchase,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.RecordPurchaseResponse:
        request = pb.RecordPurchaseRequest(customer_id=customer_id, purchase=purchase)
        return unary(
            self._settings,
            self._stub.RecordPurchase,
            request,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )

    def record_many(
        self,
        purchases: Iterable[tuple[str, pb.Purchase] | pb.RecordPurchasesRequest],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.RecordPurchasesResponse:
        """Stream purchases, each a ``(customer_id, purchase)`` pair or a ``RecordPurchasesRequest``; the answer
        counts what was recorded, what was a duplicate, and why each rejected one was rejected."""
        requests: Iterable[pb.RecordPurchasesRequest]
        requests = [_request(item) for item in purchases] if isinstance(purchases, Sequence) else _requests(purchases)
        return client_stream(
            self._settings,
            self._stub.RecordPurchases,
            requests,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )


def _request(item: tuple[str, pb.Purchase] | pb.RecordPurchasesRequest) -> pb.RecordPurchasesRequest:
    if isinstance(item, pb.RecordPurchasesRequest):
        return item
    customer_id, purchase = item
    return pb.RecordPurchasesRequest(customer_id=customer_id, purchase=purchase)


def _requests(
    items: Iterable[tuple[str, pb.Purchase] | pb.RecordPurchasesRequest],
) -> Iterator[pb.RecordPurchasesRequest]:
    for item in items:
        yield _request(item)
