"""KeyService through the SDK: admin only, streamed rotation progress, the minimum-version guard as
FAILED_PRECONDITION."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from audit.queries import AuditQueries, EventFilter
from piivault.client import FailedPrecondition, PermissionDenied, PiiVault, Unauthenticated, Unavailable
from piivault.v1 import customers_pb2 as pb
from tests.e2e.conftest import Connect
from tests.support.people import People
from vault.app import Vault
from vault.keys.provider import ProviderUnavailable
from vault.keys.service_keys import SERVICE_KEY_NAMES

SERVICE_KEYS = len(SERVICE_KEY_NAMES)


def test_rotation_over_grpc(client: PiiVault, as_role: Callable[[str, str], PiiVault], people: People) -> None:
    for person in people.many(3):
        client.customers.create(pb.Customer(mobile=person.mobile))
    admin = as_role("ops", "admin")

    with pytest.raises(PermissionDenied):
        client.keys.status()  # a service token may not

    status = admin.keys.status()
    assert status.latest_version == 1
    assert [(c.kek_version, c.customer_deks, c.service_keys) for c in status.counts] == [(1, 3, SERVICE_KEYS)]

    progress = list(admin.keys.rotate_kek())
    assert progress[-1].new_version == 2
    assert progress[-1].progress.finished
    assert progress[-1].progress.rewrapped == 3 + SERVICE_KEYS

    with pytest.raises(FailedPrecondition):
        admin.keys.set_min_decryption_version(3)
    reply = admin.keys.set_min_decryption_version(2)
    assert reply.min_decryption_version == 2
    listed = client.customers.list(purpose="customer_service")
    assert len(listed.customers) == 3


def test_streaming_calls_are_authenticated_too(connect: Connect) -> None:
    with pytest.raises(Unauthenticated):
        list(connect(None).keys.rewrap_keys())


def test_a_rotation_the_provider_refuses_is_audited_as_failed_only(
    vault: Vault, as_role: Callable[[str, str], PiiVault], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = as_role("ops", "admin")

    def down() -> int:
        raise ProviderUnavailable("test: the key provider is down")

    monkeypatch.setattr(vault.keys._provider, "rotate", down)
    with pytest.raises(Unavailable):
        list(admin.keys.rotate_kek())
    monkeypatch.undo()
    assert [step.new_version for step in admin.keys.rotate_kek()][-1] == 2

    rotations = [
        e.outcome
        for chunk in AuditQueries(vault.database).events(EventFilter(action="/piivault.v1.KeyService/RotateKek"))
        for e in chunk
    ]
    assert rotations == ["unavailable", "ok"]  # no "ok" for the rotation that did not happen
