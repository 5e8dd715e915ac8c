"""Synthetic customers (Faker zh_CN plus generated identifiers with valid check digits). Never real data."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from faker import Faker
from stdnum.cn import ric

from audit.events import Caller
from piivault.v1 import customers_pb2 as pb
from vault.customers.models import ExternalRef, Gender, Profile


@dataclass(frozen=True)
class Person:
    name: str
    mobile: str  # 11-digit national form, e.g. 13912345678
    email: str
    national_id: str
    birth_date: str
    address: str
    member_id: str


def national_id(birth: dt.date, sequence: int) -> str:
    body = "110105" + birth.strftime("%Y%m%d") + f"{sequence:03d}"
    return body + ric.calc_check_digit(body + "0")


class People:
    """Deterministic stream of distinct synthetic people (unique mobile, email, id and member number)."""

    def __init__(self, seed: int = 7, first_serial: int = 0) -> None:
        self._rng = random.Random(seed)
        self._faker = Faker("zh_CN")
        self._faker.seed_instance(seed)
        self._serial = first_serial

    def next(self) -> Person:
        self._serial += 1
        n = self._serial
        # Birth date and sequence number both derive from the serial, so ids stay unique for 20 million people.
        birth = dt.date(1950, 1, 1) + dt.timedelta(days=n % 20_000)
        return Person(
            name=self._faker.name(),
            mobile=f"139{n:08d}",
            email=f"user{n}.{self._rng.randrange(10**6)}@example.test",
            national_id=national_id(birth, (n // 20_000) % 1000),
            birth_date=birth.isoformat(),
            address=self._faker.address(),
            member_id=f"M{n:09d}",
        )

    def many(self, count: int) -> list[Person]:
        return [self.next() for _ in range(count)]


def profile_of(person: Person, **extra: object) -> Profile:
    """The person as a full domain profile (every personal field set); ``extra`` overrides fields."""
    fields: dict[str, object] = {
        "name": person.name,
        "mobile": person.mobile,
        "email": person.email,
        "national_id": person.national_id,
        "birth_date": person.birth_date,
        "gender": Gender.FEMALE,
        "address": person.address,
        "member_id": person.member_id,
        "attributes": {"tier": "gold", "preferred_store": "上海静安店"},
        "external_refs": (ExternalRef("pos", f"P-{person.member_id}"),),
    }
    fields.update(extra)
    return Profile(**fields)  # type: ignore[arg-type]


def customer_message(person: Person) -> pb.Customer:
    """The same full profile as a ``piivault.v1.Customer`` message."""
    return pb.Customer(
        name=person.name,
        mobile=person.mobile,
        email=person.email,
        national_id=person.national_id,
        birth_date=person.birth_date,
        gender=pb.GENDER_FEMALE,
        address=person.address,
        member_id=person.member_id,
        attributes={"tier": "gold", "preferred_store": "上海静安店"},
        external_refs=[pb.ExternalRef(source="pos", id=f"P-{person.member_id}")],
    )


def caller(
    principal: str = "pos", role: str = "service", action: str = "test", purpose: str = "customer_service"
) -> Caller:
    """The audit context of a direct (in-process) service call in tests (reads under ``purpose``)."""
    return Caller(principal, role, action, request_id="test", peer="in-process", purpose=purpose)


def dpo(action: str = "test") -> Caller:
    """A DPO reading under the data-subject-request purpose: every field in clear (legal obligation)."""
    return caller("dpo-1", "dpo", action, purpose="dsar")
