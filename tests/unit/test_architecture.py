"""Domain code never imports grpc or protobuf; only vault.api does. Only one module imports hvac."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_PACKAGES = ("vault", "consent", "audit")
TRANSPORT = ("grpc", "google.protobuf", "google.rpc", "piivault", "grpc_status", "grpc_health", "grpc_reflection")
CRYPTO_PRIMITIVES = ("cryptography.hazmat", "hmac", "hashlib")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(packages: tuple[str, ...]) -> list[Path]:
    return [path for package in packages for path in (ROOT / package).rglob("*.py")]


def _uses(path: Path, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for name in _imports(path) for p in prefixes)


def test_domain_code_does_not_import_the_transport() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _modules(DOMAIN_PACKAGES)
        if "api" not in path.relative_to(ROOT).parts and _uses(path, TRANSPORT)
    ]
    assert offenders == []


def test_only_the_crypto_module_touches_primitives() -> None:
    users = {str(path.relative_to(ROOT)) for path in _modules(DOMAIN_PACKAGES) if _uses(path, CRYPTO_PRIMITIVES)}
    assert users <= {"vault/crypto.py"}


def test_at_most_one_module_imports_hvac() -> None:
    users = [path for path in _modules(DOMAIN_PACKAGES) if _uses(path, ("hvac",))]
    assert len(users) <= 1


def test_every_generated_servicer_method_is_implemented() -> None:
    """The generated base servicers answer UNIMPLEMENTED; ours must override every RPC of every service we serve."""
    import importlib
    import inspect

    from vault.api import server

    served = {
        "customers": ("vault.api.customers", "CustomerServicer"),
        "consent": ("vault.api.consent", "ConsentServicer"),
        "dsar": ("vault.api.dsar", "DsarServicer"),
        "purchases": ("vault.api.purchases", "PurchaseServicer"),
        "analytics": ("vault.api.purchases", "AnalyticsServicer"),
        "keys": ("vault.api.keys", "KeyServicer"),
        "audit": ("vault.api.audit", "AuditServicer"),
    }
    assert len(server.SERVICE_NAMES) == len(served)
    for proto, (module, name) in served.items():
        generated = importlib.import_module(f"piivault.v1.{proto}_pb2_grpc")
        (base,) = [c for n, c in inspect.getmembers(generated, inspect.isclass) if n.endswith("Servicer")]
        ours = getattr(importlib.import_module(module), name)
        methods = [m for m in vars(base) if not m.startswith("_")]
        assert methods and [m for m in methods if getattr(ours, m) is getattr(base, m)] == [], proto
