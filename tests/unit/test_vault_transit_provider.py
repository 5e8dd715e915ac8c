"""VaultTransitKeyProvider against tests/transit_server.py, through the real hvac client.

Call counts come from the server (``server.calls``) and from the provider (``provider.calls``), so "one HTTP call per
wrap" is checked on the wire. Timing checks use ``time.monotonic``: an unusable Vault must surface as
``ProviderUnavailable`` in under two seconds, as the service promises UNAVAILABLE within that time.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac
import pytest
from structlog.testing import capture_logs

from tests.transit_server import TransitServer
from vault.crypto import CryptoError, SecretKey
from vault.keys.provider import ProviderConfigError, ProviderUnavailable, WrappedKey
from vault.keys.vault_transit import VaultTransitKeyProvider

KEY = "piivault-kek"
# What the provider needs, and nothing more (VAULT_TRANSIT.md §13).
FULL_POLICY = {
    f"transit/keys/{KEY}": ["read", "update"],
    f"transit/keys/{KEY}/rotate": ["update"],
    f"transit/keys/{KEY}/config": ["update"],
    f"transit/encrypt/{KEY}": ["update"],
    f"transit/decrypt/{KEY}": ["update"],
    f"transit/rewrap/{KEY}": ["update"],
}
SECRET_TOKEN = "hvs.synthetic-token-do-not-print-4f1c"
ROLE_ID = "role-synthetic-7d2a"
SECRET_ID = "secret-id-synthetic-do-not-print-93be"
UNAVAILABLE_WITHIN_SECONDS = 2.0


@pytest.fixture
def server() -> Iterator[TransitServer]:
    with TransitServer() as running:
        yield running


@pytest.fixture
def connect(server: TransitServer) -> Iterator[Callable[..., VaultTransitKeyProvider]]:
    opened: list[VaultTransitKeyProvider] = []

    def open_provider(**overrides: object) -> VaultTransitKeyProvider:
        settings: dict[str, object] = {"url": server.url, "token": server.root_token}
        settings.update(overrides)
        provider = VaultTransitKeyProvider.connect(**settings)  # type: ignore[arg-type]
        opened.append(provider)
        return provider

    yield open_provider
    for provider in opened:
        provider.close()


@pytest.fixture
def provider(connect: Callable[..., VaultTransitKeyProvider], server: TransitServer) -> VaultTransitKeyProvider:
    opened = connect()
    server.reset_counters()
    return opened


def keys(count: int) -> list[SecretKey]:
    return [SecretKey.generate() for _ in range(count)]


def tampered(item: WrappedKey) -> WrappedKey:
    prefix, payload = item.blob.rsplit(":", 1)
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 0x01
    return WrappedKey(f"{prefix}:{base64.b64encode(bytes(raw)).decode()}", item.kek_version)


def unavailable_within_deadline(call: Callable[[], object]) -> ProviderUnavailable:
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as failure:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < UNAVAILABLE_WITHIN_SECONDS, f"took {elapsed:.2f}s"
    return failure.value


# -- wrapping ---------------------------------------------------------------------------------------------------------


def test_many_keys_round_trip_in_one_http_call_each(provider: VaultTransitKeyProvider, server: TransitServer) -> None:
    deks = keys(200)
    before = provider.calls
    wrapped = provider.wrap(deks)
    assert (server.calls["encrypt"], server.request_count, provider.calls - before) == (1, 1, 1)
    assert all(item.blob.startswith("vault:v1:") and item.kek_version == 1 for item in wrapped)

    assert provider.unwrap(wrapped) == deks
    assert (server.calls["decrypt"], server.request_count, provider.calls - before) == (1, 2, 2)

    assert provider.wrap([]) == [] and provider.unwrap([]) == [] and provider.rewrap([]) == []
    assert server.request_count == 2


def test_wrapped_keys_carry_no_associated_data_or_context(
    provider: VaultTransitKeyProvider, server: TransitServer
) -> None:
    dek = SecretKey.generate()
    wrapped = provider.wrap([dek])[0]
    plain = hvac.Client(url=server.url, token=server.root_token).secrets.transit.decrypt_data(KEY, wrapped.blob)
    assert base64.b64decode(plain["data"]["plaintext"]) == dek.reveal()


def test_rotation_rewrap_and_minimum_decryption_version(
    provider: VaultTransitKeyProvider, server: TransitServer
) -> None:
    deks = keys(20)
    old = provider.wrap(deks)
    assert provider.rotate() == 2
    assert provider.wrap(keys(1))[0].kek_version == 2
    status = provider.status()
    assert (status.provider, status.key_name, status.latest_version) == ("vault-transit", KEY, 2)
    assert (status.min_decryption_version, status.versions) == (1, (1, 2))

    server.reset_counters()
    fresh = provider.rewrap(old)
    assert server.calls["rewrap"] == 1 and server.request_count == 1
    assert all(item.kek_version == 2 and item.blob.startswith("vault:v2:") for item in fresh)
    assert provider.unwrap(fresh) == deks

    provider.set_min_decryption_version(2)
    assert provider.status().min_decryption_version == 2
    assert provider.status().versions == (2,)  # Vault hides the versions it will no longer decrypt with
    server.reset_counters()
    with pytest.raises(CryptoError):
        provider.unwrap(old[:1])
    assert server.calls["decrypt"] == 1  # a crypto failure is never retried
    with pytest.raises(CryptoError):
        provider.rewrap(old[:1])
    assert provider.unwrap(fresh) == deks

    with pytest.raises(ValueError, match="minimum decryption version"):
        provider.set_min_decryption_version(7)


def test_vault_before_1_14_answers_create_and_rotate_with_204(
    connect: Callable[..., VaultTransitKeyProvider],
) -> None:
    with TransitServer(pre_1_14=True) as old_vault:
        provider = connect(url=old_vault.url, token=old_vault.root_token)
        assert old_vault.has_key(KEY)
        assert provider.rotate() == 2
        assert provider.wrap(keys(1))[0].kek_version == 2


@pytest.mark.parametrize(
    "forge",
    [
        tampered,
        lambda item: WrappedKey("vault:v1:AAAA", 1),
        lambda item: WrappedKey("vault:v9:" + item.blob.split(":", 2)[2], 9),
        lambda item: WrappedKey("local:v1:" + item.blob.split(":", 2)[2], 1),
        lambda item: WrappedKey("vault:v1:not base64!", 1),
    ],
    ids=["tampered", "short", "too-new", "foreign-prefix", "not-base64"],
)
def test_a_forged_blob_fails_the_whole_unwrap_as_crypto_error(
    provider: VaultTransitKeyProvider, server: TransitServer, forge: Callable[[WrappedKey], WrappedKey]
) -> None:
    good = provider.wrap(keys(3))
    server.reset_counters()
    with pytest.raises(CryptoError):
        provider.unwrap([good[0], forge(good[1]), good[2]])  # never a partial result
    with pytest.raises(CryptoError):
        provider.rewrap([good[0], forge(good[1])])
    assert (server.calls["decrypt"], server.calls["rewrap"]) == (1, 1)


# -- start-up ---------------------------------------------------------------------------------------------------------


def test_start_up_creates_the_missing_key(
    connect: Callable[..., VaultTransitKeyProvider], server: TransitServer
) -> None:
    assert not server.has_key(KEY)
    connect()
    info = server.key_info(KEY)
    assert (info["type"], info["derived"], info["latest_version"]) == ("aes256-gcm96", False, 1)
    assert server.calls["create_key"] == 1
    assert server.calls["encrypt"] == 1 and server.calls["decrypt"] == 1  # the round-trip check

    server.reset_counters()
    connect()  # the key is there now: used, not created again
    assert server.calls["create_key"] == 0


def test_start_up_with_a_policy_that_grants_just_what_is_needed(
    connect: Callable[..., VaultTransitKeyProvider], server: TransitServer
) -> None:
    server.add_token(SECRET_TOKEN, FULL_POLICY)
    provider = connect(token=SECRET_TOKEN, key_name=KEY)
    assert provider.unwrap(provider.wrap(deks := keys(2))) == deks


@pytest.mark.parametrize(
    ("prepare", "settings", "message"),
    [
        (lambda s: s.seal(), {}, "Vault is sealed"),
        (lambda s: s.set_initialized(False), {}, "not initialized"),
        (lambda s: None, {"token": "not-a-token"}, "invalid or expired"),
        (lambda s: None, {"mount": "elsewhere"}, "no secrets engine serving elsewhere/keys/piivault-kek"),
        (lambda s: None, {"create_key": False}, "does not exist and key creation is turned off"),
        (lambda s: s.create_key(KEY, "chacha20-poly1305"), {}, "must be a non-derived aes256-gcm96 key"),
        (lambda s: s.create_key(KEY, derived=True), {}, "must be a non-derived aes256-gcm96 key"),
        (
            lambda s: s.add_token(SECRET_TOKEN, {k: v for k, v in FULL_POLICY.items() if "encrypt" not in k}),
            {"token": SECRET_TOKEN},
            "token lacks 'update' on transit/encrypt/piivault-kek",
        ),
        (
            lambda s: s.add_token(SECRET_TOKEN, {f"transit/keys/{KEY}": ["read"]}),
            {"token": SECRET_TOKEN},
            "cannot create transit key transit/keys/piivault-kek: token lacks 'update' on transit/keys/piivault-kek",
        ),
        (
            lambda s: s.add_token(SECRET_TOKEN, {}),
            {"token": SECRET_TOKEN},
            "token lacks 'read' on transit/keys/piivault-kek",
        ),
        (
            lambda s: s.add_approle(ROLE_ID, "another-secret", FULL_POLICY),
            {"token": None, "role_id": ROLE_ID, "secret_id": SECRET_ID},
            "Vault refused the AppRole login; check role_id and secret_id",
        ),
    ],
    ids=[
        "sealed",
        "uninitialized",
        "bad-token",
        "no-mount",
        "missing-key",
        "wrong-type",
        "derived",
        "no-encrypt",
        "no-create",
        "no-read",
        "bad-approle",
    ],
)
def test_start_up_failures_say_what_to_fix(
    connect: Callable[..., VaultTransitKeyProvider],
    server: TransitServer,
    prepare: Callable[[TransitServer], None],
    settings: dict[str, object],
    message: str,
) -> None:
    prepare(server)
    with pytest.raises(ProviderConfigError, match=message) as failure:
        connect(**settings)
    for secret in (SECRET_TOKEN, SECRET_ID, server.root_token):
        assert secret not in str(failure.value)


def test_start_up_against_an_unreachable_vault(
    connect: Callable[..., VaultTransitKeyProvider], server: TransitServer
) -> None:
    server.set_down(True)
    started = time.monotonic()
    with pytest.raises(ProviderConfigError, match=f"Vault at {server.url} is unreachable"):
        connect()
    assert time.monotonic() - started < UNAVAILABLE_WITHIN_SECONDS


def test_settings_are_explicit_and_checked(
    server: TransitServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A root token lying in the environment or ~/.vault-token must not stand in for the configured one.
    monkeypatch.setenv("VAULT_TOKEN", server.root_token)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".vault-token").write_text(server.root_token)
    server.add_token(SECRET_TOKEN, {})
    with pytest.raises(ProviderConfigError, match="token lacks"):
        VaultTransitKeyProvider.connect(server.url, token=SECRET_TOKEN)

    with pytest.raises(ProviderConfigError, match="needs a token or an AppRole"):
        VaultTransitKeyProvider(server.url)
    with pytest.raises(ProviderConfigError, match="not both"):
        VaultTransitKeyProvider(server.url, token=SECRET_TOKEN, role_id=ROLE_ID, secret_id=SECRET_ID)
    with pytest.raises(ProviderConfigError, match="needs the Vault URL"):
        VaultTransitKeyProvider("", token=SECRET_TOKEN)


# -- availability -----------------------------------------------------------------------------------------------------


def test_vault_down_mid_run_is_unavailable_quickly_then_recovers(
    provider: VaultTransitKeyProvider, server: TransitServer
) -> None:
    wrapped = provider.wrap(deks := keys(5))
    server.set_down(True)
    error = unavailable_within_deadline(lambda: provider.wrap(keys(5)))
    assert str(error) == f"Vault at {server.url} is unreachable"
    unavailable_within_deadline(lambda: provider.unwrap(wrapped))
    unavailable_within_deadline(provider.status)

    server.set_down(False)
    assert provider.unwrap(wrapped) == deks


def test_a_hanging_vault_times_out_within_the_deadline(
    provider: VaultTransitKeyProvider, server: TransitServer
) -> None:
    wrapped = provider.wrap(deks := keys(2))
    server.set_latency(5)
    error = unavailable_within_deadline(lambda: provider.unwrap(wrapped))
    assert "timed out" in str(error)
    server.set_latency(0)
    assert provider.unwrap(wrapped) == deks


def test_sealed_mid_run_is_unavailable_then_recovers(provider: VaultTransitKeyProvider, server: TransitServer) -> None:
    server.seal()
    error = unavailable_within_deadline(lambda: provider.wrap(keys(1)))
    assert "sealed" in str(error)
    assert server.calls["encrypt"] == 3  # the first attempt and `retries` (2) more
    server.unseal()
    assert len(provider.wrap(keys(1))) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_one_transient_failure_is_retried(
    provider: VaultTransitKeyProvider, server: TransitServer, status: int
) -> None:
    server.fail_next(1, status)
    before = provider.calls
    wrapped = provider.wrap(deks := keys(3))
    assert server.calls["encrypt"] == 2 and provider.calls - before == 2
    assert provider.unwrap(wrapped) == deks


def test_retries_are_bounded_and_refusals_are_not_retried(
    connect: Callable[..., VaultTransitKeyProvider], server: TransitServer
) -> None:
    provider = connect(retries=1)
    server.reset_counters()
    server.fail_next(5, 500)
    unavailable_within_deadline(lambda: provider.wrap(keys(1)))
    assert server.calls["encrypt"] == 2
    server.fail_next(0)

    server.add_token(SECRET_TOKEN, {k: v for k, v in FULL_POLICY.items() if "rotate" not in k})
    limited = connect(token=SECRET_TOKEN)
    server.reset_counters()
    with pytest.raises(ProviderUnavailable, match="token lacks 'update' on transit/keys/piivault-kek/rotate"):
        limited.rotate()
    assert server.calls["rotate_key"] == 1


# -- AppRole ----------------------------------------------------------------------------------------------------------


def test_approle_login_and_a_single_re_login_when_the_token_expires(
    connect: Callable[..., VaultTransitKeyProvider], server: TransitServer
) -> None:
    server.add_approle(ROLE_ID, SECRET_ID, FULL_POLICY, ttl=60)
    provider = connect(token=None, role_id=ROLE_ID, secret_id=SECRET_ID)
    assert server.calls["approle_login"] == 1
    wrapped = provider.wrap(deks := keys(4))

    server.advance_time(120)  # the AppRole token expires; the threads find out together
    # Four threads: the test server listens with socketserver's backlog of 5, and a dropped SYN costs a 1 s retransmit.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: provider.unwrap(wrapped), range(4)))
    assert results == [deks] * 4
    assert server.calls["approle_login"] == 2  # one re-login, shared by every thread


def test_approle_token_is_replaced_before_it_expires(
    connect: Callable[..., VaultTransitKeyProvider], server: TransitServer
) -> None:
    # Vault before ~1.16 answers an expired token with a bare "permission denied", so waiting for it is not enough.
    server.add_approle(ROLE_ID, SECRET_ID, FULL_POLICY, ttl=2)
    provider = connect(token=None, role_id=ROLE_ID, secret_id=SECRET_ID)
    time.sleep(1.65)  # past 80 % of the 2 s TTL, before the token expires
    server.reset_counters()
    provider.wrap(keys(1))
    assert (server.calls["approle_login"], server.calls["encrypt"]) == (1, 1)  # no refused attempt first


def test_a_revoked_token_is_unavailable_without_retries(
    provider: VaultTransitKeyProvider, server: TransitServer
) -> None:
    server.revoke_token(server.root_token)
    with pytest.raises(ProviderUnavailable, match="invalid or expired"):
        provider.wrap(keys(1))
    assert server.calls["encrypt"] == 1


# -- secrets ----------------------------------------------------------------------------------------------------------


def test_no_secret_in_repr_messages_or_logs(
    connect: Callable[..., VaultTransitKeyProvider], server: TransitServer
) -> None:
    server.add_token(SECRET_TOKEN, FULL_POLICY)
    provider = connect(token=SECRET_TOKEN)
    approle_url = server.url.replace("http://", "http://operator:url-password@")
    server.add_approle(ROLE_ID, SECRET_ID, FULL_POLICY)
    approle = connect(url=approle_url, token=None, role_id=ROLE_ID, secret_id=SECRET_ID)
    deks = keys(2)
    wrapped = provider.wrap(deks)

    def fail_next(count: int, status: int) -> Callable[[], None]:
        return lambda: server.fail_next(count, status)

    def go_down() -> None:
        server.set_down(True)

    def nothing() -> None:
        return None

    failing_calls: list[tuple[Callable[[], None], Callable[[], object]]] = [
        (nothing, lambda: provider.unwrap([tampered(wrapped[0])])),
        (nothing, lambda: provider.rewrap([tampered(wrapped[0])])),
        (fail_next(3, 500), lambda: provider.wrap(deks)),
        (fail_next(1, 400), lambda: provider.wrap(deks)),
        (fail_next(1, 403), lambda: approle.unwrap(wrapped)),
        (go_down, lambda: approle.unwrap(wrapped)),
    ]
    texts = [repr(provider), repr(approle), repr(wrapped)]
    with capture_logs() as logs:
        for prepare, call in failing_calls:
            prepare()
            with pytest.raises((CryptoError, ProviderUnavailable)) as failure:
                call()
            texts.append(str(failure.value))
            if isinstance(failure.value, ProviderUnavailable):  # the hvac error, body and all, is not chained
                assert failure.value.__context__ is None and failure.value.__cause__ is None
    texts.extend(str(entry) for entry in logs)
    assert len(texts) > 10

    secrets = [SECRET_TOKEN, SECRET_ID, server.root_token, "url-password", *(item.blob for item in wrapped)]
    for dek in deks:
        secrets += [dek.reveal().hex(), base64.b64encode(dek.reveal()).decode()]
    leaks = [(secret, text) for text in texts for secret in secrets if secret in text]
    assert leaks == []
