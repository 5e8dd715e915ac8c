"""The purpose registry: the defaults, and a malformed file refused with the purpose and key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent.purposes import LegalBasis, PurposeRegistry, RegistryError
from vault.auth.roles import ROLE_FIELDS, ROLES
from vault.config import ConfigError, Settings


def test_the_default_registry() -> None:
    registry = PurposeRegistry.default()
    names = {purpose.name for purpose in registry}
    assert {"order_fulfilment", "customer_service", "marketing_sms", "analytics", "dsar", "legal"} <= names
    sms = registry.get("marketing_sms")
    assert sms is not None and sms.requires_consent and sms.fields == {"name", "mobile"}
    fulfilment = registry.get("order_fulfilment")
    assert fulfilment is not None and fulfilment.legal_basis is LegalBasis.CONTRACT and not fulfilment.requires_consent
    identity = registry.get("identity_verification")
    assert identity is not None and identity.needs_separate_consent  # national id: purpose AND separate consent
    dsar = registry.get("dsar")
    assert dsar is not None and not dsar.needs_separate_consent and dsar.roles == {"dpo"}
    analytics = registry.get("analytics")
    assert analytics is not None and analytics.fields == frozenset()
    for purpose in registry:
        assert purpose.roles <= set(ROLES) and purpose.retention_days > 0
        assert "auditor" not in purpose.roles and "admin" not in purpose.roles  # never personal data


def test_roles_without_personal_fields() -> None:
    for role in ("analyst", "auditor", "admin"):
        assert ROLE_FIELDS[role] == frozenset()
    assert "national_id" not in ROLE_FIELDS["support"] and "national_id" not in ROLE_FIELDS["marketing"]


GOOD = """
[purposes.loyalty]
legal_basis = "contract"
fields = ["name", "member_id"]
roles = ["service"]
retention_days = 365
"""


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ('legal_basis = "contract"', 'legal_basis = "vibes"', "purposes.loyalty.legal_basis"),
        ('legal_basis = "contract"', 'legal_basis = "contract"\nrequires_consent = true', "PIPL art. 16"),
        ('["name", "member_id"]', '["name", "shoe_size"]', "purposes.loyalty.fields"),
        ('roles = ["service"]', 'roles = ["intern"]', "purposes.loyalty.roles"),
        ("retention_days = 365", "retention_days = 0", "purposes.loyalty.retention_days"),
        ("retention_days = 365", 'retention_days = 365\ncolour = "red"', "unknown keys"),
        ("[purposes.loyalty]", "[purposes.Loyalty]", "purposes.Loyalty"),
    ],
)
def test_a_malformed_registry_names_the_purpose_and_key(replace: str, by: str, message: str) -> None:
    assert PurposeRegistry.parse(GOOD).get("loyalty") is not None
    with pytest.raises(RegistryError) as caught:
        PurposeRegistry.parse(GOOD.replace(replace, by))
    assert message in str(caught.value)


def test_a_file_replaces_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "purposes.toml"
    path.write_text(GOOD, encoding="utf-8")
    registry = PurposeRegistry.load(path)
    assert [purpose.name for purpose in registry] == ["loyalty"]
    assert Settings.from_env({"PIIVAULT_PURPOSES_FILE": str(path)}).purposes_file == path


def test_a_server_does_not_start_with_a_broken_registry(tmp_path: Path) -> None:
    from vault.app import Vault

    path = tmp_path / "purposes.toml"
    path.write_text("[purposes.x]\nlegal_basis = 1\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path, purposes_file=path)
    from vault.storage.db import Database
    from vault.storage.migrate import upgrade

    database = Database.from_url(settings.effective_database_url)
    upgrade(database.engine)
    try:
        with pytest.raises(ConfigError) as caught:
            Vault.open(settings, database=database)
        assert "purposes.x.legal_basis" in str(caught.value)
    finally:
        database.dispose()
