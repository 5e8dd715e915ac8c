"""The SDK installs and works on its own (issue 9, acceptance 1): ``pip install ./clients`` into a fresh virtual
environment, then a script there creates, finds and reads a customer on a server running from the main environment.

The fresh environment holds only what clients/pyproject.toml declares (grpcio, protobuf, googleapis-common-protos):
the script proves the server's packages are not importable there. It is installed with the main environment's pip
(``pip --python``): the pip that ``venv`` bundles is much slower to fetch grpcio here, and the installer is not what
is under test. PyPI must be reachable; this takes 20-60 s, mostly downloading grpcio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.people import People
from vault.app import Vault

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.local_keyring, pytest.mark.slow]

SCRIPT = r"""
import importlib.util
import json
import os
import sys

# Nothing of the server may be importable here: not its packages, not its dependencies.
present = [
    name
    for name in ("vault", "consent", "audit", "piivault.cli", "sqlalchemy", "cryptography", "grpc_status")
    if importlib.util.find_spec(name) is not None
]

from piivault.client import PiiVault, InvalidArgument
from piivault.v1 import customers_pb2

with PiiVault(os.environ["PIIVAULT_ADDRESS"], os.environ["PIIVAULT_TOKEN"]) as vault:
    sent = customers_pb2.Customer(name=os.environ["NAME"], mobile=os.environ["MOBILE"])
    created = vault.customers.create(sent).customer
    found = vault.customers.find(mobile="+86 " + os.environ["MOBILE"], purpose="customer_service").customers
    read = vault.customers.get(created.customer_id, purpose="customer_service").customer
    try:
        vault.customers.create(customers_pb2.Customer(name="x", mobile="12"))
        invalid = []
    except InvalidArgument as error:
        invalid = error.fields

import piivault.client
print(json.dumps({
    "present": present,
    "sdk": piivault.client.__file__,
    "created": created.customer_id,
    "found": [c.customer_id for c in found],
    "read": [read.customer_id, read.name, read.mobile],
    "invalid": invalid,
}))
"""


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("sdk-venv")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(ROOT / "clients")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


def test_the_sdk_works_in_a_fresh_venv_without_the_server(
    sdk_python: Path, vault: Vault, address: str, people: People, tmp_path: Path
) -> None:
    person = people.next()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not key.startswith("PIIVAULT_")
    }
    env |= {
        "PIIVAULT_ADDRESS": address,
        "PIIVAULT_TOKEN": vault.tokens.create("fresh-venv", "service").secret,
        "NAME": person.name,
        "MOBILE": person.mobile,
    }
    done = subprocess.run(
        [str(sdk_python), "-I", "-c", SCRIPT],  # -I: no current directory or user site on sys.path
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["present"] == []
    assert Path(result["sdk"]).is_relative_to(sdk_python.parent.parent)  # the installed copy, not the checkout
    assert result["found"] == [result["created"]]
    assert result["read"] == [result["created"], person.name, "+86" + person.mobile]
    assert result["invalid"] == ["customer.mobile"]
