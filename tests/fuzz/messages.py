"""Every RPC, found in the generated descriptors, and the requests the fuzz target sends to it.

A request is built in one of four modes, chosen by the fuzzer's bytes:

- ``raw``: the fuzzer's bytes are the serialized message, whatever they decode to (or fail to);
- ``merged``: a valid seed followed by the fuzzer's bytes; protobuf merges the second message into the first, so the
  fuzzer overrides some fields of a request that otherwise passes validation, and reaches the code behind it;
- ``hostile``: a valid seed with one string field (any depth, repeated element, map key or value) replaced by hostile
  text — oversized, control characters, bidi overrides, zero-width characters, look-alike digits — or invalid UTF-8;
- ``seed``: the valid seed itself.

Seeds are filled from the descriptors by field name (``customer_id`` → a live customer, ``mobile`` → a synthetic
person's mobile, ``purpose`` → a purpose the caller's role may use, ...), so an RPC added to the protos is fuzzed
without an edit here; a name the table does not know gets a plain printable value.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

import piivault.v1
from tests.support.people import People, Person

MODES = ("raw", "merged", "hostile", "seed")


# Where the builder's decisions come from: the fuzzer's bytes while fuzzing, a PRNG while seeding the pools.
# ``choose(low, high)`` is inclusive, like FuzzedDataProvider.ConsumeIntInRange.
Choose = Callable[[int, int], int]


@dataclass(frozen=True)
class Rpc:
    path: str  # "/piivault.v1.CustomerService/CreateCustomer", as on the wire
    service: str
    name: str
    request: type[Message]
    response: type[Message]
    client_streaming: bool
    server_streaming: bool


def discover() -> list[Rpc]:
    """Every method of every service in every generated ``*_pb2`` module of ``piivault.v1``."""
    rpcs: list[Rpc] = []
    for info in sorted(pkgutil.iter_modules(piivault.v1.__path__), key=lambda module: module.name):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"piivault.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpcs.append(
                    Rpc(
                        path=f"/{service.full_name}/{method.name}",
                        service=service.full_name,
                        name=method.name,
                        request=GetMessageClass(method.input_type),
                        response=GetMessageClass(method.output_type),
                        client_streaming=method.client_streaming,
                        server_streaming=method.server_streaming,
                    )
                )
    return rpcs


def vocabulary(rpcs: list[Rpc]) -> frozenset[str]:
    """Names from the schema (fields, messages, enum values, methods): a status may repeat them without echoing."""
    words: set[str] = set()

    def walk(descriptor: Any) -> None:
        if descriptor.full_name in words:
            return
        words.update((descriptor.name, descriptor.full_name))
        for item in descriptor.fields:
            words.add(item.name)
            if item.enum_type is not None:
                words.update(value.name for value in item.enum_type.values)
            if item.message_type is not None:
                walk(item.message_type)

    for rpc in rpcs:
        words.update((rpc.path, rpc.name, rpc.service))
        walk(rpc.request.DESCRIPTOR)
    return frozenset(words)


# Fuzzed values that a status, log line or audit row may legitimately repeat: identifiers the server itself issued,
# lower-case words (field, purpose, role and outcome names the fuzzer learns from comparisons), short strings.
_ISSUED_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z]{2,8}_[0-9a-f]{8,}|[0-9a-f]{16,}"
)
_WORDS = re.compile(r"[a-z_.\- ]+")


def echo_candidates(values: Iterator[str], vocabulary: frozenset[str]) -> list[str]:
    """The values that must never be repeated back: everything personal-data shaped (digits, '@', non-ASCII text)."""
    found: list[str] = []
    for value in values:
        text = value.strip()
        wide = not text.isascii()
        if len(text) < (2 if wide else 6) or text in vocabulary:
            continue
        if _ISSUED_ID.fullmatch(text) or _WORDS.fullmatch(text):
            continue
        found.append(text)
    return found


def _listed(message: Message) -> list[tuple[Any, Any]]:
    """The fields set in a message (descriptors as ``Any``: protobuf's stubs type them two incompatible ways)."""
    return list(message.ListFields())


def _is_map(descriptor: Any) -> bool:
    return descriptor.message_type is not None and bool(descriptor.message_type.GetOptions().map_entry)


def strings_of(message: Message) -> Iterator[str]:
    """Every string value in a message, at any depth (map keys excluded: they are names, echoed in field paths)."""
    for descriptor, value in _listed(message):
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            yield from (value if descriptor.is_repeated else [value])
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(descriptor):
                entry_value = descriptor.message_type.fields_by_name["value"]
                if entry_value.type == FieldDescriptor.TYPE_STRING:
                    yield from value.values()
                elif entry_value.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in value.values():
                        yield from strings_of(item)
            elif descriptor.is_repeated:
                for item in value:
                    yield from strings_of(item)
            else:
                yield from strings_of(value)


@dataclass
class Pool:
    """Live objects a seed can name: customers (with the synthetic person each was made from) and DSAR requests."""

    people: list[Person] = field(default_factory=list)
    customer_ids: list[str] = field(default_factory=list)
    dsar_ids: list[str] = field(default_factory=list)
    fresh: People = field(default_factory=lambda: People(seed=11, first_serial=7_000_000))
    purposes: dict[str, list[str]] = field(default_factory=dict)  # role → purposes it may use
    consent_purposes: list[str] = field(default_factory=list)  # purposes whose legal basis is consent

    def add_customer(self, person: Person, customer_id: str, limit: int = 32) -> None:
        self.people.append(person)
        self.customer_ids.append(customer_id)
        del self.people[:-limit], self.customer_ids[:-limit]

    def add_dsar(self, request_id: str, limit: int = 64) -> None:
        self.dsar_ids.append(request_id)
        del self.dsar_ids[:-limit]


_PERSON_FIELDS = frozenset({"name", "mobile", "email", "national_id", "birth_date", "address", "member_id"})
_OUTPUT_ONLY = frozenset({"create_time", "update_time", "masked_fields", "version"})
_NOTICE_SHA256 = hashlib.sha256("隐私政策 v1".encode()).hexdigest()
_FIXED_TEXT = {
    "source": "pos",
    "store_id": "S001",
    "sku": "SKU-1",
    "currency": "CNY",
    "payment_method": "card",
    "coupon": "C-1",
    "notice_version": "2024-01",
    "notice_sha256": _NOTICE_SHA256,
    "evidence_ref": "paper-form-1",
    "text": "the subject withdrew the request",
    "principal": "fuzz-service",
    "outcome": "ok",
    "fields": "email",
    "paths": "name",
}
_FIXED_INT = {
    "page_size": 10,
    "quantity": 1,
    "unit_price_minor": 100,
    "amount_minor": 100,
    "version": 1,
    "expected_version": 1,
    "row": 1,
}
_SKIPPED_TEXT = frozenset({"page_token", "cursor", "return_of_order_id", "action"})


class SeedBuilder:
    """Fills a request message of an RPC with values that pass validation (as far as a name can tell)."""

    def __init__(self, pool: Pool, choose: Choose) -> None:
        self.pool = pool
        self.choose = choose
        self.last_person: Person | None = None

    def pick(self, items: list[Any]) -> Any:
        return items[self.choose(0, len(items) - 1)]

    def build(self, rpc: Rpc, role: str) -> Message:
        message = rpc.request()
        people = self.pool.people
        # Creates and imports get a person never stored (so they can succeed); everything else one that is.
        creating = rpc.name.startswith(("Create", "Import")) or not people
        person = self.pool.fresh.next() if creating else self.pool.people[self.choose(0, len(people) - 1)]
        self.last_person = person
        self._fill(message, rpc, role, person, depth=0)
        return message

    def _fill(self, message: Message, rpc: Rpc, role: str, person: Person, depth: int) -> None:
        described: Any = message.DESCRIPTOR
        chosen: dict[str, str] = {}
        for oneof in described.oneofs:
            chosen[oneof.name] = self.pick([member.name for member in oneof.fields])
        for item in described.fields:
            oneof = item.containing_oneof
            if oneof is not None and chosen.get(oneof.name) != item.name:
                continue
            if item.name in _OUTPUT_ONLY and described.name == "Customer":
                continue
            self._fill_field(message, item, rpc, role, person, depth)

    def _fill_field(self, message: Message, item: Any, rpc: Rpc, role: str, person: Person, depth: int) -> None:
        target: Any = getattr(message, item.name)
        if item.type == FieldDescriptor.TYPE_MESSAGE:
            kind = item.message_type.full_name
            if _is_map(item):
                target["tier"] = "gold"
            elif kind == "google.protobuf.Timestamp":
                target.GetCurrentTime()
                target.seconds -= 3600
            elif kind == "google.protobuf.FieldMask":
                target.paths.append(self.pick(sorted(_PERSON_FIELDS - {"birth_date"})))
            elif depth < 4:
                child = target.add() if item.is_repeated else target
                self._fill(child, rpc, role, person, depth + 1)
            return
        value: Any
        if item.type == FieldDescriptor.TYPE_STRING:
            value = self._text(item.name, rpc, role, person)
            if value is None:
                return
        elif item.type == FieldDescriptor.TYPE_BYTES:
            value = hashlib.sha256(item.name.encode()).digest()
        elif item.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif item.type == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in item.enum_type.values if v.number != 0] or [0]
            value = self.pick(numbers)
        else:
            value = _FIXED_INT.get(item.name, 1)
        if item.is_repeated:
            target.append(value)
        else:
            setattr(message, item.name, value)

    def _text(self, name: str, rpc: Rpc, role: str, person: Person) -> str | None:
        ids = self.pool.customer_ids
        if name in _PERSON_FIELDS:
            return str(getattr(person, name))
        if name in ("customer_id", "survivor_id", "duplicate_id"):
            return self.pick(ids) if ids else str(uuid.uuid4())
        if name == "request_id":
            # A DSAR request's id in DsarService; elsewhere an idempotency key, new for every seed.
            if rpc.service.endswith("DsarService") and self.pool.dsar_ids:
                return str(self.pick(self.pool.dsar_ids))
            return uuid.uuid4().hex
        if name == "purpose":
            if rpc.service.endswith("ConsentService") and self.pool.consent_purposes:
                return str(self.pick(self.pool.consent_purposes))
            return str(self.pick(self.pool.purposes.get(role) or ["customer_service"]))
        if name in ("id", "external_id"):
            return f"P-{person.member_id}"
        if name == "order_id":
            return "O-" + uuid.uuid4().hex[:12]
        if name in _SKIPPED_TEXT:
            return None
        return _FIXED_TEXT.get(name, "fuzz")


# --- hostile text -------------------------------------------------------------------------------------------------

CONTROL = ("\x00", "\x07", "\x1b[31m", "\r\n", "\n", "\x7f", "\x85", "\x1f", "\x08", "\u2028")
BIDI = ("\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f")
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u180e", "\u00ad", "\u034f")
LOOK_ALIKE = ("١٣٩", "१३९", "１３９", "𝟏𝟑𝟗", "＠", "\u0301", "\ufffd", "𠀀")
OVERSIZED = (65, 257, 4_097, 65_537, 1_048_577)
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",  # a surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xe6\x9d",  # truncated
    b"\x80",
    b"\xf8\x88\x80\x80\x80",
)
HOSTILE_KINDS = ("control", "bidi", "zero_width", "look_alike", "oversized", "invalid_utf8")


@dataclass
class Slot:
    """One string in a message that a hostile value can replace."""

    path: str
    value: str
    assign: Callable[[str], None]


def slots(message: Message, prefix: str = "") -> list[Slot]:
    found: list[Slot] = []
    for descriptor, value in _listed(message):
        path = prefix + descriptor.name
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            if descriptor.is_repeated:
                for index, text in enumerate(value):
                    found.append(Slot(f"{path}[{index}]", text, _list_setter(value, index)))
            else:
                found.append(Slot(path, value, _attr_setter(message, descriptor.name)))
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(descriptor):
                for key in list(value):
                    if isinstance(value[key], str):
                        found.append(Slot(f"{path}[{key}]", value[key], _map_value_setter(value, key)))
                        found.append(Slot(f"{path}.key", key, _map_key_setter(value, key)))
            elif descriptor.is_repeated:
                for index, item in enumerate(value):
                    found.extend(slots(item, f"{path}[{index}]."))
            else:
                found.extend(slots(value, path + "."))
    return found


def _attr_setter(message: Message, name: str) -> Callable[[str], None]:
    return lambda text: setattr(message, name, text)


def _list_setter(container: Any, index: int) -> Callable[[str], None]:
    def assign(text: str) -> None:
        container[index] = text

    return assign


def _map_value_setter(mapping: Any, key: str) -> Callable[[str], None]:
    def assign(text: str) -> None:
        mapping[key] = text

    return assign


def _map_key_setter(mapping: Any, key: str) -> Callable[[str], None]:
    def assign(text: str) -> None:
        mapping[text] = mapping.pop(key)

    return assign


@dataclass
class Built:
    """A serialized request and the string values in it that must never come back in a status, log or audit row."""

    payload: bytes
    values: list[str]


def hostile(seed: Message, choose: Choose) -> Built:
    """The seed with one string replaced by hostile text or invalid UTF-8 (spliced into the serialized bytes)."""
    found = slots(seed)
    if not found:
        return Built(seed.SerializeToString(), list(strings_of(seed)))
    slot = found[choose(0, len(found) - 1)]
    base = slot.value or "13900000001"
    kind = HOSTILE_KINDS[choose(0, len(HOSTILE_KINDS) - 1)]
    if kind == "invalid_utf8":
        bad = INVALID_UTF8[choose(0, len(INVALID_UTF8) - 1)]
        where = choose(0, len(base))
        raw = base[:where].encode() + bad + base[where:].encode()
        raw += b"-" * max(0, 12 - len(raw))  # long enough for a marker that cannot occur elsewhere by chance
        # A same-length ASCII marker, replaced in the serialized bytes: the length prefix stays right.
        marker = ("`" + uuid.uuid4().hex * (len(raw) // 32 + 1))[: len(raw)]
        slot.assign(marker)
        payload = seed.SerializeToString().replace(marker.encode(), raw, 1)
        return Built(payload, [*strings_of(seed), base])
    if kind == "oversized":
        size = OVERSIZED[choose(0, len(OVERSIZED) - 1)]
        text = (base * (size // len(base) + 1))[:size]
    else:
        pieces = {"control": CONTROL, "bidi": BIDI, "zero_width": ZERO_WIDTH, "look_alike": LOOK_ALIKE}[kind]
        piece = pieces[choose(0, len(pieces) - 1)]
        text = base
        for _ in range(choose(1, 3)):
            where = choose(0, len(text))
            text = text[:where] + piece + text[where:]
    slot.assign(text)
    return Built(seed.SerializeToString(), [*strings_of(seed), base])


def decoded_strings(rpc: Rpc, payload: bytes) -> list[str]:
    """The string values of a payload as the server will see them (none if it does not parse)."""
    message = rpc.request()
    try:
        message.ParseFromString(payload)
    except (DecodeError, ValueError, RuntimeError):
        return []
    return list(strings_of(message))
