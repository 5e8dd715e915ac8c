"""The customer service: create, read, update, find and list customers whose personal fields are encrypted.

Every write is one transaction: the customer row, its blind indexes and its idempotency record commit together or not
at all. Encryption and key wrapping happen before the transaction opens, so a key-provider failure writes nothing and
the write lock is held only for the SQL itself.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import OperationalError

from audit.events import AuditDraft, Caller
from audit.log import AuditLog
from consent import repository as consent_repo
from consent.decisions import AccessPolicy, is_minor
from consent.models import NO_CONSENT, Standing
from consent.purposes import Purpose
from vault import cursors
from vault.auth.ratelimit import LookupLimiter
from vault.crypto import Mac, SecretKey
from vault.customers import identifiers as ids
from vault.customers import repository as repo
from vault.customers import sealing
from vault.customers.masking import mask_profile
from vault.customers.models import (
    IDENTIFIER_FIELDS,
    PERSONAL_FIELDS,
    Customer,
    ExternalRef,
    IdentifierKind,
    Profile,
    encode_field,
    is_empty,
)
from vault.customers.sealing import DEK_VERSION
from vault.customers.timing import LatencyFloor
from vault.customers.validation import canonical_profile, require_identifier
from vault.errors import (
    AlreadyExists,
    FailedPrecondition,
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    PiivaultError,
    ProcessingRestricted,
    Unavailable,
    VersionConflict,
)
from vault.idempotency import request_key as request_key_of
from vault.keys.data_keys import DataKeys
from vault.keys.provider import WrappedKey
from vault.purchases import repository as purchases_repo
from vault.storage.db import Database
from vault.storage.group_commit import GroupCommitter

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_PAGE_TOKEN_PREFIX = "c1:"  # noqa: S105 - pagination cursor version, not a secret
_CUSTOMER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_INDEX_FIELD = {
    IdentifierKind.MOBILE: "mobile",
    IdentifierKind.EMAIL: "email",
    IdentifierKind.NATIONAL_ID: "national_id",
    IdentifierKind.MEMBER_ID: "member_id",
    IdentifierKind.EXTERNAL_REF: "external_refs",
}
_FIND_CANONICAL: dict[IdentifierKind, Callable[[str], str]] = {
    IdentifierKind.MOBILE: ids.canonical_mobile,
    IdentifierKind.EMAIL: ids.canonical_email,
    IdentifierKind.NATIONAL_ID: ids.canonical_national_id,
    IdentifierKind.MEMBER_ID: ids.canonical_member_id,
}


@dataclass(frozen=True, slots=True)
class Page:
    customers: list[Customer]
    next_page_token: str


class CustomerService:
    def __init__(
        self,
        database: Database,
        writer: GroupCommitter,
        audit: AuditLog,
        data_keys: DataKeys,
        blind_index: Mac,
        request_mac: Mac,
        access: AccessPolicy,
        lookups: LookupLimiter,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        find_floor: LatencyFloor | None = None,
    ) -> None:
        self._access = access
        self._lookups = lookups
        self._find_floor = find_floor or LatencyFloor(0)
        self._database = database
        self._writer = writer
        self._audit = audit
        self._keys = data_keys
        self._blind_index = blind_index
        self._request_mac = request_mac
        self._clock = clock
        self._decoy = sealing.Decoy.make(clock())

    # -- create ---------------------------------------------------------------------------------------------------

    def create(self, caller: Caller, request_id: str, raw: Profile) -> Customer:
        request_key = request_key_of(self._request_mac, "create-request-id", caller.principal, request_id)
        profile = canonical_profile(raw)
        require_identifier(profile)
        fingerprint = self._request_mac.digest("create-body", _fingerprint_text(profile))
        digests = self._digests(profile)
        customer_id = str(uuid.uuid4())
        dek, wrapped = self._keys.new_key()
        now = self._clock()
        values: dict[str, Any] = {
            "customer_id": customer_id,
            "version": 1,
            "wrapped_dek": wrapped.blob,
            "kek_version": wrapped.kek_version,
            "dek_version": DEK_VERSION,
            "create_time": now,
            "update_time": now,
            **sealing.seal(dek, customer_id, profile, PERSONAL_FIELDS),
        }

        rows = repo.customer_inserts(values, customer_id, digests)
        if request_key is not None:
            idempotency = {"key_digest": request_key, "request_digest": fingerprint, "customer_id": customer_id}
            rows = repo.with_idempotency(rows, {**idempotency, "create_time": now})
        event = AuditDraft.of(caller, "ok", (customer_id,), _fields_of(profile))
        try:
            self._writer.submit(rows, (event,))  # the customer and its audit event commit together
        except SqlIntegrityError:
            # The happy path runs no pre-checks: unique keys decide, and only a loser pays for finding out why.
            return self._explain_conflict(caller, request_key, fingerprint, digests, profile)
        except OperationalError:
            raise Unavailable() from None
        self._keys.cache.put(customer_id, wrapped.blob, dek)
        return Customer(customer_id, 1, profile, now, now)

    def create_many(
        self,
        caller: Caller,
        profiles: Sequence[Profile],
        matches: Sequence[Sequence[tuple[str, ...]]] = (),
        known: dict[tuple[IdentifierKind, str], bytes] | None = None,
    ) -> list[Customer] | None:
        """Create customers from canonical profiles (validated by the caller) in one transaction, each with its own
        audit event; None when an identifier turned out to be taken (nothing is written then; create them one by one
        to learn which). ``matches[i]``: for each further import row merged into profile ``i`` before it was created,
        the fields that row filled — each is audited like a row matched against a stored customer. ``known``: blind
        index digests computed already (by ``owners_of_many`` for the same rows), by identifier."""
        if not profiles:
            return []
        now = self._clock()
        customers: list[Customer] = []
        customer_rows: list[dict[str, Any]] = []
        index_rows: list[dict[str, Any]] = []
        events: list[AuditDraft] = []
        keys: list[tuple[str, str, SecretKey]] = []
        for profile in profiles:
            require_identifier(profile)
            customer_id = str(uuid.uuid4())
            dek, wrapped = self._keys.new_key()
            customer_rows.append(
                {
                    "customer_id": customer_id,
                    "version": 1,
                    "wrapped_dek": wrapped.blob,
                    "kek_version": wrapped.kek_version,
                    "dek_version": DEK_VERSION,
                    "create_time": now,
                    "update_time": now,
                    **sealing.seal(dek, customer_id, profile, PERSONAL_FIELDS),
                }
            )
            index_rows += [
                {"digest": digest, "kind": kind.value, "customer_id": customer_id}
                for kind, digest in self._digests(profile, known)
            ]
            events.append(AuditDraft.of(caller, "ok", (customer_id,), _fields_of(profile)))
            if matches:
                events += [AuditDraft.of(caller, "ok", (customer_id,), filled) for filled in matches[len(keys)]]
            keys.append((customer_id, wrapped.blob, dek))
            customers.append(Customer(customer_id, 1, profile, now, now))
        try:
            self._writer.submit(repo.bulk_inserts(customer_rows, index_rows), tuple(events))
        except SqlIntegrityError:
            return None
        except OperationalError:
            raise Unavailable() from None
        for customer_id, blob, dek in keys:
            self._keys.cache.put(customer_id, blob, dek)
        return customers

    def _explain_conflict(
        self,
        caller: Caller,
        request_key: bytes | None,
        fingerprint: bytes,
        digests: Sequence[tuple[IdentifierKind, bytes]],
        sent: Profile,
    ) -> Customer:
        with self._database.read() as connection:
            existing = None if request_key is None else repo.get_idempotency(connection, request_key)
            if existing is None:
                self._refuse_taken(connection, digests, customer_id="")
        if existing is not None:
            if bytes(existing.request_digest) != fingerprint:
                raise IdempotencyConflict()
            return self._replay(caller, existing.customer_id, sent)
        raise Unavailable()  # a unique key clashed but nothing explains it: a random-id collision; the caller retries

    def _replay(self, caller: Caller, customer_id: str, sent: Profile) -> Customer:
        """The answer to a retried create: what the request sent (its body matched the first attempt's), never the
        customer as stored now — others may have added fields since. Audited like the first attempt."""
        with self._database.read() as connection:
            row = repo.get_row(connection, customer_id)
        if row is None:
            raise NotFound()  # created, then erased
        if row.restricted:
            raise ProcessingRestricted((customer_id,))
        self._audit.record(AuditDraft.of(caller, "ok", (customer_id,), _fields_of(sent)))
        return Customer(customer_id, row.version, sent, row.create_time, row.update_time)

    def _refuse_taken(
        self, connection: Connection, digests: Sequence[tuple[IdentifierKind, bytes]], customer_id: str
    ) -> None:
        taken = repo.owners(connection, digests)
        for kind, digest in digests:
            owner = taken.get((kind.value, digest))
            if owner is not None and owner != customer_id:
                raise AlreadyExists(f"customer.{_INDEX_FIELD[kind]}", owner)

    # -- read -----------------------------------------------------------------------------------------------------

    def get(self, caller: Caller, customer_id: str) -> Customer:
        purpose = self._access.purpose_of(caller)
        _check_customer_id(customer_id, "customer_id")
        with self._database.read_driver() as reader:
            row = repo.fetch_row(reader, customer_id)
        if row is None:
            raise NotFound()
        if row.restricted:
            raise ProcessingRestricted((customer_id,))
        standings = self._standings_of(purpose, [customer_id])
        return self._disclose(caller, purpose, self._decrypt_rows([row]), standings)[0]

    def open(self, customer_id: str) -> tuple[Customer, SecretKey]:
        """The decrypted customer and its data key, for other services of the vault (no disclosure, no audit)."""
        _, customer, dek = self.load(customer_id)
        return customer, dek

    def _standings_of(self, purpose: Purpose, customer_ids: list[str]) -> dict[str, Standing]:
        """``_standings`` in a read of its own (none when the purpose does not consult consent)."""
        if not customer_ids or not self._access.consults_consent(purpose):
            return {}  # no read opened for nothing
        with self._database.read() as connection:
            return consent_repo.standings(connection, customer_ids, purpose.name)

    def _standings(self, connection: Connection, purpose: Purpose, customer_ids: list[str]) -> dict[str, Standing]:
        if not customer_ids or not self._access.consults_consent(purpose):
            return {}
        return consent_repo.standings(connection, customer_ids, purpose.name)

    def _disclose(
        self,
        caller: Caller,
        purpose: Purpose,
        customers: list[Customer],
        standings: dict[str, Standing],
        *,
        skip_refused: bool = False,
    ) -> list[Customer]:
        """Mask what the caller may not see, then commit the read's audit event before handing anything out (fail
        closed: no event, no data). The event names the fields disclosed in clear."""
        shown: list[Customer] = []
        clear_names: set[str] = set()
        for customer in customers:
            try:
                clear = self._access.clear_fields(
                    caller.role,
                    purpose,
                    customer.customer_id,
                    customer.profile,
                    standings.get(customer.customer_id, NO_CONSENT),
                )
            except FailedPrecondition:
                if skip_refused:
                    continue  # a list shows only the customers the purpose may process
                raise
            profile, masked = mask_profile(customer.profile, clear)
            clear_names.update(name for name in _fields_of(customer.profile) if name in clear)
            shown.append(replace(customer, profile=profile, masked_fields=masked))
        fields = tuple(name for name in PERSONAL_FIELDS if name in clear_names)
        self._audit.record(AuditDraft.of(caller, "ok", tuple(c.customer_id for c in shown), fields))
        return shown

    @property
    def find_overruns(self) -> int:
        """Finds whose work took longer than the latency floor (for benchmarks and metrics)."""
        return self._find_floor.overruns

    def find(self, caller: Caller, kind: IdentifierKind, raw_value: str, ref_source: str = "") -> list[Customer]:
        # Every outcome — a hit, a miss, a restricted customer, an error — leaves no earlier than the floor.
        with self._find_floor.held():
            return self._find(caller, kind, raw_value, ref_source)

    def _find(self, caller: Caller, kind: IdentifierKind, raw_value: str, ref_source: str) -> list[Customer]:
        purpose = self._access.purpose_of(caller)
        canonical = self._find_canonical(kind, raw_value, ref_source)
        self._lookups.take(caller.principal)
        digest = self._blind_index.digest(kind.value, canonical.encode())
        with self._database.read_driver() as reader:
            owner = repo.owner(reader, kind, digest)
            # A miss does the work of a hit (the same row query, decrypting and masking a decoy held in memory), so
            # that "is this phone a customer?" cannot be read from the latency of the answer.
            row = repo.fetch_row(reader, owner or self._decoy.row.customer_id)
        standings = self._standings_of(purpose, [owner or self._decoy.row.customer_id])
        if row is None:
            decoy = sealing.open_row(cast(Any, self._decoy.row), self._decoy.dek)
            with suppress(FailedPrecondition):
                mask_profile(
                    decoy.profile, self._access.clear_fields(caller.role, purpose, decoy.customer_id, decoy.profile)
                )
        elif row.restricted:
            raise ProcessingRestricted((row.customer_id,))
        # A lookup that finds nobody is audited too: probing for identifiers is itself an access attempt.
        return self._disclose(caller, purpose, [] if row is None else self._decrypt_rows([row]), standings)

    @staticmethod
    def _find_canonical(kind: IdentifierKind, raw_value: str, ref_source: str) -> str:
        field = _INDEX_FIELD[kind] if kind is not IdentifierKind.EXTERNAL_REF else "external_ref"
        try:
            if kind is IdentifierKind.EXTERNAL_REF:
                try:
                    source = ids.canonical_ref_source(ref_source)
                except ids.IdentifierError as error:
                    raise InvalidArgument.single("external_ref.source", error.rule) from None
                field = "external_ref.id"
                return ids.external_ref_key(source, ids.canonical_ref_id(raw_value))
            return _FIND_CANONICAL[kind](raw_value)
        except ids.IdentifierError as error:
            raise InvalidArgument.single(field, error.rule) from None

    def page(self, caller: Caller, page_size: int, page_token: str) -> Page:
        purpose = self._access.purpose_of(caller)
        if page_size < 0:
            raise InvalidArgument.single("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_page_token(page_token)
        # A consent-based purpose lists only customers who consented to it (the join filters in the database).
        consented_to = purpose.name if purpose.requires_consent else ""
        with self._database.read() as connection:
            rows = repo.page_rows(connection, after, size + 1, consented_to)
            standings = self._standings(connection, purpose, [row.customer_id for row in rows[:size]])
        processable = [row for row in rows[:size] if not row.restricted]  # restricted customers are not listed
        customers = self._disclose(caller, purpose, self._decrypt_rows(processable), standings, skip_refused=True)
        next_token = _encode_page_token(rows[size - 1].customer_id) if len(rows) > size else ""
        return Page(customers, next_token)

    # -- update ---------------------------------------------------------------------------------------------------

    def update(
        self, caller: Caller, raw: Profile, customer_id: str, mask: Sequence[str], expected_version: int
    ) -> Customer:
        _check_customer_id(customer_id, "customer.customer_id")
        if expected_version < 1:
            raise InvalidArgument.single("expected_version", "must be the version last read (1 or more)")
        return self._change(caller, raw, customer_id, mask, expected_version)

    def rectify(
        self,
        caller: Caller,
        raw: Profile,
        customer_id: str,
        mask: Sequence[str],
        also: Callable[[Connection, SecretKey, SecretKey], None],
    ) -> Customer:
        """Correct fields at the customer's request and re-key the customer: every field is re-encrypted under a fresh
        data key and the old wrapped key is overwritten, so the old values — in dead row versions, the WAL, free
        pages — no longer decrypt from this database. ``also(connection, old_key, new_key)`` runs in the same
        transaction: it completes the DSAR and re-seals whatever else was sealed under the old key."""
        _check_customer_id(customer_id, "customer_id")
        return self._change(caller, raw, customer_id, mask, None, rekeyed=also)

    def _change(
        self,
        caller: Caller,
        raw: Profile,
        customer_id: str,
        mask: Sequence[str],
        expected_version: int | None,
        rekeyed: Callable[[Connection, SecretKey, SecretKey], None] | None = None,
    ) -> Customer:
        rekey = expected_version is None
        names = _check_mask(mask)
        patch = canonical_profile(raw, only=frozenset(names))
        with self._database.read() as connection:
            row = repo.get_row(connection, customer_id)
        if row is None:
            raise NotFound()
        if row.restricted and not rekey:
            raise ProcessingRestricted((customer_id,))
        version = row.version if expected_version is None else expected_version
        if row.version != version:
            raise VersionConflict()
        current = self._decrypt_rows([row])[0]
        profile = current.profile.with_fields(patch, names)
        require_identifier(profile)
        now = self._clock()
        old_dek = self._keys.unwrap(customer_id, WrappedKey(row.wrapped_dek, row.kek_version))
        if rekey:
            dek, wrapped = self._keys.new_key()
            key_values: dict[str, Any] = {"wrapped_dek": wrapped.blob, "kek_version": wrapped.kek_version}
            encrypted = sealing.seal(dek, customer_id, profile, PERSONAL_FIELDS)
        else:
            dek = old_dek
            key_values, encrypted = {}, sealing.seal(dek, customer_id, profile, names)
        values = {**encrypted, **key_values, "update_time": now}
        kinds = [kind for kind, field in _INDEX_FIELD.items() if field in names]
        digests = [(kind, digest) for kind, digest in self._digests(profile) if kind in kinds]
        # A birth date (or id number) recorded now that shows the customer is under 14: consents they gave themselves
        # stop counting at once, everywhere — reads refuse them already; the analytics feed needs them withdrawn.
        became_minor = is_minor(profile, now.date()) and not is_minor(current.profile, now.date())

        def write(connection: Connection) -> None:
            if not repo.update_customer(connection, customer_id, version, values):
                raise NotFound() if repo.get_row(connection, customer_id) is None else VersionConflict()
            repo.delete_indexes(connection, customer_id, kinds)
            self._refuse_taken(connection, digests, customer_id)
            repo.insert_indexes(connection, customer_id, digests)
            if rekeyed is not None:
                rekeyed(connection, old_dek, dek)
            if became_minor and "analytics" in consent_repo.lapse_subject_consents(connection, customer_id, now):
                purchases_repo.retire(connection, customer_id, "consent_withdrawn", now)

        try:
            self._writer.submit(write, (AuditDraft.of(caller, "ok", (customer_id,), tuple(sorted(names))),))
        except SqlIntegrityError:
            # A concurrent create took one of the new identifiers between our check and insert.
            with self._database.read() as connection:
                self._refuse_taken(connection, digests, customer_id)
            raise Unavailable() from None
        except OperationalError:
            raise Unavailable() from None
        if rekey:
            self._keys.forget(customer_id)
        # The caller learns in clear only what it just wrote; the rest of the customer comes back masked.
        shown, masked = mask_profile(profile, frozenset(names))
        return Customer(customer_id, version + 1, shown, current.create_time, now, masked)

    def charge_lookup(self, principal: str) -> None:
        """Spend one lookup of the principal's budget (an import row matched against stored customers is a lookup)."""
        self._lookups.take(principal)

    def note_match(self, caller: Caller, customer_id: str) -> None:
        """Audit that a caller learnt a customer's id by matching identifiers (an import row that changed nothing)."""
        self._audit.record(AuditDraft.of(caller, "ok", (customer_id,)))

    def owners_of_many(
        self, profiles: Sequence[Profile], known: dict[tuple[IdentifierKind, str], bytes] | None = None
    ) -> list[set[str]]:
        """``owners_of`` for many profiles in one query (an import checks a batch of rows at once). ``known``: filled
        with the digests computed, by identifier, for a ``create_many`` of the same rows to reuse."""
        digests = [self._digests(profile, known) for profile in profiles]
        with self._database.read() as connection:
            taken = repo.owners(connection, [pair for pairs in digests for pair in pairs])
        return [{taken[(kind.value, d)] for kind, d in pairs if (kind.value, d) in taken} for pairs in digests]

    def owners_of(self, profile: Profile) -> set[str]:
        """The live customers holding any identifier of a canonical profile (for imports: merge, not duplicate)."""
        with self._database.read() as connection:
            return set(repo.owners(connection, self._digests(profile)).values())

    def resolve_ref(self, source: str, ref_id: str) -> str:
        """The live customer with this external ref, for the vault's own workflows (no disclosure)."""
        return self.resolve(IdentifierKind.EXTERNAL_REF, ref_id, source)

    def resolve(self, kind: IdentifierKind, raw_value: str, ref_source: str = "") -> str:
        """The id of the live customer holding an identifier, for the vault's own workflows (no disclosure)."""
        (found,) = self.resolve_many([(kind, raw_value, ref_source)])
        if isinstance(found, PiivaultError):
            raise found
        return found

    def resolve_many(self, wanted: Sequence[tuple[IdentifierKind, str, str]]) -> list[str | PiivaultError]:
        """``resolve`` for many (kind, value, ref source) in one query: for each, the customer id, or the error
        (``InvalidArgument`` for a value that is no identifier of its kind, ``NotFound``) it would raise."""
        answers: list[str | PiivaultError] = []
        digests: list[tuple[IdentifierKind, bytes] | None] = []
        for kind, raw_value, ref_source in wanted:
            try:
                canonical = self._find_canonical(kind, raw_value, ref_source)
            except InvalidArgument as error:
                answers.append(error)
                digests.append(None)
                continue
            answers.append(NotFound())
            digests.append((kind, self._blind_index.digest(kind.value, canonical.encode())))
        with self._database.read() as connection:
            taken = repo.owners(connection, [pair for pair in digests if pair is not None])
        for index, pair in enumerate(digests):
            owner = None if pair is None else taken.get((pair[0].value, pair[1]))
            if owner is not None:
                answers[index] = owner
        return answers

    # -- for the vault's identity workflows (merge, split) ---------------------------------------------------------

    def load(self, customer_id: str) -> tuple[Row[Any], Customer, SecretKey]:
        """The stored row, the decrypted customer and its data key (no disclosure, no audit)."""
        _check_customer_id(customer_id, "customer_id")
        with self._database.read() as connection:
            row = repo.get_row(connection, customer_id)
        if row is None:
            raise NotFound()
        dek = self._keys.unwrap(customer_id, WrappedKey(row.wrapped_dek, row.kek_version))
        return row, sealing.open_row(row, dek), dek

    def sealed(
        self, dek: SecretKey, customer_id: str, profile: Profile, names: Sequence[str]
    ) -> dict[str, bytes | None]:
        """Ciphertext column values of ``names`` (None for empty fields)."""
        return sealing.seal(dek, customer_id, profile, names)

    def digests(self, profile: Profile) -> list[tuple[IdentifierKind, bytes]]:
        return self._digests(profile)

    def new_key(self) -> tuple[SecretKey, WrappedKey]:
        return self._keys.new_key()

    def forget_key(self, customer_id: str) -> None:
        self._keys.forget(customer_id)

    # -- crypto ---------------------------------------------------------------------------------------------------

    def _digests(
        self, profile: Profile, known: dict[tuple[IdentifierKind, str], bytes] | None = None
    ) -> list[tuple[IdentifierKind, bytes]]:
        """The blind-index digest of each identifier; with ``known``, each looked up there first and added to it."""
        cache = {} if known is None else known
        found: list[tuple[IdentifierKind, bytes]] = []
        for kind, value in profile.identifiers():
            digest = cache.get((kind, value))
            if digest is None:
                digest = cache[(kind, value)] = self._blind_index.digest(kind.value, value.encode())
            found.append((kind, digest))
        return found

    def _decrypt_rows(self, rows: Sequence[Row[Any]]) -> list[Customer]:
        deks = self._keys.unwrap_many([(row.customer_id, WrappedKey(row.wrapped_dek, row.kek_version)) for row in rows])
        return [sealing.open_row(row, dek) for row, dek in zip(rows, deks, strict=True)]


def _fields_of(profile: Profile) -> tuple[str, ...]:
    """The names (never the values) of the personal fields a profile holds: what an audit event records."""
    return tuple(name for name in PERSONAL_FIELDS if not is_empty(getattr(profile, name)))


def _fingerprint_text(profile: Profile) -> bytes:
    return b"\x1e".join(name.encode() + b"=" + encode_field(name, getattr(profile, name)) for name in PERSONAL_FIELDS)


def _check_customer_id(customer_id: str, field: str) -> None:
    if not _CUSTOMER_ID.fullmatch(customer_id):
        raise InvalidArgument.single(field, "must be a customer id as returned by CreateCustomer")


def _check_mask(mask: Sequence[str]) -> tuple[str, ...]:
    if not mask:
        raise InvalidArgument.single("update_mask", "must name at least one field")
    unknown = [path for path in mask if path not in PERSONAL_FIELDS]
    if unknown:
        raise InvalidArgument.single("update_mask", "may only name: " + ", ".join(PERSONAL_FIELDS))
    return tuple(dict.fromkeys(mask))


def _encode_page_token(last_customer_id: str) -> str:
    return cursors.encode(_PAGE_TOKEN_PREFIX, last_customer_id)


def _decode_page_token(token: str) -> str:
    if not token:
        return ""
    is_id = _CUSTOMER_ID.fullmatch
    rule = "must be a next_page_token returned by ListCustomers"
    return cursors.decode(token, _PAGE_TOKEN_PREFIX, lambda text: is_id(text) is not None, "page_token", rule)


__all__ = ["IDENTIFIER_FIELDS", "CustomerService", "ExternalRef", "Page"]
