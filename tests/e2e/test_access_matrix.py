"""The access matrix (issue 5, acceptance 1 and 4): every RPC x every role x every access state, over real gRPC.

Every call goes through the SDK (``piivault.client``), one client per role on one channel; a client interceptor keeps
each call, so that the status and metadata of successful replies are checked as well as those of refusals.

Each cell calls one RPC as one role in one state and compares what the client received with an oracle written in this
module from the documented behaviour (the role table, the purpose registry, the role field limits and the read rules
of the specification). Nothing is imported from ``vault.auth.policy``, ``vault.auth.roles``, ``consent.purposes`` or
``consent.decisions``: the tables below are a second, independent statement of the same rules, so a change on either
side shows up as a failing cell.

States (``STATES``). The state decides which purpose a read names and what the customer read has consented to:

- ``allowed_purpose``: a purpose the role may name. service and support: ``customer_service`` (contract); dpo:
  ``dsar`` (legal obligation); marketing, which may name no contract purpose, reads under ``marketing_email`` and
  the customer has a current ``marketing_email`` consent; analyst: ``analytics``, its only purpose; auditor and admin
  may name no purpose at all and read under ``customer_service``.
- ``disallowed_purpose``: a purpose the role may not name: ``customer_service`` for dpo and marketing, ``dsar`` for
  every other role.
- ``consent_present``: every role reads under ``marketing_sms``; the customer has a current standard consent.
- ``consent_withdrawn``: every role reads under ``marketing_sms``; the customer granted and then withdrew it.
- ``unknown_purpose``: every role names ``profiling``, which is not a registered purpose.
- ``sensitive_consent_present`` / ``sensitive_consent_withdrawn``: every role reads under ``identity_verification``;
  the customer gave (and, in the second state, then withdrew) the separate consent for the national id.

The last three states go beyond the four the acceptance names: they pin the order of the read rules (role before
purpose validity) and the separate-consent rule for the national id. 16 RPCs x 7 roles x 7 states = 784 cells, run
against every database and key provider the ``vault`` fixture is parametrized over.

Outcomes (``expected_outcome``): a role the RPC does not allow gets PERMISSION_DENIED with ErrorInfo reason
ROLE_NOT_ALLOWED (the reason ``vault.api.status`` documents for the role gate); a read naming an unregistered purpose
gets INVALID_ARGUMENT with a BadRequest violation on ``purpose``; a purpose the role may not name, PERMISSION_DENIED
with PURPOSE_NOT_ALLOWED; a consent-based purpose without current consent, FAILED_PRECONDITION with CONSENT_REQUIRED
(both reasons as ``customers.proto`` documents them) — except ListCustomers, which answers OK without that customer.
Otherwise the read is OK and shows in clear exactly the fields the purpose and the role both allow (less the national
id without the separate consent, unless the purpose is a legal obligation): every other field must differ from the
stored value and be listed in ``masked_fields`` (a masked gender reads GENDER_UNSPECIFIED). Create must echo what was
sent (the mobile in E.164); Update shows the fields in its mask in clear and masks the rest. Writes, consent, key and
audit RPCs carry no purpose: OK for the roles allowed, whatever the state, and each response is checked for content.

Every cell is independent of the others: each state has its own customer (read by Get, Find and List, and the target of
the consent RPCs), each (state, role) has its own customer to update and its own new person to create, and the consent
RPCs grant and withdraw ``analytics``, which no read in the matrix depends on. The cells run in a shuffled (seeded)
order to show it. What a cell may legitimately change (a created customer, an updated address, a consent record) is
tracked in a model, so list and consent-history expectations stay exact whatever ran before.

Every reply — response messages, status code and message, ``str()`` of the error, initial and trailing metadata
including ``grpc-status-details-bin`` decoded as ``google.rpc.Status`` and its details — is scanned for every
encoding of every customer's field values (``tests.support.scan.needles`` plus the birth date, attribute values and
external ids, which are unique per person here); only values the oracle says are shown in clear to this caller may
appear. Refused writes are checked to have changed nothing. The analyst and auditor rules of acceptance 4 are checked
once more on their own, straight from the observed replies.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from piivault.client import PiiVault, PiiVaultError, RetryPolicy
from piivault.v1 import audit_pb2, consent_pb2, keys_pb2
from piivault.v1 import customers_pb2 as pb
from tests.support.canary import long_enough
from tests.support.people import People, Person, customer_message
from tests.support.scan import find_in_bytes, needles
from vault.app import Vault

# What these RPCs answer does not depend on where the KEK lives; the Vault Transit path is covered by the
# integration tests and tests/e2e/test_grpc_api.py, so this module runs with the local keyring only.
pytestmark = pytest.mark.local_keyring

Received = Sequence[tuple[str, str | bytes]]

# ---------------------------------------------------------------------------------------------------------------------
# The oracle: the specification, restated. Never derived from the production tables.
# ---------------------------------------------------------------------------------------------------------------------

ROLES = ("service", "support", "marketing", "analyst", "dpo", "auditor", "admin")
FIELDS = (
    "name",
    "mobile",
    "email",
    "national_id",
    "birth_date",
    "gender",
    "address",
    "member_id",
    "attributes",
    "external_refs",
)
ALL_FIELDS = frozenset(FIELDS)
SENSITIVE = frozenset({"national_id"})

CONTRACT = "contract"
CONSENT = "consent"
LEGAL_OBLIGATION = "legal_obligation"
STANDARD = "standard"
SENSITIVE_SCOPE = "sensitive"

CUSTOMER = "/piivault.v1.CustomerService/"
CONSENTS = "/piivault.v1.ConsentService/"
KEYS = "/piivault.v1.KeyService/"
AUDIT = "/piivault.v1.AuditService/"

_WRITERS = frozenset({"service", "support"})
_READERS = frozenset({"service", "support", "marketing", "dpo"})
_LISTERS = frozenset({"service", "marketing", "dpo"})
_CONSENT_RECORDERS = frozenset({"service", "support", "dpo"})
_ADMIN = frozenset({"admin"})
_AUDITORS = frozenset({"auditor", "admin"})

# RPC -> the roles that may call it; every other role gets PERMISSION_DENIED.
RPC_ROLES: dict[str, frozenset[str]] = {
    CUSTOMER + "CreateCustomer": _WRITERS,
    CUSTOMER + "UpdateCustomer": _WRITERS,
    CUSTOMER + "GetCustomer": _READERS,
    CUSTOMER + "FindCustomers": _READERS,
    CUSTOMER + "ListCustomers": _LISTERS,
    CUSTOMER + "ImportCustomers": frozenset({"service"}),
    CUSTOMER + "MergeCustomers": _WRITERS,
    CUSTOMER + "SplitCustomer": _WRITERS,
    CONSENTS + "GrantConsent": _CONSENT_RECORDERS,
    CONSENTS + "WithdrawConsent": _CONSENT_RECORDERS,
    CONSENTS + "ListConsents": _READERS,
    CONSENTS + "GetConsentHistory": _READERS,
    KEYS + "GetKeyStatus": _ADMIN,
    KEYS + "RotateKek": _ADMIN,
    KEYS + "RewrapKeys": _ADMIN,
    KEYS + "SetMinDecryptionVersion": _ADMIN,
    AUDIT + "QueryEvents": _AUDITORS,
    AUDIT + "VerifyChain": _AUDITORS,
    AUDIT + "GetCheckpoint": _AUDITORS,
}
READS = frozenset({CUSTOMER + "GetCustomer", CUSTOMER + "FindCustomers", CUSTOMER + "ListCustomers"})
AUDIT_RPCS = frozenset(rpc for rpc in RPC_ROLES if rpc.startswith(AUDIT))


@dataclass(frozen=True)
class PurposeSpec:
    basis: str
    fields: frozenset[str]
    roles: frozenset[str]


PURPOSES: dict[str, PurposeSpec] = {
    "order_fulfilment": PurposeSpec(
        CONTRACT, frozenset({"name", "mobile", "address", "member_id", "external_refs"}), _WRITERS
    ),
    "customer_service": PurposeSpec(CONTRACT, ALL_FIELDS - {"national_id"}, _WRITERS),
    "membership": PurposeSpec(CONTRACT, ALL_FIELDS - {"national_id", "address"}, _WRITERS),
    "identity_verification": PurposeSpec(CONTRACT, frozenset({"name", "national_id", "birth_date"}), _WRITERS),
    "marketing_sms": PurposeSpec(CONSENT, frozenset({"name", "mobile"}), frozenset({"service", "marketing"})),
    "marketing_email": PurposeSpec(CONSENT, frozenset({"name", "email"}), frozenset({"service", "marketing"})),
    "analytics": PurposeSpec(CONSENT, frozenset(), frozenset({"analyst"})),
    "dsar": PurposeSpec(LEGAL_OBLIGATION, ALL_FIELDS, frozenset({"dpo"})),
    "legal": PurposeSpec(LEGAL_OBLIGATION, ALL_FIELDS, frozenset({"dpo"})),
}

# The most a role may ever see in clear; a field is clear only if the purpose allows it too.
ROLE_FIELDS: dict[str, frozenset[str]] = {
    "service": ALL_FIELDS,
    "support": ALL_FIELDS - {"national_id"},
    "marketing": frozenset({"name", "mobile", "email", "gender", "birth_date", "member_id", "attributes"}),
    "dpo": ALL_FIELDS,
    "analyst": frozenset(),
    "auditor": frozenset(),
    "admin": frozenset(),
}

# The consents ListConsents reports: one per consent-based purpose, one per purpose whose sensitive fields need the
# separate consent (not under a legal obligation).
CONSENT_SLOTS = frozenset(
    {(name, STANDARD) for name, spec in PURPOSES.items() if spec.basis == CONSENT}
    | {
        (name, SENSITIVE_SCOPE)
        for name, spec in PURPOSES.items()
        if spec.fields & SENSITIVE and spec.basis != LEGAL_OBLIGATION
    }
)

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
# Identity operations the matrix runs on customers that do not exist (so no cell changes another's world).
ABSENT_TARGETS = frozenset({CUSTOMER + "MergeCustomers", CUSTOMER + "SplitCustomer"})
ROLE_NOT_ALLOWED = "ROLE_NOT_ALLOWED"
PURPOSE_NOT_ALLOWED = "PURPOSE_NOT_ALLOWED"
CONSENT_REQUIRED = "CONSENT_REQUIRED"


@dataclass(frozen=True)
class Expected:
    """The outcome of one call: a status code, the ErrorInfo reason of a refusal, and for a customer read the fields
    shown in clear (``clear``) or, for a list, that the customer is not listed (``listed=False``)."""

    code: grpc.StatusCode
    reason: str = ""
    clear: frozenset[str] | None = None
    listed: bool = True

    @property
    def label(self) -> str:
        if self.code is not OK:
            return f"{self.code.name}({self.reason})" if self.reason else self.code.name
        if not self.listed:
            return "not listed"
        if self.clear is None:
            return "OK"
        return "data" if self.clear == ALL_FIELDS else "masked(clear: " + ",".join(sorted(self.clear)) + ")"


def read_access(role: str, purpose_name: str, consents: Iterable[tuple[str, str]], *, listing: bool) -> Expected:
    """The purpose gate of a read, for a role that may call the RPC, on one customer with these current consents."""
    purpose = PURPOSES.get(purpose_name)
    if purpose is None:
        return Expected(INVALID)
    if role not in purpose.roles:
        return Expected(DENIED, PURPOSE_NOT_ALLOWED)
    current = frozenset(consents)
    if purpose.basis == CONSENT and (purpose_name, STANDARD) not in current:
        return Expected(OK, listed=False) if listing else Expected(FAILED, CONSENT_REQUIRED)
    clear = purpose.fields & ROLE_FIELDS[role]
    if purpose.basis != LEGAL_OBLIGATION and (purpose_name, SENSITIVE_SCOPE) not in current:
        clear -= SENSITIVE
    return Expected(OK, clear=clear)


def expected_outcome(rpc: str, role: str, purpose: str, consents: Iterable[tuple[str, str]]) -> Expected:
    """What one cell must give. ``purpose`` and ``consents`` only matter to reads."""
    if role not in RPC_ROLES[rpc]:
        return Expected(DENIED, ROLE_NOT_ALLOWED)
    if rpc in ABSENT_TARGETS:
        return Expected(NOT_FOUND)
    if rpc not in READS:
        return Expected(OK)
    return read_access(role, purpose, consents, listing=rpc == CUSTOMER + "ListCustomers")


@dataclass(frozen=True)
class State:
    name: str
    purposes: Mapping[str, str]  # role -> the purpose its reads name
    # Consent changes made (through the API) on the state's customer before any cell runs: (action, purpose, scope).
    setup: tuple[tuple[str, str, str], ...] = ()

    def purpose(self, role: str) -> str:
        return self.purposes[role]


def _everyone(purpose: str) -> dict[str, str]:
    return dict.fromkeys(ROLES, purpose)


STATES: tuple[State, ...] = (
    State(
        "allowed_purpose",
        {
            "service": "customer_service",
            "support": "customer_service",
            "marketing": "marketing_email",
            "analyst": "analytics",
            "dpo": "dsar",
            "auditor": "customer_service",
            "admin": "customer_service",
        },
        (("grant", "marketing_email", STANDARD),),
    ),
    State(
        "disallowed_purpose",
        {**_everyone("dsar"), "dpo": "customer_service", "marketing": "customer_service"},
    ),
    State("consent_present", _everyone("marketing_sms"), (("grant", "marketing_sms", STANDARD),)),
    State(
        "consent_withdrawn",
        _everyone("marketing_sms"),
        (("grant", "marketing_sms", STANDARD), ("withdraw", "marketing_sms", "")),
    ),
    State("unknown_purpose", _everyone("profiling")),
    State(
        "sensitive_consent_present",
        _everyone("identity_verification"),
        (("grant", "identity_verification", SENSITIVE_SCOPE),),
    ),
    State(
        "sensitive_consent_withdrawn",
        _everyone("identity_verification"),
        (("grant", "identity_verification", SENSITIVE_SCOPE), ("withdraw", "identity_verification", "")),
    ),
)


@dataclass(frozen=True)
class Cell:
    rpc: str
    role: str
    state: State

    @property
    def name(self) -> str:
        return f"{self.state.name}/{self.rpc.rsplit('/', 1)[1]}/{self.role}"


AUDIT_PAGE = 300  # events per QueryEvents cell; the whole log is scanned once, at the end
CELLS: tuple[Cell, ...] = tuple(Cell(rpc, role, state) for state in STATES for rpc in RPC_ROLES for role in ROLES)
SHUFFLE_SEED = 20240605

# ---------------------------------------------------------------------------------------------------------------------
# The people and what the test knows about them.
# ---------------------------------------------------------------------------------------------------------------------

_ENCODINGS = ("utf-8", "utf-16-le", "gb18030")
_NEEDLE_FIELD = {"mobile-e164": "mobile"}
RETIRED = "retired"  # values a customer no longer holds (an overwritten address): never in any reply
NOTICE_SHA256 = hashlib.sha256("营销及数据分析告知 v2".encode()).hexdigest()


def _forms(label: str, value: str) -> dict[str, bytes]:
    """The encodings ``tests.support.scan.needles`` looks for, for a value it does not cover."""
    found = {f"{label}/{encoding}:{value}": value.encode(encoding) for encoding in _ENCODINGS}
    found[f"{label}/base64:{value}"] = base64.b64encode(value.encode())
    found[f"{label}/hex:{value}"] = value.encode().hex().encode()
    return found


def full_message(person: Person) -> pb.Customer:
    """Every field set, and every value unique to the person (attributes and external ids included)."""
    message = customer_message(person)
    digest = hashlib.sha256(("matrix:" + person.mobile).encode()).hexdigest()
    message.ClearField("attributes")
    message.attributes["tier"] = f"gold-{digest[:10]}"
    message.attributes["preferred_store"] = f"上海静安店-{digest[10:20]}"
    message.ClearField("external_refs")
    message.external_refs.add(source="pos", id=f"POS-{digest[20:36]}")
    return message


def stored_form(sent: pb.Customer) -> pb.Customer:
    """What the vault stores for ``sent``: the same, with the mobile in E.164 (region CN assumed)."""
    stored = pb.Customer()
    stored.CopyFrom(sent)
    stored.mobile = "+86" + sent.mobile
    return stored


def field_value(customer: pb.Customer, name: str) -> object:
    if name == "attributes":
        return dict(customer.attributes)
    if name == "external_refs":
        return [(ref.source, ref.id) for ref in customer.external_refs]
    return getattr(customer, name)


def set_fields(customer: pb.Customer) -> frozenset[str]:
    return frozenset(name for name in FIELDS if field_value(customer, name))


@dataclass(eq=False)
class Subject:
    """One synthetic person: what was sent, what the vault should hold, and their consents as the test made them."""

    person: Person
    sent: pb.Customer
    stored: pb.Customer
    new_address: str  # what an UpdateCustomer cell writes
    customer_id: str = ""
    granted: set[tuple[str, str]] = field(default_factory=set)
    recorded: set[tuple[str, str]] = field(default_factory=set)
    records: int = 0
    canaries: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refresh_canaries()

    def refresh_canaries(self) -> None:
        by_field: dict[str, dict[str, bytes]] = {name: {} for name in (*FIELDS, RETIRED)}
        for label, needle in needles([self.person]).items():
            kind = label.split("/", 1)[0]
            by_field[_NEEDLE_FIELD.get(kind, kind)][label] = needle
        if self.stored.address != self.person.address:
            by_field[RETIRED].update(by_field["address"])
            by_field["address"] = _forms("address", self.stored.address)
        by_field["birth_date"] = _forms("birth_date", self.stored.birth_date)
        for value in self.stored.attributes.values():
            by_field["attributes"].update(_forms("attributes", value))
        for ref in self.stored.external_refs:
            by_field["external_refs"].update(_forms("external_refs", ref.id))
        self.canaries = by_field

    def apply_update(self) -> None:
        self.stored.address = self.new_address
        self.stored.version = 2
        self.refresh_canaries()

    def consent_state(self, slot: tuple[str, str]) -> int:
        if slot in self.granted:
            return consent_pb2.CONSENT_STATE_GRANTED
        if slot in self.recorded:
            return consent_pb2.CONSENT_STATE_WITHDRAWN
        return consent_pb2.CONSENT_STATE_NOT_GIVEN


def distinct_people(count: int) -> list[Person]:
    """Synthetic people whose names are unique too (Faker repeats common names)."""
    stream = People(seed=5105, first_serial=7000)
    found: list[Person] = []
    names: set[str] = set()
    while len(found) < count:
        person = stream.next()
        if person.name not in names:
            names.add(person.name)
            found.append(person)
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Calls, and everything a client receives from one.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    code: grpc.StatusCode
    messages: list[Message]
    details: str = ""
    error_text: str = ""
    initial: Received = ()
    trailing: Received = ()
    status: status_pb2.Status | None = None
    status_details: list[Message] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def reasons(self) -> list[str]:
        return [d.reason for d in self.status_details if isinstance(d, error_details_pb2.ErrorInfo)]

    def violations(self) -> list[str]:
        return [
            v.field
            for d in self.status_details
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]

    def blob(self) -> bytes:
        """Everything the client got, as one byte string to scan."""
        parts = [message.SerializeToString() for message in self.messages]
        parts += [self.code.name.encode(), self.details.encode(), self.error_text.encode()]
        for key, value in (*self.initial, *self.trailing):
            parts += [key.encode(), value if isinstance(value, bytes) else value.encode()]
        for message in ([self.status] if self.status is not None else []) + self.status_details:
            parts += [message.SerializeToString(), text_format.MessageToString(message, as_utf8=True).encode()]
        return b"\x00".join(parts)


_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
)


def _failure(error: PiiVaultError) -> Reply:
    """What the client received with a refusal: the SDK's exception carries the call's status, its message, its
    initial and trailing metadata, and (as ``__cause__``) gRPC's own error, whose text is scanned as well."""
    trailing = tuple((key, value) for key, value in error.trailing_metadata)
    reply = Reply(error.code, [], error.message, f"{error}\n{error!r}\n{error.__cause__}", trailing=trailing)
    reply.initial = tuple(error.initial_metadata)
    for key, value in reply.trailing:
        if key != "grpc-status-details-bin":
            continue
        assert isinstance(value, bytes)
        status = status_pb2.Status.FromString(value)
        reply.status = status
        if status.code != reply.code.value[0] or status.message != reply.details:
            reply.problems.append("grpc-status-details-bin disagrees with the call's status")
        for packed in status.details:
            for kind in _DETAIL_TYPES:
                if packed.Is(kind.DESCRIPTOR):
                    unpacked = kind()
                    packed.Unpack(unpacked)
                    reply.status_details.append(unpacked)
                    break
            else:
                reply.problems.append(f"unexpected error detail {packed.type_url}")
    if error.status != reply.status or list(error.details) != reply.status_details:
        reply.problems.append("the SDK decoded the error details differently")
    return reply


if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not subscriptable
    _Interceptors = (
        grpc.UnaryUnaryClientInterceptor[Any, Any],
        grpc.UnaryStreamClientInterceptor[Any, Any],
        grpc.StreamUnaryClientInterceptor[Any, Any],
    )
else:
    _Interceptors = (
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
    )


class CallRecorder(*_Interceptors):  # type: ignore[misc]
    """A client interceptor on the SDK's channel that keeps the last call, so that a cell can read the status and the
    initial and trailing metadata of a successful reply too (the SDK returns only the response message)."""

    def __init__(self) -> None:
        self.last: Any = None

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.last = continuation(details, request)
        return self.last

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.last = continuation(details, request)
        return self.last

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        self.last = continuation(details, requests)
        return self.last


def observe(world: World, send: Callable[[], Message | list[Message]]) -> Reply:
    """Make one call through the SDK and collect everything the client received."""
    world.recorder.last = None
    try:
        result = send()
    except PiiVaultError as error:
        return _failure(error)
    call = world.recorder.last
    assert call is not None, "the SDK made no call"
    messages = result if isinstance(result, list) else [result]
    return Reply(call.code(), messages, call.details() or "", "", call.initial_metadata(), call.trailing_metadata())


# ---------------------------------------------------------------------------------------------------------------------
# The world a matrix runs in.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class World:
    vault: Vault
    client: PiiVault  # on the recorder's channel; every role's client shares it
    recorder: CallRecorder
    tokens: dict[str, str]
    subjects: list[Subject]  # everyone, created or not
    by_id: dict[str, Subject]  # the customers the vault should hold
    state_subject: dict[str, Subject]
    update_subject: dict[tuple[str, str], Subject]
    create_subject: dict[tuple[str, str], Subject]
    calls: int = 0
    index: CanaryIndex = field(init=False)

    def __post_init__(self) -> None:
        self.clients = {role: self.client.with_token(token) for role, token in self.tokens.items()}
        self.index = CanaryIndex(self.subjects)

    def caller(self, role: str) -> tuple[PiiVault, str]:
        """The role's client, and a request id of its own for the next call."""
        self.calls += 1
        return self.clients[role], f"matrix-{self.calls}"

    def register(self, subject: Subject, customer_id: str) -> None:
        subject.customer_id = customer_id
        subject.stored.customer_id = customer_id
        subject.stored.version = 1
        self.by_id[customer_id] = subject


PROBE = "probe"  # the principal that checks refused writes had no effect (a dpo and an admin token)


def _create(world: World, subject: Subject) -> None:
    client, request_id = world.caller("service")
    created = client.customers.create(subject.sent, request_id=request_id)
    world.register(subject, created.customer.customer_id)


def _consent_change(world: World, subject: Subject, action: str, purpose: str, scope: str, role: str) -> Reply:
    client, request_id = world.caller(role)
    if action == "grant":
        reply = observe(
            world,
            lambda: client.consent.grant(
                subject.customer_id,
                purpose=purpose,
                scope=consent_pb2.CONSENT_SCOPE_SENSITIVE
                if scope == SENSITIVE_SCOPE
                else consent_pb2.CONSENT_SCOPE_STANDARD,
                notice_version="v2",
                notice_sha256=NOTICE_SHA256,
                channel=consent_pb2.CONSENT_CHANNEL_POS,
                request_id=request_id,
            ),
        )
        if reply.code is OK:
            subject.granted.add((purpose, scope))
            subject.recorded.add((purpose, scope))
            subject.records += 1
        return reply
    reply = observe(
        world,
        lambda: client.consent.withdraw(
            subject.customer_id,
            purpose=purpose,
            channel=consent_pb2.CONSENT_CHANNEL_CALL_CENTRE,
            request_id=request_id,
        ),
    )
    if reply.code is OK:
        # Scope unspecified withdraws every scope the purpose has.
        slots = {slot for slot in CONSENT_SLOTS if slot[0] == purpose}
        subject.granted -= slots
        subject.recorded |= slots
        subject.records += len(slots)
    return reply


def build_world(vault: Vault, address: str) -> World:
    tokens = {role: vault.tokens.create(f"{role}-matrix", role).secret for role in ROLES}
    tokens[PROBE + "-dpo"] = vault.tokens.create("probe-dpo", "dpo").secret
    tokens[PROBE + "-admin"] = vault.tokens.create("probe-admin", "admin").secret
    people = distinct_people(len(STATES) * (1 + 2 * len(ROLES)))
    subjects = [
        Subject(person, full_message(person), stored_form(full_message(person)), f"新址路{i}号{person.mobile[-4:]}室")
        for i, person in enumerate(people)
    ]
    pool = iter(subjects)
    recorder = CallRecorder()
    client = PiiVault(
        address,
        None,
        default_timeout=60,
        stream_timeout=120,
        retry=RetryPolicy.disabled(),  # every UNAVAILABLE is a wrong cell, never retried away
        interceptors=[recorder],
    )
    world = World(vault, client, recorder, tokens, subjects, {}, {}, {}, {})
    for state in STATES:
        world.state_subject[state.name] = next(pool)
        for role in ROLES:
            world.update_subject[state.name, role] = next(pool)
            world.create_subject[state.name, role] = next(pool)
    for subject in [*world.state_subject.values(), *world.update_subject.values()]:
        _create(world, subject)
    for state in STATES:
        for action, purpose, scope in state.setup:
            reply = _consent_change(world, world.state_subject[state.name], action, purpose, scope, "service")
            assert reply.code is OK, f"setup of {state.name}: {action} {purpose} gave {reply.code.name}"
    return world


# ---------------------------------------------------------------------------------------------------------------------
# One cell.
# ---------------------------------------------------------------------------------------------------------------------


def invoke(world: World, cell: Cell) -> Reply:
    method = cell.rpc.rsplit("/", 1)[1]
    client, rid = world.caller(cell.role)
    subject = world.state_subject[cell.state.name]
    purpose = cell.state.purpose(cell.role)
    send: Callable[[], Message | list[Message]]
    if method == "CreateCustomer":
        target = world.create_subject[cell.state.name, cell.role]
        send = lambda: client.customers.create(target.sent, request_id=rid)  # noqa: E731
    elif method == "UpdateCustomer":
        target = world.update_subject[cell.state.name, cell.role]
        send = lambda: client.customers.update(  # noqa: E731
            pb.Customer(customer_id=target.customer_id, address=target.new_address),
            fields=["address"],
            expected_version=1,
            request_id=rid,
        )
    elif method == "ImportCustomers":
        # The state's customer again, by its stored mobile alone: an import merges it, and has nothing to fill.
        row = pb.ImportCustomersRequest(source="matrix", row=2, customer=pb.Customer(mobile=subject.stored.mobile))
        send = lambda: client.imports.customers(iter([row]), request_id=rid, timeout=60)  # noqa: E731
    elif method in ("MergeCustomers", "SplitCustomer"):
        # Identity operations on customers that do not exist: an allowed role reaches the service and gets NOT_FOUND
        # (nothing of anyone is touched); every other role is refused before that.
        nobody = "00000000-0000-4000-8000-000000000000"
        if method == "MergeCustomers":
            other = nobody.replace("0000-4000", "0001-4000")
            send = lambda: client.customers.merge(nobody, other, request_id=rid)  # noqa: E731
        else:
            send = lambda: client.customers.split(nobody, ["email"], request_id=rid)  # noqa: E731
    elif method == "GetCustomer":
        send = lambda: client.customers.get(subject.customer_id, purpose=purpose, request_id=rid)  # noqa: E731
    elif method == "FindCustomers":
        send = lambda: client.customers.find(  # noqa: E731
            mobile=subject.person.mobile, purpose=purpose, request_id=rid
        )
    elif method == "ListCustomers":
        send = lambda: client.customers.list(page_size=500, purpose=purpose, request_id=rid)  # noqa: E731
    elif method == "GrantConsent":
        return _consent_change(world, subject, "grant", "analytics", STANDARD, cell.role)
    elif method == "WithdrawConsent":
        return _consent_change(world, subject, "withdraw", "analytics", "", cell.role)
    elif method == "ListConsents":
        send = lambda: client.consent.list(subject.customer_id, request_id=rid)  # noqa: E731
    elif method == "GetConsentHistory":
        send = lambda: client.consent.history(subject.customer_id, page_size=1000, request_id=rid)  # noqa: E731
    elif method == "GetKeyStatus":
        send = lambda: client.keys.status(request_id=rid)  # noqa: E731
    elif method == "RotateKek":
        send = lambda: list(client.keys.rotate_kek(request_id=rid))  # noqa: E731
    elif method == "RewrapKeys":
        send = lambda: list(client.keys.rewrap_keys(request_id=rid))  # noqa: E731
    elif method == "SetMinDecryptionVersion":
        send = lambda: client.keys.set_min_decryption_version(1, request_id=rid)  # noqa: E731
    elif method == "QueryEvents":
        send = lambda: list(client.audit.query_events(page_size=AUDIT_PAGE, request_id=rid))  # noqa: E731
    elif method == "VerifyChain":
        send = lambda: client.audit.verify_chain(request_id=rid)  # noqa: E731
    else:
        assert method == "GetCheckpoint", method
        send = lambda: client.audit.get_checkpoint(request_id=rid)  # noqa: E731
    return observe(world, send)


def check_customer(shown: pb.Customer, subject: Subject, clear: frozenset[str]) -> list[str]:
    """A customer in a reply: clear fields hold the stored values, every other set field is masked and listed."""
    problems: list[str] = []
    stored = subject.stored
    if shown.customer_id != subject.customer_id:
        problems.append(f"customer_id {shown.customer_id!r} is not {subject.customer_id!r}")
    must_mask = set_fields(stored) - clear
    if sorted(shown.masked_fields) != sorted(must_mask):
        problems.append(f"masked_fields {sorted(shown.masked_fields)} should be {sorted(must_mask)}")
    for name in FIELDS:
        if name in clear and field_value(shown, name) != field_value(stored, name):
            problems.append(f"{name} should be in clear")
        if name in must_mask and field_value(shown, name) == field_value(stored, name):
            problems.append(f"{name} should be masked but holds the stored value")
    if "gender" in must_mask and shown.gender != pb.GENDER_UNSPECIFIED:
        problems.append("a masked gender must read GENDER_UNSPECIFIED")
    return problems


def check_response(
    world: World, cell: Cell, expected: Expected, reply: Reply
) -> tuple[list[str], dict[Subject, frozenset[str]]]:
    """Problems with an OK reply, and which fields of which subject (by ``id``) it may show in clear."""
    method = cell.rpc.rsplit("/", 1)[1]
    subject = world.state_subject[cell.state.name]
    purpose = cell.state.purpose(cell.role)
    problems: list[str] = []
    clear: dict[Subject, frozenset[str]] = {}
    if not reply.messages and method not in ("RewrapKeys",):
        return ["no response message"], clear
    message = reply.messages[0] if reply.messages else None
    if method == "CreateCustomer":
        target = world.create_subject[cell.state.name, cell.role]
        assert isinstance(message, pb.CreateCustomerResponse)
        world.register(target, message.customer.customer_id)
        problems += check_customer(message.customer, target, ALL_FIELDS)  # the echo of what was sent
        clear[target] = ALL_FIELDS
    elif method == "UpdateCustomer":
        target = world.update_subject[cell.state.name, cell.role]
        assert isinstance(message, pb.UpdateCustomerResponse)
        target.apply_update()
        world.index = CanaryIndex(world.subjects)
        problems += check_customer(message.customer, target, frozenset({"address"}))
        if message.customer.version != 2:
            problems.append(f"version {message.customer.version} after one update of version 1")
        clear[target] = frozenset({"address"})
    elif method == "ImportCustomers":
        assert isinstance(message, pb.ImportCustomersResponse)
        outcomes = [(r.outcome, r.customer_id) for r in message.results]
        if outcomes != [("unchanged", subject.customer_id)]:
            problems.append(f"import of a stored customer's mobile gave {outcomes}")
    elif method in ("GetCustomer", "FindCustomers"):
        assert isinstance(message, pb.GetCustomerResponse | pb.FindCustomersResponse)
        shown = [message.customer] if isinstance(message, pb.GetCustomerResponse) else list(message.customers)
        assert expected.clear is not None
        if len(shown) != 1:
            problems.append(f"{len(shown)} customers instead of one")
        for customer in shown:
            problems += check_customer(customer, subject, expected.clear)
        clear[subject] = expected.clear
    elif method == "ListCustomers":
        assert isinstance(message, pb.ListCustomersResponse)
        seen: set[str] = set()
        per_customer: Counter[str] = Counter()
        for customer in message.customers:
            listed = world.by_id.get(customer.customer_id)
            if listed is None:
                problems.append("lists a customer the test does not know")
                continue
            seen.add(customer.customer_id)
            verdict = read_access(cell.role, purpose, listed.granted, listing=True)
            if not verdict.listed or verdict.clear is None:
                per_customer[f"listed, though {purpose} may not show them ({verdict.label})"] += 1
                continue
            per_customer.update(check_customer(customer, listed, verdict.clear))
            clear[listed] = verdict.clear
        problems += [f"{count} listed customer(s): {problem}" for problem, count in sorted(per_customer.items())]
        wanted = {
            customer_id
            for customer_id, known in world.by_id.items()
            if read_access(cell.role, purpose, known.granted, listing=True).listed
        }
        if expected.listed and subject.customer_id not in seen:
            problems.append("the state's customer is missing from the list")
        if not expected.listed and subject.customer_id in seen:
            problems.append("the state's customer is listed without consent")
        if seen != wanted:
            problems.append(f"lists {len(seen)} customers where {len(wanted)} should be listed")
        if message.next_page_token:
            problems.append("a second page, though every customer fits on one")
    elif method == "GrantConsent":
        assert isinstance(message, consent_pb2.GrantConsentResponse)
        record = message.record
        if (record.customer_id, record.purpose, record.action) != (
            subject.customer_id,
            "analytics",
            consent_pb2.CONSENT_ACTION_GRANT,
        ):
            problems.append("the grant record does not match the request")
    elif method == "WithdrawConsent":
        assert isinstance(message, consent_pb2.WithdrawConsentResponse)
        if not message.records or any(r.action != consent_pb2.CONSENT_ACTION_WITHDRAW for r in message.records):
            problems.append("the withdrawal records do not match the request")
    elif method == "ListConsents":
        assert isinstance(message, consent_pb2.ListConsentsResponse)
        scopes = {consent_pb2.CONSENT_SCOPE_STANDARD: STANDARD, consent_pb2.CONSENT_SCOPE_SENSITIVE: SENSITIVE_SCOPE}
        states = {(status.purpose, scopes.get(status.scope, "?")): status.state for status in message.consents}
        if set(states) != CONSENT_SLOTS:
            problems.append(f"consents listed for {sorted(states)}, expected {sorted(CONSENT_SLOTS)}")
        for slot, state in states.items():
            if state != subject.consent_state(slot):
                problems.append(f"consent {slot} is {state}, expected {subject.consent_state(slot)}")
    elif method == "GetConsentHistory":
        assert isinstance(message, consent_pb2.GetConsentHistoryResponse)
        if len(message.records) != subject.records:
            problems.append(f"{len(message.records)} consent records, expected {subject.records}")
    elif method == "GetKeyStatus":
        assert isinstance(message, keys_pb2.GetKeyStatusResponse)
        if message.latest_version < 1:
            problems.append("no KEK version")
    elif method in ("RotateKek", "RewrapKeys"):
        last = reply.messages[-1] if reply.messages else None
        if method == "RotateKek" and not (isinstance(last, keys_pb2.RotateKekResponse) and last.progress.finished):
            problems.append("rotation did not report a finished rewrap")
        if isinstance(last, keys_pb2.RewrapKeysResponse) and not last.progress.finished:
            problems.append("rewrap did not finish")
    elif method == "SetMinDecryptionVersion":
        assert isinstance(message, keys_pb2.SetMinDecryptionVersionResponse)
        if message.min_decryption_version != 1:
            problems.append(f"minimum decryption version {message.min_decryption_version}, expected 1")
    elif method == "QueryEvents":
        if not any(isinstance(m, audit_pb2.QueryEventsResponse) and m.events for m in reply.messages):
            problems.append("the audit log came back empty")
    elif method == "VerifyChain":
        assert isinstance(message, audit_pb2.VerifyChainResponse)
        if not message.intact:
            problems.append(f"audit chain not intact: {message.problem}")
    elif method == "GetCheckpoint":
        assert isinstance(message, audit_pb2.GetCheckpointResponse)
        if message.checkpoint.seq < 1 or not message.checkpoint.signature:
            problems.append("empty checkpoint")
    return problems, clear


def check_refusal(expected: Expected, reply: Reply) -> list[str]:
    problems = list(reply.problems)
    if reply.messages:
        problems.append("a refused call returned a message")
    if reply.status is None:
        problems.append("no grpc-status-details-bin trailer")
    if expected.reason and expected.reason not in reply.reasons():
        problems.append(f"ErrorInfo reasons {reply.reasons()}, expected {expected.reason}")
    if expected.code is INVALID and "purpose" not in reply.violations():
        problems.append(f"BadRequest names {reply.violations()}, expected the purpose")
    return problems


class CanaryIndex:
    """Every canary of every subject, indexed by its first four bytes, so that a reply is scanned in time
    proportional to its length rather than to the number of canaries (thousands, in every reply)."""

    def __init__(self, subjects: Iterable[Subject]) -> None:
        self.needles: dict[str, bytes] = {}
        self.owners: dict[str, list[tuple[Subject, str]]] = {}
        self._by_prefix: dict[bytes, dict[str, bytes]] = {}
        for subject in subjects:
            for name, found in subject.canaries.items():
                for label, needle in found.items():
                    # Replies are serialized protobuf: MACs, signatures and varints. A needle of 4 or 5 bytes (a
                    # two-character name in UTF-16 or GB18030) matched an audit page's bytes by chance, so the canary
                    # scan's rule applies; such a name is still looked for in UTF-8, the form protobuf carries text in.
                    encoding = label.split("/", 1)[1].split(":", 1)[0]
                    if not long_enough(encoding, needle):
                        continue
                    self.needles[label] = needle
                    self.owners.setdefault(label, []).append((subject, name))
                    self._by_prefix.setdefault(needle[:4], {})[label] = needle

    def found_in(self, blob: bytes) -> list[str]:
        """The labels of the canaries in ``blob``: ``find_in_bytes`` over those whose first four bytes occur in it."""
        candidates: dict[str, bytes] = {}
        for start in range(len(blob) - 3):
            group = self._by_prefix.get(blob[start : start + 4])
            if group:
                candidates.update(group)
        return find_in_bytes(blob, candidates)


def leaks(world: World, reply: Reply, clear: Mapping[Subject, frozenset[str]]) -> list[str]:
    """Canary values in the reply that the caller may not see in clear (a value legitimately shown elsewhere in the
    same reply is not counted: it cannot be told apart)."""
    allowed = b"\x00".join(
        needle for subject, names in clear.items() for name in names for needle in subject.canaries[name].values()
    )
    return [
        label
        for label in world.index.found_in(reply.blob())
        if any(name not in clear.get(subject, frozenset()) for subject, name in world.index.owners[label])
        and world.index.needles[label] not in allowed
    ]


Snapshot = Callable[[World, Cell], object]


def _no_customer_with_mobile(world: World, cell: Cell) -> object:
    target = world.create_subject[cell.state.name, cell.role]
    client, request_id = world.caller(PROBE + "-dpo")
    found = client.customers.find(mobile=target.person.mobile, purpose="dsar", request_id=request_id)
    return len(found.customers)


def _stored_address(world: World, cell: Cell) -> object:
    target = world.update_subject[cell.state.name, cell.role]
    client, request_id = world.caller(PROBE + "-dpo")
    read = client.customers.get(target.customer_id, purpose="dsar", request_id=request_id)
    return (read.customer.version, read.customer.address)


def _consent_records(world: World, cell: Cell) -> object:
    subject = world.state_subject[cell.state.name]
    client, request_id = world.caller(PROBE + "-dpo")
    history = client.consent.history(subject.customer_id, page_size=1000, request_id=request_id)
    return len(history.records)


def _key_versions(world: World, cell: Cell) -> object:
    client, request_id = world.caller(PROBE + "-admin")
    status = client.keys.status(request_id=request_id)
    return (status.latest_version, status.min_decryption_version, tuple(status.versions))


# Writes whose refusal must leave no trace: a snapshot before and after the refused call must agree.
SIDE_EFFECTS: dict[str, Snapshot] = {
    CUSTOMER + "CreateCustomer": _no_customer_with_mobile,
    CUSTOMER + "UpdateCustomer": _stored_address,
    CONSENTS + "GrantConsent": _consent_records,
    CONSENTS + "WithdrawConsent": _consent_records,
    KEYS + "RotateKek": _key_versions,
    KEYS + "RewrapKeys": _key_versions,
    KEYS + "SetMinDecryptionVersion": _key_versions,
}


@dataclass
class Outcome:
    cell: Cell
    expected: Expected
    reply: Reply
    problems: list[str]


def run_cell(world: World, cell: Cell) -> Outcome:
    subject = world.state_subject[cell.state.name]
    expected = expected_outcome(cell.rpc, cell.role, cell.state.purpose(cell.role), subject.granted)
    snapshot = SIDE_EFFECTS.get(cell.rpc)
    before = snapshot(world, cell) if snapshot and expected.code is not OK else None
    reply = invoke(world, cell)
    problems: list[str] = []
    clear: dict[Subject, frozenset[str]] = {}
    if reply.code is not expected.code:
        problems.append(f"{reply.code.name} ({reply.details!r}), expected {expected.label}")
    elif reply.code is OK:
        found, clear = check_response(world, cell, expected, reply)
        problems += found
    else:
        problems += check_refusal(expected, reply)
    if snapshot and expected.code is not OK and snapshot(world, cell) != before:
        problems.append("the refused call changed something")
    leaked = leaks(world, reply, clear)
    if leaked:
        forms = sorted({label.split(":", 1)[0] for label in leaked})
        values = {label.split(":", 1)[1] for label in leaked}
        problems.append(f"leaks {len(values)} value(s) that are not in clear for this caller, as {', '.join(forms)}")
    return Outcome(cell, expected, reply, problems)


def run_matrix(vault: Vault, address: str) -> tuple[World, list[Outcome]]:
    world = build_world(vault, address)
    cells = list(CELLS)
    random.Random(SHUFFLE_SEED).shuffle(cells)
    return world, [run_cell(world, cell) for cell in cells]


# ---------------------------------------------------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------------------------------------------------


def test_the_matrix_covers_every_rpc_role_and_state() -> None:
    assert len(RPC_ROLES) == 19
    assert len(CELLS) == len(RPC_ROLES) * len(ROLES) * len(STATES)
    assert len({cell.name for cell in CELLS}) == len(CELLS)
    for state in STATES:
        assert set(state.purposes) == set(ROLES), state.name


def test_every_method_of_the_four_services_is_in_the_matrix() -> None:
    """A method added to one of these services must get its row in ``RPC_ROLES``, and so its cells."""
    services = (
        (pb, "CustomerService"),
        (consent_pb2, "ConsentService"),
        (keys_pb2, "KeyService"),
        (audit_pb2, "AuditService"),
    )
    methods = [method for module, name in services for method in module.DESCRIPTOR.services_by_name[name].methods]
    assert {f"/{m.containing_service.full_name}/{m.name}" for m in methods} == set(RPC_ROLES)
    streaming = {f"/{m.containing_service.full_name}/{m.name}" for m in methods if m.server_streaming}
    assert streaming == {KEYS + "RotateKek", KEYS + "RewrapKeys", AUDIT + "QueryEvents"}  # invoke() streams these


def test_the_oracle_restates_the_specification() -> None:
    """Hand-picked cells, read straight off the specification, so that a slip in the tables above is caught too."""
    get, lister = CUSTOMER + "GetCustomer", CUSTOMER + "ListCustomers"
    sms = {("marketing_sms", STANDARD)}
    analytics = {("analytics", STANDARD)}
    assert expected_outcome(get, "analyst", "analytics", analytics) == Expected(DENIED, ROLE_NOT_ALLOWED)
    assert expected_outcome(get, "analyst", "", ()) == Expected(DENIED, ROLE_NOT_ALLOWED)  # role before purpose
    assert expected_outcome(get, "service", "", ()).code is INVALID
    assert expected_outcome(get, "marketing", "customer_service", ()) == Expected(DENIED, PURPOSE_NOT_ALLOWED)
    assert expected_outcome(get, "marketing", "marketing_sms", ()) == Expected(FAILED, CONSENT_REQUIRED)
    assert expected_outcome(lister, "marketing", "marketing_sms", ()) == Expected(OK, listed=False)
    assert expected_outcome(lister, "support", "customer_service", ()) == Expected(DENIED, ROLE_NOT_ALLOWED)

    def clear(role: str, purpose: str, consents: Iterable[tuple[str, str]] = ()) -> set[str]:
        return set(expected_outcome(get, role, purpose, consents).clear or ())

    assert clear("marketing", "marketing_sms", sms) == {"name", "mobile"}
    assert clear("marketing", "marketing_email", {("marketing_email", STANDARD)}) == {"name", "email"}
    assert clear("dpo", "dsar") == set(FIELDS)  # the national id without separate consent: a legal obligation
    assert clear("service", "customer_service") == set(FIELDS) - {"national_id"}
    assert clear("service", "identity_verification") == {"name", "birth_date"}
    sensitive = {("identity_verification", SENSITIVE_SCOPE)}
    assert clear("service", "identity_verification", sensitive) == {"name", "national_id", "birth_date"}
    assert clear("support", "identity_verification", sensitive) == {"name", "birth_date"}  # role limit
    for role in ("auditor", "admin"):
        assert not any(role in spec.roles for spec in PURPOSES.values())
    slots = {
        ("marketing_sms", STANDARD),
        ("marketing_email", STANDARD),
        ("analytics", STANDARD),
        ("identity_verification", SENSITIVE_SCOPE),
    }
    assert slots == CONSENT_SLOTS


def test_access_matrix(vault: Vault, address: str) -> None:
    world, outcomes = run_matrix(vault, address)
    try:
        failures = [f"{o.cell.name}: {'; '.join(o.problems)}" for o in outcomes if o.problems]
        assert not failures, f"{len(failures)} of {len(outcomes)} cells wrong:\n" + "\n".join(sorted(failures))

        # Acceptance 4, checked from the replies alone. The analyst never receives a plaintext field value of anyone.
        for outcome in outcomes:
            if outcome.cell.role == "analyst":
                assert world.index.found_in(outcome.reply.blob()) == [], outcome.cell.name
                assert outcome.reply.code is DENIED, outcome.cell.name
        # The auditor reads and verifies the audit log, and nothing else.
        auditor = {(o.cell.state.name, o.cell.rpc): o.reply.code for o in outcomes if o.cell.role == "auditor"}
        assert {key for key, code in auditor.items() if code is OK} == {
            (state.name, rpc) for state in STATES for rpc in AUDIT_RPCS
        }
        assert {code for key, code in auditor.items() if key[1] not in AUDIT_RPCS} == {DENIED}
        # The whole audit log, as the auditor reads it, holds no personal value of anyone.
        reader, request_id = world.caller("auditor")
        log = observe(world, lambda: list(reader.audit.query_events(page_size=100_000, request_id=request_id)))
        assert log.code is OK
        assert sum(len(m.events) for m in log.messages if isinstance(m, audit_pb2.QueryEventsResponse)) > len(outcomes)
        assert world.index.found_in(log.blob()) == []
        assert world.vault.audit_verifier.verify().intact
    finally:
        world.client.close()
