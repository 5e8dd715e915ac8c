"""KeyService servicer: KEK status, online rotation with streamed progress, retiring old versions."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from audit.events import AuditDraft
from audit.log import AuditLog
from piivault.v1 import keys_pb2 as pb
from piivault.v1 import keys_pb2_grpc as pb_grpc
from vault.api.context import current_caller
from vault.crypto import CryptoError
from vault.errors import FailedPrecondition, IntegrityError, Unavailable
from vault.keys import rotation
from vault.keys.local import KeyringError
from vault.keys.provider import MinimumVersionRefused, ProviderUnavailable

# A KEK given in PIIVAULT_LOCAL_KEK has no keyring file to add a version to or to record a minimum in.
_KEK_FIXED = "the KEK comes from PIIVAULT_LOCAL_KEK and cannot be rotated or retired; use a keyring file"


def _progress(step: rotation.RewrapProgress) -> pb.RewrapProgress:
    return pb.RewrapProgress(rewrapped=step.rewrapped, total=step.total, skipped=step.skipped, finished=step.finished)


class KeyServicer(pb_grpc.KeyServiceServicer):
    """Key operations touch no personal data but change how all of it is protected: each is audited."""

    def __init__(self, keys: rotation.KeyRotation, audit: AuditLog) -> None:
        self._keys = keys
        self._audit = audit

    def GetKeyStatus(self, request: pb.GetKeyStatusRequest, context: grpc.ServicerContext) -> pb.GetKeyStatusResponse:
        try:
            status, counts = self._keys.status()
        except ProviderUnavailable:
            raise Unavailable() from None
        self._audit.record(AuditDraft.of(current_caller.get(), "ok"))
        versions = sorted(set(counts.customer_deks) | set(counts.service_keys) | set(status.versions))
        return pb.GetKeyStatusResponse(
            provider=status.provider,
            key_name=status.key_name,
            latest_version=status.latest_version,
            min_decryption_version=status.min_decryption_version,
            versions=list(status.versions),
            counts=[
                pb.KekVersionCount(
                    kek_version=v,
                    customer_deks=counts.customer_deks.get(v, 0),
                    service_keys=counts.service_keys.get(v, 0),
                )
                for v in versions
            ],
        )

    def RotateKek(self, request: pb.RotateKekRequest, context: grpc.ServicerContext) -> Iterator[pb.RotateKekResponse]:
        for step in self._audited(self._keys.rotate()):
            yield pb.RotateKekResponse(new_version=step.target_version, progress=_progress(step))

    def RewrapKeys(
        self, request: pb.RewrapKeysRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RewrapKeysResponse]:
        for step in self._audited(self._keys.rewrap()):
            yield pb.RewrapKeysResponse(target_version=step.target_version, progress=_progress(step))

    def _audited(self, steps: Iterator[rotation.RewrapProgress]) -> Iterator[rotation.RewrapProgress]:
        """The steps of a rotation or rewrap, with its "ok" event recorded once the first step is done — for a
        rotation, as soon as the provider created the new KEK version, before any rewrap batch — and before the
        caller hears of it. Recorded before the provider acted, a call that then failed (the provider down) would
        leave an "ok" for a rotation that never happened next to the guard's failure event; recorded at the end, a
        caller that stops reading midway would leave none. A rewrap that fails later leaves the guard's failure event
        after the "ok" (the rotation did happen; RewrapKeys finishes the rewrap)."""
        audited = False
        for step in _guarded(steps):
            if not audited:
                self._audit.record(AuditDraft.of(current_caller.get(), "ok"))
                audited = True
            yield step

    def SetMinDecryptionVersion(
        self, request: pb.SetMinDecryptionVersionRequest, context: grpc.ServicerContext
    ) -> pb.SetMinDecryptionVersionResponse:
        try:
            self._keys.raise_min_decryption_version(request.version)
            self._audit.record(AuditDraft.of(current_caller.get(), "ok"))
            return pb.SetMinDecryptionVersionResponse(
                min_decryption_version=self._keys.status()[0].min_decryption_version
            )
        except MinimumVersionRefused as refused:
            raise FailedPrecondition(str(refused)) from None
        except KeyringError:
            raise FailedPrecondition(_KEK_FIXED) from None
        except ProviderUnavailable:
            raise Unavailable() from None


def _guarded(steps: Iterator[rotation.RewrapProgress]) -> Iterator[rotation.RewrapProgress]:
    try:
        yield from steps
    except ProviderUnavailable:
        raise Unavailable() from None
    except KeyringError:
        raise FailedPrecondition(_KEK_FIXED) from None
    except CryptoError:
        raise IntegrityError() from None
