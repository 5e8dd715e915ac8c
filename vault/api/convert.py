"""Conversions between protobuf messages and domain types."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from piivault.v1 import customers_pb2 as pb
from vault.customers.models import Customer, ExternalRef, Gender, Profile
from vault.errors import InvalidArgument

_GENDER_FROM_PB = {
    pb.GENDER_UNSPECIFIED: Gender.UNSPECIFIED,
    pb.GENDER_FEMALE: Gender.FEMALE,
    pb.GENDER_MALE: Gender.MALE,
    pb.GENDER_OTHER: Gender.OTHER,
}
_GENDER_TO_PB = {gender: number for number, gender in _GENDER_FROM_PB.items()}


def profile_from_pb(message: pb.Customer, prefix: str = "customer") -> Profile:
    gender = _GENDER_FROM_PB.get(message.gender)
    if gender is None:
        raise InvalidArgument.single(f"{prefix}.gender", "must be one of the Gender enum values")
    return Profile(
        name=message.name,
        mobile=message.mobile,
        email=message.email,
        national_id=message.national_id,
        birth_date=message.birth_date,
        gender=gender,
        address=message.address,
        member_id=message.member_id,
        attributes=dict(message.attributes),
        external_refs=tuple(ExternalRef(ref.source, ref.id) for ref in message.external_refs),
    )


def customer_to_pb(customer: Customer) -> pb.Customer:
    profile = customer.profile
    return pb.Customer(
        customer_id=customer.customer_id,
        version=customer.version,
        name=profile.name,
        mobile=profile.mobile,
        email=profile.email,
        national_id=profile.national_id,
        birth_date=profile.birth_date,
        gender=_GENDER_TO_PB[profile.gender],
        address=profile.address,
        member_id=profile.member_id,
        attributes=profile.attributes,
        external_refs=[pb.ExternalRef(source=ref.source, id=ref.id) for ref in profile.external_refs],
        create_time=timestamp(customer.create_time),
        update_time=timestamp(customer.update_time),
        masked_fields=customer.masked_fields,
    )


def timestamp(value: dt.datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result
