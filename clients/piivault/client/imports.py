"""``PiiVault.imports``: CustomerService.ImportCustomers, a channel's customer file as a client stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import grpc

from piivault.client._calls import CallSettings, client_stream
from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc


class Imports:
    """Import customers with merging: a row matching a stored customer by any identifier is merged into it.

    Re-sending a file is safe (rows already imported come back ``unchanged`` or ``merged``, never duplicated), so
    ``customers`` is retried on UNAVAILABLE when its rows are a sequence (a list or tuple; a generator is sent once).
    A retried import reports the rows the lost attempt had created as ``unchanged``.
    """

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.CustomerServiceStub(channel)

    def customers(
        self,
        rows: Iterable[pb.ImportCustomersRequest],
        *,
        source: str | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.ImportCustomersResponse:
        """Import ``rows``; ``source`` (the channel, e.g. ``crm``) is set on the first row when given."""
        requests: Iterable[pb.ImportCustomersRequest]
        requests = list(_with_source(rows, source)) if isinstance(rows, Sequence) else _with_source(rows, source)
        return client_stream(
            self._settings,
            self._stub.ImportCustomers,
            requests,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )


def _with_source(rows: Iterable[pb.ImportCustomersRequest], source: str | None) -> Iterator[pb.ImportCustomersRequest]:
    for index, row in enumerate(rows):
        if index == 0 and source is not None:
            first = pb.ImportCustomersRequest()
            first.CopyFrom(row)
            first.source = source
            yield first
        else:
            yield row
