"""``PiiVault.keys``: KeyService, the key-encryption key (role ``admin``)."""

from __future__ import annotations

import grpc

from piivault.client._calls import CallSettings, ResponseStream, unary
from piivault.v1 import keys_pb2 as pb
from piivault.v1 import keys_pb2_grpc as pb_grpc


class Keys:
    """KEK status, rotation and retirement of old versions.

    Retried on UNAVAILABLE: ``status`` (a read), ``rewrap_keys`` before its first progress message (a rewrap pass is
    resumable and writes each batch with a compare-and-set, so running it again is what the runbook says to do), and
    ``set_min_decryption_version`` (it sets a value). Never retried: ``rotate_kek``, which would create a second new
    version; after a lost rotation, look at ``status`` and finish with ``rewrap_keys``.
    """

    def __init__(self, settings: CallSettings, channel: grpc.Channel) -> None:
        self._settings = settings
        self._stub = pb_grpc.KeyServiceStub(channel)

    def status(self, *, request_id: str | None = None, timeout: float | None = None) -> pb.GetKeyStatusResponse:
        return unary(
            self._settings,
            self._stub.GetKeyStatus,
            pb.GetKeyStatusRequest(),
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )

    def rotate_kek(
        self, *, request_id: str | None = None, timeout: float | None = None
    ) -> ResponseStream[pb.RotateKekResponse]:
        """Create a new KEK version and rewrap every wrapped key onto it; one progress message per batch."""
        return ResponseStream(
            self._settings,
            self._stub.RotateKek,
            pb.RotateKekRequest(),
            request_id=request_id,
            idempotent=False,
            timeout=timeout,
        )

    def rewrap_keys(
        self, *, request_id: str | None = None, timeout: float | None = None
    ) -> ResponseStream[pb.RewrapKeysResponse]:
        """Rewrap every key still below the latest version (finishes an interrupted rotation)."""
        return ResponseStream(
            self._settings,
            self._stub.RewrapKeys,
            pb.RewrapKeysRequest(),
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )

    def set_min_decryption_version(
        self, version: int, *, request_id: str | None = None, timeout: float | None = None
    ) -> pb.SetMinDecryptionVersionResponse:
        """Retire KEK versions below ``version``; FAILED_PRECONDITION while a wrapped key still uses one."""
        return unary(
            self._settings,
            self._stub.SetMinDecryptionVersion,
            pb.SetMinDecryptionVersionRequest(version=version),
            request_id=request_id,
            idempotent=True,
            timeout=timeout,
        )
