"""Identity cases an import cannot settle: merging two records of one person, splitting one record of two people.

Merge: the survivor keeps its values; fields it lacks are filled from the duplicate; differing values are reported
and the survivor's kept; external refs are united. In one transaction the duplicate's identifiers move to the
survivor (its blind indexes are deleted first), its pseudonyms are re-filed under the survivor (purchases follow; the
active one gets a tombstone, reason ``merged``, so the analytics side drops it) and the survivor is updated. Then the
duplicate — by now a shell with no identifiers — is crypto-shredded like an erasure (ledger first). A crash between
the two steps leaves the shell; running the merge again finishes it. Consents are not carried over: a consent was
given by, and proven for, the record it names.

Split: the named fields move from a record to a new customer (new id, new data key), in one transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from sqlalchemy import Connection

from audit.events import AuditDraft, Caller
from vault.customers import repository as repo
from vault.customers.erasure import CryptoShredder
from vault.customers.models import IDENTIFIER_FIELDS, PERSONAL_FIELDS, Customer, IdentifierKind, Profile, fill_gaps
from vault.customers.sealing import DEK_VERSION
from vault.customers.service import CustomerService
from vault.customers.validation import require_identifier
from vault.errors import FailedPrecondition, InvalidArgument, ProcessingRestricted, VersionConflict
from vault.purchases import repository as purchases_repo
from vault.storage.group_commit import GroupCommitter

_KINDS = {
    "mobile": IdentifierKind.MOBILE,
    "email": IdentifierKind.EMAIL,
    "national_id": IdentifierKind.NATIONAL_ID,
    "member_id": IdentifierKind.MEMBER_ID,
    "external_refs": IdentifierKind.EXTERNAL_REF,
}


@dataclass(frozen=True, slots=True)
class MergeResult:
    survivor_id: str
    filled: tuple[str, ...]
    conflicts: tuple[str, ...]


class IdentityService:
    def __init__(
        self,
        customers: CustomerService,
        writer: GroupCommitter,
        shredder: CryptoShredder,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._customers = customers
        self._writer = writer
        self._shredder = shredder
        self._clock = clock

    def merge(self, caller: Caller, survivor_id: str, duplicate_id: str) -> MergeResult:
        if survivor_id == duplicate_id:
            raise InvalidArgument.single("duplicate_id", "must differ from survivor_id")
        s_row, survivor, dek = self._customers.load(survivor_id)
        d_row, duplicate, _ = self._customers.load(duplicate_id)
        if s_row.restricted or d_row.restricted:
            raise ProcessingRestricted((survivor_id, duplicate_id))
        if d_row.legal_hold:
            raise FailedPrecondition("the duplicate is under legal hold; it cannot be merged away")
        merged, filled, conflicts = fill_gaps(survivor.profile, duplicate.profile)
        now = self._clock()
        values = {**self._customers.sealed(dek, survivor_id, merged, filled), "update_time": now}
        kinds = [_KINDS[name] for name in filled if name in _KINDS]
        digests = [(kind, digest) for kind, digest in self._customers.digests(merged) if kind in kinds]

        def absorb(connection: Connection) -> None:
            if not repo.update_customer(connection, survivor_id, s_row.version, values):
                raise VersionConflict()
            repo.delete_indexes(connection, duplicate_id, list(IdentifierKind))
            repo.delete_indexes(connection, survivor_id, kinds)
            repo.insert_indexes(connection, survivor_id, digests)
            purchases_repo.refile(connection, duplicate_id, survivor_id, now)

        event = AuditDraft.of(caller, "ok", (survivor_id, duplicate_id), tuple(filled))
        self._writer.submit(absorb, (event,))
        self._shredder.shred(caller, duplicate_id, check=partial(_not_held, duplicate_id))
        return MergeResult(survivor_id, filled, conflicts)

    def split(self, caller: Caller, customer_id: str, fields: Sequence[str]) -> Customer:
        """Move ``fields`` (with their values) from a customer to a new customer; returns the new one."""
        names = tuple(dict.fromkeys(fields))
        unknown = [name for name in names if name not in PERSONAL_FIELDS]
        if not names or unknown:
            raise InvalidArgument.single("fields", "must name one or more of: " + ", ".join(PERSONAL_FIELDS))
        row, current, dek = self._customers.load(customer_id)
        if row.restricted:
            raise ProcessingRestricted((customer_id,))
        moved = Profile(**{name: getattr(current.profile, name) for name in names})
        kept = replace(current.profile, **{name: getattr(Profile(), name) for name in names})
        require_identifier(moved)  # the new customer must be findable
        require_identifier(kept)  # and so must what stays
        new_id = str(uuid.uuid4())
        new_dek, wrapped = self._customers.new_key()
        now = self._clock()
        new_values = {
            "customer_id": new_id,
            "version": 1,
            "wrapped_dek": wrapped.blob,
            "kek_version": wrapped.kek_version,
            "dek_version": DEK_VERSION,
            "create_time": now,
            "update_time": now,
            **self._customers.sealed(new_dek, new_id, moved, PERSONAL_FIELDS),
        }
        cleared = {**self._customers.sealed(dek, customer_id, kept, names), "update_time": now}
        kinds = [_KINDS[name] for name in names if name in _KINDS and name in IDENTIFIER_FIELDS]
        new_digests = self._customers.digests(moved)

        def divide(connection: Connection) -> None:
            if not repo.update_customer(connection, customer_id, row.version, cleared):
                raise VersionConflict()
            repo.delete_indexes(connection, customer_id, kinds)
            repo.insert_customer(connection, new_values)
            repo.insert_indexes(connection, new_id, new_digests)

        self._writer.submit(divide, (AuditDraft.of(caller, "ok", (customer_id, new_id), names),))
        return Customer(new_id, 1, moved, now, now)


def _not_held(customer_id: str, connection: Connection) -> None:
    row = repo.get_row(connection, customer_id)
    if row is not None and row.legal_hold:
        raise FailedPrecondition("the duplicate is under legal hold; it cannot be merged away")
