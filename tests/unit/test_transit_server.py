"""Wire-level tests of tests/transit_server.py, driven only through the real hvac client.

Each test pins down a behaviour from /work/shared/VAULT_TRANSIT.md that piivault's Vault key provider relies on, so a
regression in the fake shows up here rather than as a confusing failure in the provider's tests.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from typing import Any

import hvac
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hvac.exceptions import (
    Forbidden,
    InternalServerError,
    InvalidPath,
    InvalidRequest,
    ParamValidationError,
    UnexpectedError,
    VaultDown,
)

from tests.transit_server import TransitServer

ENVELOPE_KEYS = {
    "request_id",
    "lease_id",
    "renewable",
    "lease_duration",
    "data",
    "wrap_info",
    "warnings",
    "auth",
    "mount_type",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def make_client(server: TransitServer, token: str, **kwargs: Any) -> Any:
    # url and token are always explicit: hvac would otherwise fall back to VAULT_ADDR and ~/.vault-token.
    return hvac.Client(url=server.url, token=token, **kwargs)


@pytest.fixture
def server() -> Iterator[TransitServer]:
    with TransitServer() as running:
        yield running


@pytest.fixture
def client(server: TransitServer) -> Any:
    return make_client(server, server.root_token)


@pytest.fixture
def transit(client: Any) -> Any:
    transit = client.secrets.transit
    transit.create_key("kek")
    return transit


def encrypt(transit: Any, plaintext: bytes, **kwargs: Any) -> str:
    ciphertext: str = transit.encrypt_data("kek", plaintext=b64(plaintext), **kwargs)["data"]["ciphertext"]
    return ciphertext


# -- key management ---------------------------------------------------------------------------------------------------


def test_key_lifecycle(client: Any) -> None:
    transit = client.secrets.transit
    created = transit.create_key("kek")
    assert set(created) == ENVELOPE_KEYS
    assert created["warnings"] is None
    assert created["mount_type"] == "transit"
    data = created["data"]
    assert (data["name"], data["type"], data["latest_version"]) == ("kek", "aes256-gcm96", 1)
    assert (data["min_decryption_version"], data["min_encryption_version"], data["min_available_version"]) == (1, 0, 0)
    assert isinstance(data["keys"]["1"], int)

    again = transit.create_key("kek", key_type="chacha20-poly1305")
    assert again["warnings"] == ["key kek already existed"]
    assert again["data"]["type"] == "aes256-gcm96"

    rotated = transit.rotate_key("kek")["data"]
    assert rotated["latest_version"] == 2
    assert sorted(rotated["keys"]) == ["1", "2"]
    assert transit.read_key("kek")["data"]["min_decryption_version"] == 1
    assert transit.list_keys()["data"]["keys"] == ["kek"]

    with pytest.raises(InvalidRequest, match="error deleting policy kek: deletion is not allowed for this key"):
        transit.delete_key("kek")
    transit.update_key_configuration("kek", deletion_allowed=True)
    deleted = transit.delete_key("kek")
    assert isinstance(deleted, requests.Response)
    assert (deleted.status_code, deleted.content) == (204, b"")

    with pytest.raises(InvalidPath) as missing:
        transit.read_key("kek")
    assert missing.value.errors == []
    with pytest.raises(InvalidPath):
        transit.list_keys()


def test_raw_wire_format(server: TransitServer) -> None:
    raw = make_client(server, server.root_token, adapter=hvac.adapters.RawAdapter)
    created = raw.secrets.transit.create_key("kek")
    assert created.headers["Content-Type"] == "application/json"
    assert created.headers["Cache-Control"] == "no-store"
    missing = raw.adapter.get("/v1/transit/keys/nope", raise_exception=False)
    assert (missing.status_code, missing.headers["Content-Type"], missing.json()) == (
        404,
        "application/json",
        {"errors": []},
    )
    listed = raw.adapter.get("/v1/transit/keys", params={"list": "true"})
    assert listed.json()["data"] == {"keys": ["kek"]}


def test_unrecognized_parameters_are_warned_about(client: Any) -> None:
    response = client.adapter.post("/v1/transit/keys/kek", json={"type": "aes256-gcm96", "colour": "blue"})
    assert response["warnings"] == ["Endpoint ignored these unrecognized parameters: [colour]"]


def test_create_key_validation(client: Any) -> None:
    transit = client.secrets.transit
    with pytest.raises(InvalidRequest, match="unknown key type aes512"):
        client.adapter.post("/v1/transit/keys/k", json={"type": "aes512"})
    with pytest.raises(InvalidRequest, match="convergent encryption requires derivation to be enabled"):
        client.adapter.post("/v1/transit/keys/k", json={"convergent_encryption": True})
    with pytest.raises(InvalidRequest, match="auto rotate period must be 0 to disable or at least an hour"):
        transit.create_key("k", auto_rotate_period="30m")
    with pytest.raises(InvalidPath, match="unsupported path"):
        transit.create_key("-bad-")
    assert transit.create_key("a.b-c_d", auto_rotate_period="24h")["data"]["auto_rotate_period"] == 86400


def test_config_rules(transit: Any) -> None:
    transit.rotate_key("kek")
    forced = transit.update_key_configuration("kek", min_decryption_version=0)
    assert forced["data"]["min_decryption_version"] == 1
    assert "forcing minimum to 1" in forced["warnings"][0]
    with pytest.raises(InvalidRequest, match="cannot set min decryption version of 5, latest key version is 2"):
        transit.update_key_configuration("kek", min_decryption_version=5)
    with pytest.raises(InvalidRequest, match="cannot set min encryption version of 3, latest key version is 2"):
        transit.update_key_configuration("kek", min_encryption_version=3)
    transit.update_key_configuration("kek", min_decryption_version=2)
    with pytest.raises(InvalidRequest, match="min encryption version of 1 must be greater than or equal to min dec"):
        transit.update_key_configuration("kek", min_encryption_version=1)
    with pytest.raises(ParamValidationError):  # hvac refuses enc == dec locally; Vault itself allows it
        transit.update_key_configuration("kek", min_decryption_version=2, min_encryption_version=2)
    equal = transit.update_key_configuration("kek", min_encryption_version=2)["data"]
    assert (equal["min_decryption_version"], equal["min_encryption_version"]) == (2, 2)

    transit.update_key_configuration("kek", exportable=True)
    assert transit.update_key_configuration("kek", exportable=False)["data"]["exportable"] is True
    with pytest.raises(InvalidRequest, match="no existing key named nope could be found"):
        transit.update_key_configuration("nope", deletion_allowed=True)


def test_failed_config_changes_nothing(transit: Any) -> None:
    with pytest.raises(InvalidRequest, match="latest key version is 1"):
        transit.update_key_configuration("kek", deletion_allowed=True, min_decryption_version=9)
    assert transit.read_key("kek")["data"]["deletion_allowed"] is False


def test_trim_destroys_old_versions(server: TransitServer, transit: Any) -> None:
    transit.rotate_key("kek")
    transit.rotate_key("kek")
    with pytest.raises(InvalidRequest, match="cannot be set when minimum encryption version is not set"):
        transit.trim_key("kek", 2)
    transit.update_key_configuration("kek", min_decryption_version=2)
    transit.update_key_configuration("kek", min_encryption_version=2)
    trimmed = transit.trim_key("kek", 2)["data"]
    assert trimmed["min_available_version"] == 2
    assert set(server.key_versions("kek")) == {2, 3}
    with pytest.raises(InvalidRequest, match="min decryption version should not be less then min available version"):
        transit.update_key_configuration("kek", min_decryption_version=1)
    with pytest.raises(InvalidRequest, match="minimum available version cannot be decremented"):
        transit.trim_key("kek", 1)


MISSING_KEY_CALLS: list[tuple[Callable[[Any], Any], str]] = [
    (lambda t: t.decrypt_data("nope", ciphertext="vault:v1:AAAA"), "encryption key not found"),
    (lambda t: t.rewrap_data("nope", ciphertext="vault:v1:AAAA"), "encryption key not found"),
    (lambda t: t.generate_data_key("nope", key_type="wrapped"), "encryption key not found"),
    (lambda t: t.update_key_configuration("nope", deletion_allowed=True), "no existing key named nope could be found"),
    (lambda t: t.rotate_key("nope"), "key not found"),
    (lambda t: t.trim_key("nope", 1), "invalid key name"),
    (lambda t: t.delete_key("nope"), "error deleting policy nope: could not delete key; not found"),
    (lambda t: t.sign_data("nope", hash_input=b64(b"x")), "signing key not found"),
    (
        lambda t: t.verify_signed_data("nope", hash_input="eA==", signature="vault:v1:AA=="),
        "signature verification key not found",
    ),
]


@pytest.mark.parametrize(("call", "message"), MISSING_KEY_CALLS)
def test_missing_key_messages(client: Any, call: Callable[[Any], Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)) as info:
        call(client.secrets.transit)
    assert info.value.errors == [message]


# -- encrypt / decrypt ------------------------------------------------------------------------------------------------


def test_encrypt_decrypt_and_versions(transit: Any) -> None:
    first = transit.encrypt_data("kek", plaintext=b64(b"secret"))["data"]
    assert first["ciphertext"].startswith("vault:v1:")
    assert first["key_version"] == 1
    assert transit.decrypt_data("kek", ciphertext=first["ciphertext"])["data"] == {"plaintext": b64(b"secret")}
    assert encrypt(transit, b"") != encrypt(transit, b"")  # fresh nonce per encryption

    transit.rotate_key("kek")
    second = transit.encrypt_data("kek", plaintext=b64(b"secret"))["data"]
    assert (second["ciphertext"][:9], second["key_version"]) == ("vault:v2:", 2)
    assert transit.encrypt_data("kek", plaintext=b64(b"x"), key_version=1)["data"]["key_version"] == 1
    assert unb64(transit.decrypt_data("kek", ciphertext=first["ciphertext"])["data"]["plaintext"]) == b"secret"
    with pytest.raises(InvalidRequest, match="requested version for encryption is higher than the latest key version"):
        transit.encrypt_data("kek", plaintext=b64(b"x"), key_version=3)


@pytest.mark.parametrize(
    ("ciphertext", "message"),
    [
        ("garbage", "invalid ciphertext: no prefix"),
        ("vault:v1", "invalid ciphertext: wrong number of fields"),
        ("vault:vX:AAAA", "invalid ciphertext: version number could not be decoded"),
        ("vault:v7:AAAA", "invalid ciphertext: version is too new"),
        ("vault:v1:!!!!", "invalid ciphertext: could not decode base64"),
        ("vault:v1:AAAA", "invalid ciphertext length"),
        ("vault:v1:" + b64(bytes(40)), "cipher: message authentication failed"),
    ],
)
def test_decrypt_error_messages(transit: Any, ciphertext: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        transit.decrypt_data("kek", ciphertext=ciphertext)


def test_bad_plaintext_base64_uses_go_offsets(transit: Any) -> None:
    with pytest.raises(InvalidRequest, match="illegal base64 data at input byte 4"):
        transit.encrypt_data("kek", plaintext="aGVsbG8")


def test_associated_data_is_bound_to_ciphertext(transit: Any) -> None:
    ciphertext = encrypt(transit, b"dek", associated_data=b64(b"row-1"))
    plaintext = transit.decrypt_data("kek", ciphertext=ciphertext, associated_data=b64(b"row-1"))["data"]["plaintext"]
    assert unb64(plaintext) == b"dek"
    for wrong in (b64(b"row-2"), None):
        with pytest.raises(InvalidRequest, match="cipher: message authentication failed"):
            transit.decrypt_data("kek", ciphertext=ciphertext, associated_data=wrong)
    with pytest.raises(InvalidRequest, match="cipher: message authentication failed"):
        transit.rewrap_data("kek", ciphertext=ciphertext)  # Vault's rewrap has no associated_data
    with pytest.raises(InternalServerError):
        transit.encrypt_data("kek", plaintext=b64(b"x"), associated_data="not base64!")


def test_min_decryption_version_rejects_and_hides_old_versions(transit: Any) -> None:
    old = encrypt(transit, b"old")
    transit.rotate_key("kek")
    transit.rotate_key("kek")
    assert sorted(transit.update_key_configuration("kek", min_decryption_version=2)["data"]["keys"]) == ["2", "3"]
    with pytest.raises(InvalidRequest, match=r"ciphertext or signature version is disallowed by policy \(too old\)"):
        transit.decrypt_data("kek", ciphertext=old)
    assert sorted(transit.update_key_configuration("kek", min_decryption_version=1)["data"]["keys"]) == ["1", "2", "3"]
    assert unb64(transit.decrypt_data("kek", ciphertext=old)["data"]["plaintext"]) == b"old"


def test_min_encryption_version_bounds_key_version(transit: Any) -> None:
    transit.rotate_key("kek")
    transit.update_key_configuration("kek", min_encryption_version=2)
    with pytest.raises(InvalidRequest, match="less than the minimum encryption key version"):
        transit.encrypt_data("kek", plaintext=b64(b"x"), key_version=1)
    assert transit.encrypt_data("kek", plaintext=b64(b"x"))["data"]["key_version"] == 2


def test_derived_key_needs_context(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("derived", derived=True)
    with pytest.raises(InvalidRequest, match="missing 'context' for key derivation"):
        transit.encrypt_data("derived", plaintext=b64(b"x"))
    ciphertext = transit.encrypt_data("derived", plaintext=b64(b"x"), context=b64(b"user-1"))["data"]["ciphertext"]
    with pytest.raises(InvalidRequest, match="cipher: message authentication failed"):
        transit.decrypt_data("derived", ciphertext=ciphertext, context=b64(b"user-2"))
    decrypted = transit.decrypt_data("derived", ciphertext=ciphertext, context=b64(b"user-1"))["data"]["plaintext"]
    assert unb64(decrypted) == b"x"


# -- batches ----------------------------------------------------------------------------------------------------------


def test_batch_round_trip_keeps_order_and_references(transit: Any) -> None:
    items = [{"plaintext": b64(f"value-{i}".encode()), "reference": f"ref-{i}"} for i in range(5)]
    encrypted = transit.encrypt_data("kek", batch_input=items)["data"]["batch_results"]
    assert [item["reference"] for item in encrypted] == [f"ref-{i}" for i in range(5)]
    assert all(item["key_version"] == 1 for item in encrypted)
    decrypted = transit.decrypt_data(
        "kek", batch_input=[{"ciphertext": item["ciphertext"], "reference": item["reference"]} for item in encrypted]
    )["data"]["batch_results"]
    assert [unb64(item["plaintext"]) for item in decrypted] == [f"value-{i}".encode() for i in range(5)]
    assert transit.encrypt_data("kek", batch_input=[{"plaintext": ""}])["data"]["batch_results"][0]["reference"] == ""


def test_batch_encrypt_with_a_failing_item_is_400_with_results(transit: Any) -> None:
    batch = [{"plaintext": b64(b"ok"), "reference": "good"}, {"plaintext": "not base64!", "reference": "bad"}]
    with pytest.raises(InvalidRequest) as info:
        transit.encrypt_data("kek", batch_input=batch)
    error = info.value
    assert error.errors is None
    assert "errors" not in error.json
    assert error.json["mount_type"] == ""
    good, bad = error.json["data"]["batch_results"]
    assert good["ciphertext"].startswith("vault:v1:")
    assert good["reference"] == "good"
    assert bad == {"error": "illegal base64 data at input byte 3", "reference": "bad"}


def test_batch_decrypt_failures(transit: Any) -> None:
    good = encrypt(transit, b"fine")
    batch = [{"ciphertext": good}, {"ciphertext": "vault:v9:AAAA"}, {"ciphertext": ""}]
    with pytest.raises(InvalidRequest) as info:
        transit.decrypt_data("kek", batch_input=batch)
    results = info.value.json["data"]["batch_results"]
    assert unb64(results[0]["plaintext"]) == b"fine"
    assert results[1] == {"plaintext": "", "error": "invalid ciphertext: version is too new", "reference": ""}
    assert results[2]["error"] == "missing ciphertext to decrypt"


def test_partial_failure_response_code(client: Any, transit: Any) -> None:
    body = {"batch_input": [{"plaintext": "AA=="}, {"plaintext": "%%"}], "partial_failure_response_code": 202}
    response = client.adapter.post("/v1/transit/encrypt/kek", json=body)
    assert response.status_code == 202
    body["batch_input"] = [{"plaintext": "%%"}]
    with pytest.raises(InvalidRequest):  # the override applies only when something succeeded
        client.adapter.post("/v1/transit/encrypt/kek", json=body)


def test_batch_request_level_errors(transit: Any) -> None:
    with pytest.raises(InternalServerError, match=r"failed to parse batch input: '\[1\]\.plaintext'"):
        transit.encrypt_data("kek", batch_input=[{"plaintext": "AA=="}, {"context": "AA=="}])
    with pytest.raises(InvalidRequest, match="missing batch input to process"):
        transit.encrypt_data("kek", batch_input=[])
    with pytest.raises(InvalidRequest, match="context should be set either in all the request blocks or in none"):
        transit.encrypt_data("kek", batch_input=[{"plaintext": "AA==", "context": "AA=="}, {"plaintext": "AA=="}])


# -- rewrap and datakey -----------------------------------------------------------------------------------------------


def test_rewrap(transit: Any) -> None:
    old = encrypt(transit, b"dek")
    transit.rotate_key("kek")
    rewrapped = transit.rewrap_data("kek", ciphertext=old)["data"]
    assert rewrapped["ciphertext"].startswith("vault:v2:")
    assert rewrapped["key_version"] == 2
    again = transit.rewrap_data("kek", ciphertext=rewrapped["ciphertext"])["data"]["ciphertext"]
    assert again.startswith("vault:v2:")
    assert again != rewrapped["ciphertext"]
    assert unb64(transit.decrypt_data("kek", ciphertext=again)["data"]["plaintext"]) == b"dek"

    batch = [{"ciphertext": old, "reference": "a"}, {"ciphertext": "junk", "reference": "b"}]
    results = transit.rewrap_data("kek", ciphertext=None, batch_input=batch)["data"]["batch_results"]
    assert results[0]["key_version"] == 2
    assert results[1] == {"error": "invalid ciphertext: no prefix", "reference": "b"}

    transit.update_key_configuration("kek", min_decryption_version=2)
    with pytest.raises(InvalidRequest, match=r"\(too old\)"):
        transit.rewrap_data("kek", ciphertext=old)


def test_datakey(transit: Any) -> None:
    plain = transit.generate_data_key("kek", key_type="plaintext", bits=512)["data"]
    assert len(unb64(plain["plaintext"])) == 64
    assert plain["key_version"] == 1
    assert transit.decrypt_data("kek", ciphertext=plain["ciphertext"])["data"]["plaintext"] == plain["plaintext"]
    wrapped = transit.generate_data_key("kek", key_type="wrapped")["data"]
    assert "plaintext" not in wrapped
    assert wrapped["ciphertext"].startswith("vault:v1:")


# -- sign / verify ----------------------------------------------------------------------------------------------------


def test_ed25519_sign_and_verify(client: Any) -> None:
    transit = client.secrets.transit
    transit.create_key("checkpoint", key_type="ed25519")
    info = transit.read_key("checkpoint")["data"]
    assert (info["supports_signing"], info["supports_encryption"]) == (True, False)
    public_key = Ed25519PublicKey.from_public_bytes(unb64(info["keys"]["1"]["public_key"]))

    signed = transit.sign_data("checkpoint", hash_input=b64(b"root-hash"))["data"]
    assert signed["signature"].startswith("vault:v1:")
    assert signed["key_version"] == 1
    public_key.verify(unb64(signed["signature"].split(":", 2)[2]), b"root-hash")

    verify = transit.verify_signed_data
    assert verify("checkpoint", hash_input=b64(b"root-hash"), signature=signed["signature"])["data"]["valid"] is True
    assert verify("checkpoint", hash_input=b64(b"other"), signature=signed["signature"])["data"]["valid"] is False
    with pytest.raises(InvalidRequest, match="invalid signature: no prefix"):
        verify("checkpoint", hash_input=b64(b"root-hash"), signature="garbage")
    with pytest.raises(InvalidRequest, match="message encryption not supported for key type ed25519"):
        transit.encrypt_data("checkpoint", plaintext=b64(b"x"))


# -- auth and ACLs ----------------------------------------------------------------------------------------------------


def test_unknown_token_is_forbidden(server: TransitServer) -> None:
    stranger = make_client(server, "not-a-token")
    with pytest.raises(Forbidden) as info:
        stranger.secrets.transit.list_keys()
    assert "permission denied" in info.value.errors[0]
    assert "invalid token" in info.value.errors[0]
    assert stranger.is_authenticated() is False


def test_policy_limits_paths_and_capabilities(server: TransitServer, transit: Any) -> None:
    transit.create_key("other")
    server.add_token("svc", {"transit/keys/kek": ["read"], "transit/encrypt/kek": ["update"]})
    service = make_client(server, "svc").secrets.transit
    assert make_client(server, "svc").is_authenticated() is True
    assert service.read_key("kek")["data"]["name"] == "kek"
    assert service.encrypt_data("kek", plaintext=b64(b"x"))["data"]["key_version"] == 1
    for denied in (lambda: service.read_key("other"), lambda: service.rotate_key("kek"), service.list_keys):
        with pytest.raises(Forbidden, match="permission denied"):
            denied()


def test_encrypt_to_missing_key_needs_create(server: TransitServer, client: Any) -> None:
    server.add_token("update-only", {"transit/encrypt/*": ["update"]})
    server.add_token("upserter", {"transit/encrypt/*": ["create", "update"]})
    limited = make_client(server, "update-only").secrets.transit
    with pytest.raises(Forbidden, match="permission denied"):
        limited.encrypt_data("fresh", plaintext=b64(b"x"))
    assert not server.has_key("fresh")

    upserter = make_client(server, "upserter").secrets.transit
    assert upserter.encrypt_data("fresh", plaintext=b64(b"x"))["data"]["key_version"] == 1
    assert server.has_key("fresh")
    assert limited.encrypt_data("fresh", plaintext=b64(b"x"))["data"]["key_version"] == 1

    client.adapter.post("/v1/transit/config/keys", json={"disable_upsert": True})
    with pytest.raises(InvalidRequest, match="encryption key not found"):
        upserter.encrypt_data("another", plaintext=b64(b"x"))


def test_approle_login(server: TransitServer) -> None:
    server.add_approle("role-1", "secret-1", {"transit/encrypt/kek": ["update"]}, ttl=600)
    app = make_client(server, "")
    assert app.is_authenticated() is False
    with pytest.raises(InvalidRequest, match="invalid role or secret ID"):
        app.auth.approle.login(role_id="role-1", secret_id="wrong")

    login = app.auth.approle.login(role_id="role-1", secret_id="secret-1")
    assert login["data"] is None
    assert login["mount_type"] == "approle"
    auth = login["auth"]
    assert (auth["lease_duration"], auth["renewable"], auth["metadata"]) == (600, True, {"role_name": "piivault"})
    assert app.token == auth["client_token"]
    assert app.is_authenticated() is True
    assert app.lookup_token()["data"]["policies"] == ["default", "piivault"]

    server.advance_time(601)
    assert app.is_authenticated() is False


# -- sys, sealing, routing and fault injection ------------------------------------------------------------------------


def test_health(server: TransitServer, client: Any) -> None:
    health = client.sys.read_health_status(method="GET")
    assert (health["initialized"], health["sealed"], health["standby"]) == (True, False, False)
    head = client.sys.read_health_status()
    assert (head.status_code, head.content) == (200, b"")

    server.set_standby(True)
    assert client.sys.read_health_status(method="GET").status_code == 429
    assert client.sys.read_health_status(method="GET", standby_ok=True)["standby"] is True
    assert client.sys.read_health_status(method="GET", standby_code=200)["standby"] is True


def test_sealed_server(server: TransitServer, transit: Any, client: Any) -> None:
    server.seal()
    with pytest.raises(VaultDown) as info:
        transit.encrypt_data("kek", plaintext=b64(b"x"))
    assert info.value.errors == ["Vault is sealed"]
    health = client.sys.read_health_status(method="GET")
    assert health.status_code == 503
    assert health.json()["sealed"] is True
    assert "cluster_name" not in health.json()
    assert client.sys.read_health_status(method="GET", sealed_code=200)["sealed"] is True
    assert client.sys.is_sealed() is True

    server.unseal()
    assert transit.encrypt_data("kek", plaintext=b64(b"x"))["data"]["key_version"] == 1


def test_routing_errors(client: Any, transit: Any) -> None:
    with pytest.raises(InvalidPath, match="no handler for route"):
        transit.list_keys(mount_point="elsewhere")
    with pytest.raises(UnexpectedError, match="unsupported operation"):
        client.adapter.get("/v1/transit/encrypt/kek")


def test_custom_mount_point() -> None:
    with TransitServer(mount_point="crypto") as server:
        transit = make_client(server, server.root_token).secrets.transit
        assert transit.create_key("kek", mount_point="crypto")["data"]["latest_version"] == 1
        with pytest.raises(InvalidPath, match="no handler for route"):
            transit.read_key("kek")


def test_pre_1_14_answers_204() -> None:
    with TransitServer(pre_1_14=True) as server:
        transit = make_client(server, server.root_token).secrets.transit
        created = transit.create_key("kek")
        assert isinstance(created, requests.Response)
        assert (created.status_code, created.content) == (204, b"")
        assert transit.rotate_key("kek").status_code == 204
        assert transit.read_key("kek")["data"]["latest_version"] == 2


def test_fault_injection_and_counters(server: TransitServer, transit: Any) -> None:
    server.reset_counters()
    server.fail_next(1)
    with pytest.raises(InternalServerError):
        encrypt(transit, b"x")
    encrypt(transit, b"x")
    assert server.calls["encrypt"] == 2
    assert server.request_count == 2

    server.fail_next(1, status=503)
    with pytest.raises(VaultDown):
        encrypt(transit, b"x")

    server.set_down(True)
    with pytest.raises(requests.exceptions.ConnectionError):
        encrypt(transit, b"x")
    server.set_down(False)
    assert encrypt(transit, b"x").startswith("vault:v1:")


def test_latency(server: TransitServer) -> None:
    impatient = make_client(server, server.root_token, timeout=0.05)
    server.set_latency(0.2)
    with pytest.raises(requests.exceptions.Timeout):
        impatient.secrets.transit.list_keys()


def test_capabilities_self_answers_like_vault(server: TransitServer, client: Any) -> None:
    """Every token may ask (the default policy); root answers ``root``, nothing is ``deny``; one path is repeated
    under ``capabilities``; a sys/ answer repeats ``data`` at the envelope's top level."""
    assert client.sys.get_capabilities(paths=["transit/keys/kek"])["data"] == {
        "transit/keys/kek": ["root"],
        "capabilities": ["root"],
    }
    server.add_token("hvs.synthetic-limited", {"transit/encrypt/+": ["update"], "transit/keys/kek": ["read"]})
    limited = make_client(server, "hvs.synthetic-limited")
    answer = limited.sys.get_capabilities(paths=["transit/encrypt/kek", "transit/keys/kek", "transit/export/x"])
    expected = {"transit/encrypt/kek": ["update"], "transit/keys/kek": ["read"], "transit/export/x": ["deny"]}
    assert answer["data"] == expected
    assert {key: answer[key] for key in expected} == expected
    with pytest.raises(InvalidRequest):
        limited.sys.get_capabilities(paths=[])
