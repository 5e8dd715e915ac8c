from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from vault.crypto import CryptoError, FieldCipher, FieldContext, KeyWrapCipher, Mac, SecretKey, key_ref_of

PLAINTEXT = "张伟 13800138000".encode()
HERE = FieldContext("customers", "id-a", "name")


def test_round_trip_and_random_nonces() -> None:
    cipher = FieldCipher(SecretKey.generate(), key_ref=1)
    first, second = cipher.encrypt(PLAINTEXT, HERE), cipher.encrypt(PLAINTEXT, HERE)
    assert first != second
    assert cipher.decrypt(first, HERE) == PLAINTEXT
    assert PLAINTEXT not in first
    assert first[0] == 0x01 and key_ref_of(first) == 1


@pytest.mark.parametrize(
    "elsewhere",
    [
        FieldContext("customers", "id-b", "name"),
        FieldContext("customers", "id-a", "address"),
        FieldContext("purchases", "id-a", "name"),
    ],
    ids=["other-row", "other-field", "other-table"],
)
def test_ciphertext_moved_elsewhere_fails(elsewhere: FieldContext) -> None:
    cipher = FieldCipher(SecretKey.generate(), key_ref=1)
    token = cipher.encrypt(PLAINTEXT, HERE)
    with pytest.raises(CryptoError):
        cipher.decrypt(token, elsewhere)


def test_every_single_byte_flip_is_detected() -> None:
    cipher = FieldCipher(SecretKey.generate(), key_ref=1)
    token = cipher.encrypt(PLAINTEXT, HERE)
    for index in range(len(token)):
        tampered = bytearray(token)
        tampered[index] ^= 0x01
        with pytest.raises(CryptoError):
            cipher.decrypt(bytes(tampered), HERE)


def test_wrong_key_truncation_and_forged_key_ref_fail() -> None:
    key = SecretKey.generate()
    token = FieldCipher(key, key_ref=1).encrypt(PLAINTEXT, HERE)
    with pytest.raises(CryptoError):
        FieldCipher(SecretKey.generate(), key_ref=1).decrypt(token, HERE)
    with pytest.raises(CryptoError):
        FieldCipher(key, key_ref=1).decrypt(token[:20], HERE)
    with pytest.raises(CryptoError):
        FieldCipher(key, key_ref=2).decrypt(token, HERE)


def test_key_wrap_binds_associated_data() -> None:
    kek = KeyWrapCipher(SecretKey.generate())
    dek = SecretKey.generate()
    wrapped = kek.wrap(dek, b"ctx")
    assert kek.unwrap(wrapped, b"ctx") == dek
    with pytest.raises(CryptoError):
        kek.unwrap(wrapped, b"other")


def test_secrets_never_print() -> None:
    key = SecretKey.generate()
    for text in (repr(key), str(key), repr(FieldCipher(key, 1)), repr(Mac(key)), repr(KeyWrapCipher(key))):
        assert key.reveal().hex() not in text
        assert "secure" in text


def test_mac_is_keyed_and_domain_separated() -> None:
    key = SecretKey.generate()
    assert Mac(key).digest("mobile", b"+8613800138000") != Mac(SecretKey.generate()).digest("mobile", b"+8613800138000")
    assert Mac(key).digest("mobile", b"x") != Mac(key).digest("email", b"x")
    assert Mac(key).digest("mobile", b"x") == Mac(key).digest("mobile", b"x")


def test_mac_is_standard_hmac_sha256_and_reusable() -> None:
    # The digest is plain HMAC-SHA256 over domain || 0x00 || value (the standard library's as the reference), so
    # stored blind indexes stay valid whatever the implementation; one keyed Mac gives the same digest however often,
    # and from however many threads, it is used.
    key = SecretKey(b"Jefe".ljust(32, b"\x00"))
    mac = Mac(key)
    expected = hmac.new(key.reveal(), b"what do ya want \x00for nothing?", hashlib.sha256).digest()
    assert mac.digest("what do ya want ", b"for nothing?") == expected
    with ThreadPoolExecutor(4) as pool:
        digests = set(pool.map(lambda _: mac.digest("what do ya want ", b"for nothing?"), range(2000)))
    assert digests == {expected}
    assert mac.digest("mobile", b"x") != expected


def test_a_record_cipher_seals_exactly_as_field_contexts_do_and_binds_the_place() -> None:
    key = SecretKey.generate()
    cipher = FieldCipher(key, 7)
    record = cipher.record("customers", "id-a")
    sealed = record.encrypt(PLAINTEXT, "name")
    assert cipher.decrypt(sealed, HERE) == PLAINTEXT  # the same associated data as FieldContext's
    assert record.decrypt(cipher.encrypt(PLAINTEXT, HERE), "name") == PLAINTEXT
    assert key_ref_of(sealed) == 7
    elsewhere: tuple[Callable[[], bytes], ...] = (
        lambda: record.decrypt(sealed, "mobile"),  # another field
        lambda: cipher.record("customers", "id-b").decrypt(sealed, "name"),  # another record
        lambda: cipher.record("consents", "id-a").decrypt(sealed, "name"),  # another table
        lambda: FieldCipher(key, 8).record("customers", "id-a").decrypt(sealed, "name"),  # another key ref
        lambda: FieldCipher(SecretKey.generate(), 7).record("customers", "id-a").decrypt(sealed, "name"),
        lambda: record.decrypt(sealed[:-1] + bytes([sealed[-1] ^ 1]), "name"),  # tampered
        lambda: record.decrypt(sealed[:20], "name"),  # truncated
    )
    for attempt in elsewhere:
        with pytest.raises(CryptoError):
            attempt()
    assert "secure" in repr(record) and key.reveal().hex() not in repr(record)
