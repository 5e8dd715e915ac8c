"""CustomerService servicer: convert, call the customer service once, convert back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import grpc

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from vault.api.context import current_caller
from vault.api.convert import customer_to_pb, profile_from_pb
from vault.customers.identity import IdentityService
from vault.customers.models import IdentifierKind, Profile
from vault.customers.service import CustomerService
from vault.errors import InvalidArgument
from vault.imports.service import ImportService, canonical_row

_FIND_KINDS = {
    "mobile": IdentifierKind.MOBILE,
    "email": IdentifierKind.EMAIL,
    "national_id": IdentifierKind.NATIONAL_ID,
    "member_id": IdentifierKind.MEMBER_ID,
}


class CustomerServicer(pb_grpc.CustomerServiceServicer):
    def __init__(self, customers: CustomerService, imports: ImportService, identity: IdentityService) -> None:
        self._customers = customers
        self._imports = imports
        self._identity = identity

    def MergeCustomers(
        self, request: pb.MergeCustomersRequest, context: grpc.ServicerContext
    ) -> pb.MergeCustomersResponse:
        merged = self._identity.merge(current_caller.get(), request.survivor_id, request.duplicate_id)
        return pb.MergeCustomersResponse(
            survivor_id=merged.survivor_id, filled=list(merged.filled), conflicts=list(merged.conflicts)
        )

    def SplitCustomer(
        self, request: pb.SplitCustomerRequest, context: grpc.ServicerContext
    ) -> pb.SplitCustomerResponse:
        created = self._identity.split(current_caller.get(), request.customer_id, list(request.fields))
        return pb.SplitCustomerResponse(new_customer_id=created.customer_id, fields=list(dict.fromkeys(request.fields)))

    def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.CreateCustomerResponse:
        customer = self._customers.create(current_caller.get(), request.request_id, profile_from_pb(request.customer))
        return pb.CreateCustomerResponse(customer=customer_to_pb(customer))

    def GetCustomer(self, request: pb.GetCustomerRequest, context: grpc.ServicerContext) -> pb.GetCustomerResponse:
        return pb.GetCustomerResponse(
            customer=customer_to_pb(self._customers.get(current_caller.get(), request.customer_id))
        )

    def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: grpc.ServicerContext
    ) -> pb.UpdateCustomerResponse:
        customer = self._customers.update(
            current_caller.get(),
            profile_from_pb(request.customer),
            request.customer.customer_id,
            list(request.update_mask.paths),
            request.expected_version,
        )
        return pb.UpdateCustomerResponse(customer=customer_to_pb(customer))

    def FindCustomers(
        self, request: pb.FindCustomersRequest, context: grpc.ServicerContext
    ) -> pb.FindCustomersResponse:
        which = request.WhichOneof("identifier")
        if which is None:
            raise InvalidArgument.single(
                "identifier", "exactly one of mobile, email, national_id, member_id or external_ref must be set"
            )
        if which == "external_ref":
            ref = request.external_ref
            found = self._customers.find(
                current_caller.get(), IdentifierKind.EXTERNAL_REF, ref.id, ref_source=ref.source
            )
        else:
            found = self._customers.find(current_caller.get(), _FIND_KINDS[which], getattr(request, which))
        return pb.FindCustomersResponse(customers=[customer_to_pb(customer) for customer in found])

    def ListCustomers(
        self, request: pb.ListCustomersRequest, context: grpc.ServicerContext
    ) -> pb.ListCustomersResponse:
        page = self._customers.page(current_caller.get(), request.page_size, request.page_token)
        return pb.ListCustomersResponse(
            customers=[customer_to_pb(customer) for customer in page.customers], next_page_token=page.next_page_token
        )

    def ImportCustomers(
        self, request_iterator: Iterator[pb.ImportCustomersRequest], context: grpc.ServicerContext
    ) -> pb.ImportCustomersResponse:
        source = [""]

        def rows() -> Iterator[tuple[int, Callable[[], Profile]]]:
            for index, request in enumerate(request_iterator):
                if index == 0:
                    source[0] = request.source.strip().lower()
                number = request.row or index + 1
                yield number, partial(_row_profile, request, source[0])

        summary = self._imports.profiles(current_caller.get(), rows(), metered=True)
        return pb.ImportCustomersResponse(
            results=[
                pb.ImportRowResult(
                    row=r.row,
                    outcome=r.outcome,
                    customer_id=r.customer_id,
                    reason=r.reason,
                    field=r.field,
                    filled=list(r.filled),
                    conflicts=list(r.conflicts),
                )
                for r in summary.results
            ]
        )


def _row_profile(request: pb.ImportCustomersRequest, source: str) -> Profile:
    return canonical_row(profile_from_pb(request.customer, prefix="customer"), request.external_id, source)
