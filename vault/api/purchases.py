"""PurchaseService and AnalyticsService servicers: convert, call the domain once, convert back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import grpc

from piivault.v1 import analytics_pb2 as apb
from piivault.v1 import analytics_pb2_grpc as apb_grpc
from piivault.v1 import purchases_pb2 as pb
from piivault.v1 import purchases_pb2_grpc as pb_grpc
from vault.api.context import current_caller
from vault.api.convert import timestamp
from vault.purchases.analytics import AnalyticsFeed
from vault.purchases.models import Line, PurchaseInput
from vault.purchases.service import PurchaseService

_UTC = dt.UTC


def purchase_from_pb(message: pb.Purchase) -> PurchaseInput:
    return PurchaseInput(
        source=message.source,
        order_id=message.order_id,
        purchase_time=message.purchase_time.ToDatetime(tzinfo=_UTC) if message.HasField("purchase_time") else None,
        amount_minor=message.amount_minor,
        currency=message.currency,
        store_id=message.store_id,
        lines=tuple(Line(line.sku, line.quantity, line.unit_price_minor) for line in message.lines),
        payment_method=message.payment_method,
        coupon=message.coupon,
        return_of_order_id=message.return_of_order_id,
    )


class PurchaseServicer(pb_grpc.PurchaseServiceServicer):
    def __init__(self, purchases: PurchaseService) -> None:
        self._purchases = purchases

    def RecordPurchase(
        self, request: pb.RecordPurchaseRequest, context: grpc.ServicerContext
    ) -> pb.RecordPurchaseResponse:
        recorded = self._purchases.record(current_caller.get(), request.customer_id, purchase_from_pb(request.purchase))
        return pb.RecordPurchaseResponse(purchase_id=recorded.purchase_id, duplicate=recorded.duplicate)

    def RecordPurchases(
        self, request_iterator: Iterator[pb.RecordPurchasesRequest], context: grpc.ServicerContext
    ) -> pb.RecordPurchasesResponse:
        items = ((r.customer_id, purchase_from_pb(r.purchase)) for r in request_iterator)
        summary = self._purchases.record_many(current_caller.get(), items)
        return pb.RecordPurchasesResponse(
            recorded=summary.recorded,
            duplicates=summary.duplicates,
            rejected=summary.rejected,
            rejections=[pb.RejectedPurchase(index=i, field=f, rule=r) for i, f, r in summary.rejections or []],
        )


class AnalyticsServicer(apb_grpc.AnalyticsServiceServicer):
    def __init__(self, feed: AnalyticsFeed) -> None:
        self._feed = feed

    def ExportPurchases(
        self, request: apb.ExportPurchasesRequest, context: grpc.ServicerContext
    ) -> Iterator[apb.ExportPurchasesResponse]:
        for page in self._feed.pages(current_caller.get(), request.cursor, request.page_size):
            yield apb.ExportPurchasesResponse(
                purchases=[
                    apb.AnalyticsPurchase(
                        pseudonym=p.pseudonym,
                        source=p.source,
                        order_ref=p.order_ref,
                        store_id=p.store_id,
                        purchase_time=timestamp(p.purchase_time),
                        amount_minor=p.amount_minor,
                        currency=p.currency,
                        items=p.items,
                        payment_method=p.payment_method,
                        is_return=p.is_return,
                    )
                    for p in page.purchases
                ],
                tombstones=[
                    apb.Tombstone(pseudonym=t.pseudonym, reason=t.reason, time=timestamp(t.time))
                    for t in page.tombstones
                ],
                next_cursor=page.cursor,
            )
