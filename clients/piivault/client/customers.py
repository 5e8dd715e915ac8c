"""``PiiVault.customers``: CustomerService (except ImportCustomers, which is ``PiiVault.imports``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grpc
from google.protobuf import field_mask_pb2

from piivault.client._calls import CallSettings, new_request_id, unary
from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc


class Customers:
    """Create, read, find, list, update, merge and split customers.

    Retried on UNAVAILABLE: ``create`` (idempotent on its ``request_id``, which the client generates once per call and
    sends again on every retry), ``get``, ``find`` and ``list`` (reads). Never retried: ``update`` (a repeat after a
    lost reply would fail with ABORTED, its ``expected_version`` being spent), ``merge`` and ``split``.

    Every read names a ``purpose`` from the vault's purpose registry; fields the purpose or the caller's role may not
    see come back masked and are listed in ``Customer.masked_fields``.
    """

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.CustomerServiceStub(channel)

    def create(
        self, customer: pb.Customer, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.CreateCustomerResponse:
        """Store a customer. ``request_id`` is the idempotency key (AIP-155): generated when not given."""
        request_id = request_id or new_request_id()
        request = pb.CreateCustomerRequest(customer=customer, request_id=request_id)
        return unary(
            self._settings, self._stub.CreateCustomer, request, request_id=request_id, idempotent=True, timeout=timeout
        )

    def get(
        self, customer_id: str, *, purpose: str, request_id: str | None = None, timeout: float | None = None
    ) -> pb.GetCustomerResponse:
        request = pb.GetCustomerRequest(customer_id=customer_id, purpose=purpose)
        return unary(
            self._settings,
            self._stub.GetCustomer,
            request,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )

    def find(
        self,
        *,
        purpose: str,
        mobile: str | None = None,
        email: str | None = None,
        national_id: str | None = None,
        member_id: str | None = None,
        external_ref: pb.ExternalRef | tuple[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.FindCustomersResponse:
        """Find the customer holding one identifier, written in any accepted form."""
        given = [name for name, value in _identifiers(mobile, email, national_id, member_id, external_ref) if value]
        if len(given) > 1:
            raise ValueError(f"find takes one identifier, not {len(given)} ({', '.join(given)})")
        request = pb.FindCustomersRequest(purpose=purpose)
        if mobile is not None:
            request.mobile = mobile
        if email is not None:
            request.email = email
        if national_id is not None:
            request.national_id = national_id
        if member_id is not None:
            request.member_id = member_id
        if external_ref is not None:
            ref = (
                external_ref
                if isinstance(external_ref, pb.ExternalRef)
                else pb.ExternalRef(source=external_ref[0], id=external_ref[1])
            )
            request.external_ref.CopyFrom(ref)
        return unary(
            self._settings,
            self._stub.FindCustomers,
            request,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )

    def list(
        self,
        *,
        purpose: str,
        page_size: int = 0,
        page_token: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.ListCustomersResponse:
        """One page of customers (``page_size`` 0 means the vault's default of 50; at most 500)."""
        request = pb.ListCustomersRequest(purpose=purpose, page_size=page_size, page_token=page_token)
        return unary(
            self._settings,
            self._stub.ListCustomers,
            request,
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )

    def list_all(self, *, purpose: str, page_size: int = 500, timeout: float | None = None) -> Iterator[pb.Customer]:
        """Every customer the purpose may list, page after page (each page is one call, with its own deadline)."""
        token = ""
        while True:
            page = self.list(purpose=purpose, page_size=page_size, page_token=token, timeout=timeout)
            yield from page.customers
            token = page.next_page_token
            if not token:
                return

    def update(
        self,
        customer: pb.Customer,
        *,
        fields: Sequence[str],
        expected_version: int,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.UpdateCustomerResponse:
        """Change ``fields`` of ``customer.customer_id`` to the values in ``customer`` (an empty value clears)."""
        request = pb.UpdateCustomerRequest(
            customer=customer,
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
            expected_version=expected_version,
        )
        return unary(
            self._settings,
            self._stub.UpdateCustomer,
            request,
            request_id=request_id,
            idempotent=False,
            timeout=timeout,
        )

    def merge(
        self, survivor_id: str, duplicate_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.MergeCustomersResponse:
        """Merge two records of one person; the duplicate is erased. After a failure, call it again to finish."""
        request = pb.MergeCustomersRequest(survivor_id=survivor_id, duplicate_id=duplicate_id)
        return unary(
            self._settings,
            self._stub.MergeCustomers,
            request,
            request_id=request_id,
            idempotent=False,
            timeout=timeout,
        )

    def split(
        self,
        customer_id: str,
        fields: Sequence[str],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.SplitCustomerResponse:
        """Move ``fields`` (with their values) of one record to a new customer."""
        request = pb.SplitCustomerRequest(customer_id=customer_id, fields=list(fields))
        return unary(
            self._settings,
            self._stub.SplitCustomer,
            request,
            request_id=request_id,
            idempotent=False,
            timeout=timeout,
        )


def _identifiers(
    mobile: str | None,
    email: str | None,
    national_id: str | None,
    member_id: str | None,
    external_ref: object,
) -> list[tuple[str, bool]]:
    return [
        ("mobile", mobile is not None),
        ("email", email is not None),
        ("national_id", national_id is not None),
        ("member_id", member_id is not None),
        ("external_ref", external_ref is not None),
    ]
