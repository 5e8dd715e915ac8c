"""The export package for access and portability requests: one zip, built in memory (personal data never touches
the server's disk), with JSON for machines, CSV for spreadsheets, and a signed manifest.

    manifest.json      format, request, customer, creation time, SHA-256 and size of every other file, public key
    manifest.sig       Ed25519 signature (hex) over b"piivault-dsar-manifest/1\\n" + manifest.json
    profile.json/.csv  each personal field with its value, the system that last wrote it and when
    consents.json/.csv the consent ledger of the customer, oldest first
    purchases.json/.csv purchases recorded for the customer
    access_log.json/.csv who accessed the customer's data, when, for what purpose, with what outcome
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.events import AuditEvent
from consent.models import ConsentRecord
from vault.crypto import Signer, file_digest, verify_signature
from vault.customers.models import PERSONAL_FIELDS, Customer, ExternalRef, Gender, is_empty

FORMAT = "piivault-dsar-export/1"
SIGNATURE_CONTEXT = b"piivault-dsar-manifest/1\n"
_WRITES = ("CreateCustomer", "UpdateCustomer", "RectifyCustomer")


@dataclass(frozen=True, slots=True)
class Provenance:
    source: str  # the principal (system) that last wrote the field
    collected_at: dt.datetime


def provenance(events: Iterable[AuditEvent]) -> dict[str, Provenance]:
    """Per field, the last successful write that touched it — read from the audit log, which records field names."""
    found: dict[str, Provenance] = {}
    for event in events:
        if event.outcome == "ok" and event.action.rsplit("/", 1)[-1] in _WRITES:
            when = dt.datetime.fromtimestamp(event.time_us / 1_000_000, dt.UTC)
            for name in event.fields:
                found[name] = Provenance(event.principal, when)
    return found


def _plain(value: object) -> object:
    if isinstance(value, Gender):
        return value.value
    if isinstance(value, tuple):
        return [{"source": ref.source, "id": ref.id} for ref in value if isinstance(ref, ExternalRef)]
    return value


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _json(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")


def build_package(
    request_id: str,
    customer: Customer,
    consents: Sequence[ConsentRecord],
    purchases: Sequence[Mapping[str, Any]],
    access_log: Sequence[AuditEvent],
    signer: Signer,
    now: dt.datetime,
) -> bytes:
    written = provenance(access_log)
    profile_rows = []
    fields: dict[str, object] = {}
    for name in PERSONAL_FIELDS:
        value = getattr(customer.profile, name)
        if is_empty(value):
            continue
        origin = written.get(name)
        entry = {
            "value": _plain(value),
            "source": origin.source if origin else "",
            "collected_at": origin.collected_at.isoformat() if origin else "",
        }
        fields[name] = entry
        text = json.dumps(entry["value"], ensure_ascii=False) if not isinstance(entry["value"], str) else entry["value"]
        profile_rows.append((name, text, entry["source"], entry["collected_at"]))
    profile = {
        "customer_id": customer.customer_id,
        "version": customer.version,
        "create_time": customer.create_time.isoformat(),
        "update_time": customer.update_time.isoformat(),
        "fields": fields,
    }
    consent_docs = [
        {
            "revision": r.revision,
            "record_id": r.record_id,
            "purpose": r.purpose,
            "scope": r.scope.value,
            "action": r.action.value,
            "given_by": r.given_by.value,
            "notice_version": r.notice_version,
            "notice_sha256": r.notice_sha256.hex() if r.notice_sha256 else "",
            "channel": r.channel.value,
            "recorded_by": r.actor,
            "evidence_ref": r.evidence_ref,
            "time": r.record_time.isoformat(),
        }
        for r in consents
    ]
    access: list[dict[str, Any]] = [
        {
            "seq": e.seq,
            "time": dt.datetime.fromtimestamp(e.time_us / 1_000_000, dt.UTC).isoformat(),
            "principal": e.principal,
            "role": e.role,
            "action": e.action.rsplit("/", 1)[-1],
            "purpose": e.purpose,
            "fields": list(e.fields),
            "outcome": e.outcome,
        }
        for e in access_log
    ]
    purchase_header = ("order_id", "source", "store_id", "time", "amount", "currency", "payment_method", "coupon")
    purchase_rows = [
        [str(p.get(key, "")) for key in purchase_header] + [json.dumps(p.get("lines", []), ensure_ascii=False)]
        for p in purchases
    ]
    access_header = ("seq", "time", "principal", "role", "action", "purpose", "fields", "outcome")
    access_rows = [[str(a[key]) if key != "fields" else " ".join(a["fields"]) for key in access_header] for a in access]
    consent_header = tuple(consent_docs[0]) if consent_docs else ("revision",)
    files: dict[str, bytes] = {
        "profile.json": _json(profile),
        "profile.csv": _csv(("field", "value", "source", "collected_at"), profile_rows),
        "consents.json": _json(consent_docs),
        "consents.csv": _csv(consent_header, [[str(v) for v in d.values()] for d in consent_docs]),
        "purchases.json": _json(list(purchases)),
        "purchases.csv": _csv((*purchase_header, "lines"), purchase_rows),
        "access_log.json": _json(access),
        "access_log.csv": _csv(access_header, access_rows),
    }
    manifest = _json(
        {
            "format": FORMAT,
            "request_id": request_id,
            "customer_id": customer.customer_id,
            "created": now.isoformat(),
            "files": [
                {"name": name, "sha256": file_digest(data), "bytes": len(data)} for name, data in sorted(files.items())
            ],
            "public_key": signer.public_key.hex(),
        }
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", manifest)
        archive.writestr("manifest.sig", signer.sign(SIGNATURE_CONTEXT + manifest).hex() + "\n")
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class PackageError(Exception):
    """The package is incomplete, altered or not signed by the expected key (the message says which file)."""


def verify_package(package: bytes, public_key: bytes | None = None) -> dict[str, Any]:
    """Check every file against the manifest and the manifest's signature; return the manifest."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(package))
        manifest_bytes = archive.read("manifest.json")
        signature = bytes.fromhex(archive.read("manifest.sig").decode().strip())
        manifest = json.loads(manifest_bytes)
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise PackageError(f"not a readable export package ({type(error).__name__})") from None
    key = public_key if public_key is not None else bytes.fromhex(manifest.get("public_key", ""))
    if not verify_signature(key, SIGNATURE_CONTEXT + manifest_bytes, signature):
        raise PackageError("the manifest's signature does not verify")
    listed = {entry["name"] for entry in manifest["files"]}
    present = set(archive.namelist()) - {"manifest.json", "manifest.sig"}
    if listed != present:
        raise PackageError(f"files differ from the manifest: {sorted(listed ^ present)}")
    for entry in manifest["files"]:
        if file_digest(archive.read(entry["name"])) != entry["sha256"]:
            raise PackageError(f"{entry['name']} does not match its SHA-256 in the manifest")
    return dict(manifest)
