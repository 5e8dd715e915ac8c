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
