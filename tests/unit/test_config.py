from __future__ import annotations

import pytest

from vault.config import ConfigError, Settings


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env({})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.effective_database_url.endswith("var/piivault.db")
    custom = Settings.from_env({"PIIVAULT_LISTEN": "0.0.0.0:6000", "PIIVAULT_DATABASE_URL": "postgresql://x/y"})
    assert custom.listen == "0.0.0.0:6000" and custom.effective_database_url == "postgresql://x/y"


@pytest.mark.parametrize(
    ("name", "value"),
    [("PIIVAULT_WORKERS", "many"), ("PIIVAULT_KEY_PROVIDER", "kms"), ("PIIVAULT_REFLECTION", "maybe")],
)
def test_bad_settings_name_the_variable_not_the_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value) and value not in str(caught.value)


def test_local_kek_is_not_in_repr() -> None:
    settings = Settings.from_env({"PIIVAULT_LOCAL_KEK": "c2VjcmV0"})
    assert "c2VjcmV0" not in repr(settings)


def test_tls_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "PIIVAULT_TLS_CERT": "/etc/piivault/server.pem",
            "PIIVAULT_TLS_KEY": "/etc/piivault/server.key",
            "PIIVAULT_TLS_CLIENT_CA": "/etc/piivault/clients-ca.pem",
            "PIIVAULT_TLS_REQUIRE_CLIENT_CERT": "true",
        }
    )
    assert settings.tls_cert is not None and settings.tls_cert.name == "server.pem"
    assert settings.tls_client_ca is not None and settings.tls_require_client_cert
    plain = Settings.from_env({})
    assert plain.tls_cert is None and plain.tls_key is None and plain.tls_client_ca is None
    assert not plain.tls_require_client_cert


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PIIVAULT_TLS_CERT": "/run/s.pem"}, "PIIVAULT_TLS_KEY"),
        ({"PIIVAULT_TLS_KEY": "/run/s.key"}, "PIIVAULT_TLS_CERT"),
        (
            {"PIIVAULT_TLS_CLIENT_CA": "/run/ca.pem", "PIIVAULT_TLS_REQUIRE_CLIENT_CERT": "yes"},
            "PIIVAULT_TLS_CLIENT_CA",
        ),
        (
            {
                "PIIVAULT_TLS_CERT": "/run/s.pem",
                "PIIVAULT_TLS_KEY": "/run/s.key",
                "PIIVAULT_TLS_REQUIRE_CLIENT_CERT": "yes",
            },
            "PIIVAULT_TLS_REQUIRE_CLIENT_CERT",
        ),
        (
            {
                "PIIVAULT_TLS_CERT": "/run/s.pem",
                "PIIVAULT_TLS_KEY": "/run/s.key",
                "PIIVAULT_TLS_CLIENT_CA": "/run/ca.pem",
            },
            "PIIVAULT_TLS_REQUIRE_CLIENT_CERT",  # grpcio can only require a client certificate, not ask for one
        ),
        ({"PIIVAULT_TLS_REQUIRE_CLIENT_CERT": "sometimes"}, "PIIVAULT_TLS_REQUIRE_CLIENT_CERT"),
    ],
)
def test_inconsistent_tls_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert named in str(caught.value)
    assert not any(value in str(caught.value) for value in env.values())
