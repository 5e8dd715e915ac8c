"""``piivault audit|dsar|keys|analytics|import`` against a running vault through the SDK (``--address``/
PIIVAULT_ADDRESS), not the database — with the same output as the in-process commands."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.rpc import error_details_pb2
from typer.testing import CliRunner, Result

from audit.queries import AuditQueries, EventFilter
from piivault.cli.main import app as cli
from piivault.cli.remote import Pacer
from piivault.client import PiiVault, ResourceExhausted, RetryPolicy
from piivault.v1 import consent_pb2, purchases_pb2
from tests.support import canary
from tests.support.people import People, Person, customer_message
from tests.support.server import ServerProcess
from vault.app import Vault
from vault.config import Settings
from vault.keys.provider import KeyProvider
from vault.storage.db import Database

pytestmark = pytest.mark.local_keyring


def test_audit_commands_through_the_api(
    vault: Vault, address: str, client: PiiVault, people: People, tmp_path: Path, database_url: str
) -> None:
    for person in people.many(3):
        created = client.customers.create(customer_message(person)).customer
        client.customers.get(created.customer_id, purpose="customer_service")
    runner = CliRunner()
    api = {"PIIVAULT_ADDRESS": address, "PIIVAULT_TOKEN": vault.tokens.create("audit-cli", "auditor").secret}

    queried = runner.invoke(cli, ["audit", "query", "--principal", "pos-test", "--format", "json"], env=api)
    assert queried.exit_code == 0, queried.output
    rows = [json.loads(line) for line in queried.stdout.splitlines()]
    assert [r["action"].rsplit("/", 1)[1] for r in rows] == ["CreateCustomer", "GetCustomer"] * 3
    # The same rows as the in-process query of the same database prints.
    local = {"PIIVAULT_DATA_DIR": str(vault.settings.data_dir), "PIIVAULT_DATABASE_URL": database_url}
    in_process = runner.invoke(cli, ["audit", "query", "--principal", "pos-test", "--format", "json"], env=local)
    assert in_process.exit_code == 0, in_process.output
    assert [json.loads(line) for line in in_process.stdout.splitlines()] == rows
    limited = runner.invoke(cli, ["audit", "query", "--limit", "2", "--format", "csv"], env=api)
    assert limited.exit_code == 0 and len(limited.stdout.splitlines()) == 3  # the header and two events

    saved = runner.invoke(cli, ["audit", "checkpoint"], env=api)
    assert saved.exit_code == 0, saved.output
    checkpoint = tmp_path / "checkpoint.json"
    checkpoint.write_text(saved.stdout)
    verified = runner.invoke(cli, ["audit", "verify", "--checkpoint", str(checkpoint)], env=api)
    assert verified.exit_code == 0 and "intact" in verified.output, verified.output
    forged = json.loads(saved.stdout) | {"head_mac": "00" * 32}  # a checkpoint the chain does not contain
    checkpoint.write_text(json.dumps(forged))
    broken = runner.invoke(cli, ["audit", "verify", "--checkpoint", str(checkpoint)], env=api)
    assert broken.exit_code == 1 and "broken" in broken.output, broken.output

    # The vault audited the API calls under the token's principal (no `cli:` event of a local operator).
    mine = [e for chunk in AuditQueries(vault.database).events(EventFilter(principal="audit-cli")) for e in chunk]
    assert [e.action.rsplit("/", 1)[1] for e in mine] == [
        "QueryEvents",
        "QueryEvents",
        "GetCheckpoint",
        "VerifyChain",
        "VerifyChain",
    ]

    denied = runner.invoke(cli, ["audit", "query"], env={**api, "PIIVAULT_TOKEN": client_token(vault)})
    assert denied.exit_code == 2 and "PERMISSION_DENIED" in denied.output
    unreachable = runner.invoke(cli, ["audit", "verify", "--address", "127.0.0.1:1"], env=api)
    assert unreachable.exit_code == 2 and "UNAVAILABLE" in unreachable.output


def client_token(vault: Vault) -> str:
    return vault.tokens.create("pos-cli", "service").secret


# --- dsar, keys, analytics and import against `piivault serve` run as a process (tests/support/server.py) ---------
#
# One served vault (SQLite, local keyring) for the module. Each command runs through the API with `--address` and a
# token of its role and, where the two can be compared, in-process on the same data directory: the output must match.


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("cli-served"), {"PIIVAULT_ANALYTICS_SETTLE_SECONDS": "0"}) as server:
        yield server


def local_env(data_dir: Path) -> dict[str, str | None]:
    """An in-process command's environment: the vault's data directory, and no address to go through."""
    return {
        "PIIVAULT_DATA_DIR": str(data_dir),
        "PIIVAULT_ANALYTICS_SETTLE_SECONDS": "0",
        "PIIVAULT_ADDRESS": None,
        "PIIVAULT_TOKEN": None,
    }


class Cli:
    """``piivault`` on one vault: ``api(role, …)`` through the served vault's API, ``local(…)`` in-process."""

    def __init__(self, served: ServerProcess, data_dir: Path | None = None) -> None:
        self.served = served
        self.runner = CliRunner()
        self.local_env = local_env(data_dir or served.data_dir / "var")
        self.tokens: dict[str, str] = {}

    def local(self, *args: str) -> Result:
        return self.runner.invoke(cli, list(args), env=self.local_env)

    def api(self, role: str, *args: str) -> Result:
        if role not in self.tokens:
            made = ok(self.local("token", "create", "--principal", f"cli-{role}", "--role", role))
            self.tokens[role] = made.stdout.strip()
        env = {**self.local_env, "PIIVAULT_ADDRESS": self.served.address, "PIIVAULT_TOKEN": self.tokens[role]}
        return self.runner.invoke(cli, list(args), env=env)

    def sdk(self) -> PiiVault:
        """A client with the served vault's `service` token."""
        return PiiVault(self.served.address, self.served.token, retry=RetryPolicy.disabled())

    def actions(self, principal: str) -> list[str]:
        """The RPCs the vault audited under ``principal``, oldest first."""
        found = ok(self.local("audit", "query", "--principal", principal, "--format", "json", "--limit", "100000"))
        return [json.loads(line)["action"].rsplit("/", 1)[1] for line in found.stdout.splitlines()]


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def refused(result: Result, *needles: str) -> str:
    """A command the vault (or the CLI) refused: exit code 2 and one line on stderr naming the problem, last."""
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line == result.stderr.splitlines()[-1] and all(needle in line for needle in needles), line
    return line


def requests_of(result: Result) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(ok(result).stdout)
    return listed


def test_dsar_commands_through_the_api(served: ServerProcess, tmp_path: Path) -> None:
    run = Cli(served)
    first, second = People(seed=31, first_serial=31_000).many(2)
    with run.sdk() as client:
        ids = [client.customers.create(customer_message(p)).customer.customer_id for p in (first, second)]

    # Opened by any spelling of an identifier; listed and shown the same through the API as in-process.
    ok(run.api("dpo", "dsar", "open", "--type", "access", "--mobile", f"+86 {first.mobile[:3]} {first.mobile[3:]}"))
    [access] = requests_of(run.api("dpo", "dsar", "list", "--json"))
    assert (access["type"], access["status"], access["customer_id"], access["overdue"]) == (
        "access",
        "received",
        ids[0],
        False,
    )
    assert ok(run.local("dsar", "list", "--json")).stdout == json.dumps([access], indent=2) + "\n"
    access_id = str(access["request_id"])
    assert access_id in ok(run.api("dpo", "dsar", "verify", access_id)).stdout
    shown = ok(run.api("dpo", "dsar", "show", access_id))
    assert "verified" in shown.stdout and shown.stdout == ok(run.local("dsar", "show", access_id)).stdout

    # The export package comes through the API; checking it needs the signing key, which only the vault's host has.
    package = tmp_path / "customer.zip"
    canary.allow(package, "the data subject's own export package")
    ok(run.api("dpo", "dsar", "export", access_id, "--out", str(package)))
    assert package.stat().st_mode & 0o777 == 0o600
    checked = json.loads(ok(run.local("dsar", "check", str(package))).stdout)
    assert checked["intact"] is True and checked["request_id"] == access_id
    refused(run.api("dpo", "dsar", "check", str(package)), "in-process only", "signing key")

    # An erasure: refused under a legal hold, done once it is lifted, with the signed receipt written to a file.
    ok(run.api("dpo", "dsar", "open", "--type", "erasure", "--customer-id", ids[1]))
    [erasure] = requests_of(run.api("dpo", "dsar", "list", "--status", "received", "--json"))
    erasure_id = str(erasure["request_id"])
    ok(run.api("dpo", "dsar", "verify", erasure_id))
    assert "placed a legal hold on " + ids[1] in ok(run.api("dpo", "dsar", "hold", ids[1])).stderr
    refused(run.api("dpo", "dsar", "erase", erasure_id), "FAILED_PRECONDITION")
    ok(run.api("dpo", "dsar", "hold", ids[1], "--lift"))
    receipt = tmp_path / "receipt.json"
    erased = ok(run.api("dpo", "dsar", "erase", erasure_id, "--receipt", str(receipt)))
    assert "completed" in erased.stdout
    signed = json.loads(receipt.read_text())
    assert (signed["request_id"], signed["customer_id"]) == (erasure_id, ids[1]) and signed["signature"]
    completed = requests_of(run.api("dpo", "dsar", "list", "--status", "completed", "--json"))
    assert {(r["request_id"], r["receipt_id"]) for r in completed} == {
        (access_id, ""),
        (erasure_id, signed["receipt_id"]),
    }

    # A rejection needs its text: refused the same way in both modes (the field and its rule, exit code 2).
    ok(run.api("dpo", "dsar", "open", "--type", "portability", "--email", first.email.upper()))
    [portability] = requests_of(run.api("dpo", "dsar", "list", "--status", "received", "--json"))
    portability_id = str(portability["request_id"])
    for mode in (run.local, lambda *args: run.api("dpo", *args)):
        refused(mode("dsar", "reject", portability_id, "--reason", "duplicate", "--text", ""), "text", "required")
    refused(run.api("dpo", "dsar", "reject", portability_id, "--reason", "no", "--text", "x"), "--reason")
    ok(run.api("dpo", "dsar", "reject", portability_id, "--reason", "duplicate", "--text", "已于上周答复"))
    shown_api, shown_local = run.api("dpo", "dsar", "show", portability_id), run.local("dsar", "show", portability_id)
    assert ok(shown_api).stdout == ok(shown_local).stdout and "rejected" in shown_api.stdout
    assert (
        "rejected: duplicate: 已于上周答复" in shown_api.stderr
        and "rejected: duplicate: 已于上周答复" in shown_local.stderr
    )
    refused(run.api("dpo", "dsar", "verify", "dsar_0123456789abcdef"), "NOT_FOUND")

    # Every table and list is the same in both modes, and the steps were audited under the token's principal.
    for args in (("dsar", "list"), ("dsar", "list", "--json"), ("dsar", "list", "--status", "rejected", "--json")):
        assert ok(run.api("dpo", *args)).stdout == ok(run.local(*args)).stdout
    actions = run.actions("cli-dpo")
    assert {"OpenRequest", "ListRequests", "VerifyRequest", "GetRequest", "ExportData", "SetLegalHold"} <= set(actions)
    assert actions.count("EraseCustomer") == 2 and actions.count("RejectRequest") == 2
    refused(run.api("service", "dsar", "list"), "PERMISSION_DENIED")


def test_keys_commands_through_the_api(served: ServerProcess) -> None:
    run = Cli(served)
    status = ok(run.api("admin", "keys", "status"))
    assert status.stdout == ok(run.local("keys", "status")).stdout
    found = re.search(r"latest v(\d+), minimum decryption v(\d+)", status.stdout)
    assert found is not None and "provider local" in status.stdout
    latest, minimum = int(found[1]), int(found[2])

    rotated = ok(run.api("admin", "keys", "rotate"))
    assert re.search(rf"done: \d+ rewrapped onto v{latest + 1}, 0 skipped", rotated.stderr), rotated.stderr
    after = ok(run.api("admin", "keys", "status"))
    assert f"latest v{latest + 1}" in after.stdout and after.stdout == ok(run.local("keys", "status")).stdout
    rows = {v: (int(deks), int(service)) for v, deks, service in re.findall(r"(v\d+)\W+(\d+)\W+(\d+)", after.stdout)}
    assert rows[f"v{latest}"] == (0, 0) and rows[f"v{latest + 1}"][1] > 0  # every wrapped key moved on
    assert "done: 0 rewrapped" in ok(run.api("admin", "keys", "rewrap")).stderr

    # Retiring the old version at once is refused (processes may still hold keys wrapped under it), and so is a
    # version out of range, the same way in both modes; the current minimum is accepted.
    refused(run.api("admin", "keys", "min-version", str(latest + 1)), "FAILED_PRECONDITION", "wait")
    for mode in (run.local, lambda *args: run.api("admin", *args)):
        refused(mode("keys", "min-version", str(latest + 5)), f"between {minimum} and {latest + 1}")
    assert f"now {minimum}" in ok(run.api("admin", "keys", "min-version", str(minimum))).stderr
    assert run.actions("cli-admin").count("SetMinDecryptionVersion") == 3
    refused(run.api("dpo", "keys", "rotate"), "PERMISSION_DENIED")


def test_analytics_export_through_the_api(served: ServerProcess, tmp_path: Path) -> None:
    run = Cli(served)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with run.sdk() as client:
        ids = [client.customers.create(customer_message(p)).customer.customer_id for p in People(32, 32_000).many(4)]
        for customer_id in ids[:3]:
            client.consent.grant(
                customer_id,
                purpose="analytics",
                notice_version="a1",
                notice_sha256="ab" * 32,
                channel=consent_pb2.CONSENT_CHANNEL_WEB,
            )
        for n, customer_id in enumerate(ids):
            for k in range(n + 1):
                purchase = purchases_pb2.Purchase(
                    source="web", order_id=f"cli-{n}-{k}", amount_minor=1000 * (n + 1) + 1, currency="CNY"
                )
                purchase.purchase_time.FromDatetime(start + dt.timedelta(days=n * 7 + k, seconds=0.25))
                client.purchases.record(customer_id, purchase)
        # The third customer withdraws: their pseudonym is tombstoned; the fourth never consented.
        client.consent.withdraw(ids[2], purpose="analytics", channel=consent_pb2.CONSENT_CHANNEL_WEB)

    def export(out: str, *options: str) -> dict[str, object]:
        summary: dict[str, object] = json.loads(
            ok(run.api("analyst", "analytics", "export", "--out", str(tmp_path / out), *options)).stdout
        )
        return summary

    cursor = tmp_path / "cursor.txt"
    exported = export("api.csv", "--cursor-file", str(cursor))
    in_process = ok(run.local("analytics", "export", "--out", str(tmp_path / "local.csv")))
    assert exported == json.loads(in_process.stdout)
    assert (exported["purchases"], exported["tombstones"]) == (1 + 2, 1)
    for name in ("{}.csv", "{}.tombstones.csv"):
        assert (tmp_path / name.format("api")).read_bytes() == (tmp_path / name.format("local")).read_bytes()
    amounts = sorted(row["amount"] for row in csv.DictReader(io.StringIO((tmp_path / "api.csv").read_text())))
    assert amounts == ["10.01", "20.01", "20.01"]
    assert all(customer_id not in (tmp_path / "api.csv").read_text() for customer_id in ids)  # pseudonyms only

    # Incremental: the cursor file picks up where the export stopped. Parquet too, which `analytics rfm` reads alone.
    again = export("next.csv", "--cursor-file", str(cursor))
    assert (again["purchases"], again["tombstones"], again["next_cursor"]) == (0, 0, exported["next_cursor"])
    assert export("api.parquet", "--format", "parquet")["purchases"] == 3
    scored = ok(CliRunner().invoke(cli, ["analytics", "rfm", str(tmp_path / "api.parquet")]))
    assert "2 pseudonyms scored" in scored.stderr
    (tmp_path / "bad.txt").write_text("not-a-cursor")
    for mode in (run.local, lambda *args: run.api("analyst", *args)):
        refused(
            mode("analytics", "export", "--out", str(tmp_path / "bad.csv"), "--cursor-file", str(tmp_path / "bad.txt")),
            "cursor",
        )
    refused(run.api("service", "analytics", "export", "--out", str(tmp_path / "denied.csv")), "PERMISSION_DENIED")
    assert not list(tmp_path.glob("bad*.csv")) and not list(tmp_path.glob("denied*.csv"))  # nothing half written
    assert run.actions("cli-analyst").count("ExportPurchases") == 4


CUSTOMER_HEADERS = ["姓名", "手机号码", "邮箱", "会员卡号", "生日", "性别", "外部编号"]
PURCHASE_HEADERS = ["手机号码", "会员卡号", "外部编号", "订单号", "下单时间", "金额", "币种", "sku", "数量"]


def customer_rows(a: Person, b: Person) -> list[list[str]]:
    m = a.mobile
    return [
        [a.name, m, "", "", "1990/5/17", "女", "P-1"],  # created
        [a.name, f"+86 {m[:3]}-{m[3:7]}-{m[7:]}", a.email, "", "", "", "P-1"],  # the same person: merged, email filled
        ["另一个名字", f"0086 {m}", "", "", "", "", ""],  # the same phone, another name: unchanged, a conflict
        ["坏号码", "12345", "", "", "", "", ""],  # rejected: invalid mobile
        ["无联系方式", "", "", "", "", "男", ""],  # rejected: no identifier
        ["", b.mobile, "", b.member_id, "", "未知", ""],  # rejected: gender
        [b.name, b.mobile, b.email, b.member_id, "1985年3月9日", "男", "P-3"],  # created
        ["", m, b.email, "", "", "", ""],  # rejected: identifiers of two customers
    ]


def purchase_rows(a: Person, b: Person) -> list[list[str]]:
    when = "2026-03-01 10:30:00"
    return [
        [a.mobile, "", "", "o-1", when, "128.50", "", "SKU-1", "2"],  # recorded, found by mobile
        ["", b.member_id, "", "o-2", when, "99", "", "", ""],  # recorded, found by member id
        ["", "", "P-1", "o-3", when, "10", "cny", "", ""],  # recorded, found by the channel's external id
        ["13800000000", "", "", "o-4", when, "10", "", "", ""],  # rejected: nobody holds that mobile
        [a.mobile, "", "", "o-5", when, "abc", "", "", ""],  # rejected: amount
        ["12345", "", "", "o-6", when, "10", "", "", ""],  # rejected: invalid mobile
        [a.mobile, "", "", "o-1", when, "128.50", "", "SKU-1", "2"],  # the same order again, same content: a duplicate
        [a.mobile, "", "", "o-7", when, "10", "XX", "", ""],  # rejected by the purchase service: currency
        ["", "", "", "o-8", when, "10", "", "", ""],  # rejected: names no customer
    ]


def write_csv(path: Path, headers: list[str], rows: list[list[str]]) -> Path:
    canary.allow(path, "a channel's import file, the input given to the importer")
    buffer = io.StringIO()
    csv.writer(buffer).writerows([headers, *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def report_of(path: Path) -> list[tuple[str, ...]]:
    """The per-row report with each customer id replaced by its order of appearance (ids differ between vaults)."""
    aliases: dict[str, str] = {}
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    return [
        tuple(
            aliases.setdefault(cell, f"customer-{len(aliases)}") if i == 2 and cell and n else cell
            for i, cell in enumerate(row)
        )
        for n, row in enumerate(rows)
    ]


def test_import_commands_through_the_api(served: ServerProcess, tmp_path: Path) -> None:
    run = Cli(served)
    fresh = Cli(served, tmp_path / "fresh")  # the same files imported in-process into an empty vault
    ok(fresh.local("migrate"))
    a, b = People(seed=33, first_serial=33_000).many(2)
    members = write_csv(tmp_path / "members.csv", CUSTOMER_HEADERS, customer_rows(a, b))
    orders = write_csv(tmp_path / "orders.csv", PURCHASE_HEADERS, purchase_rows(a, b))

    def both(kind: str, file: Path, report: str) -> str:
        """The file imported through the API into the served vault and in-process into the fresh one: the same
        summary on stdout (returned) and the same report, up to the customer ids."""
        api, local = tmp_path / f"api-{report}", tmp_path / f"local-{report}"
        over_api = run.api("service", "import", kind, str(file), "--source", "POS", "--report", str(api))
        in_process = fresh.local("import", kind, str(file), "--source", "POS", "--report", str(local))
        assert ok(over_api).stdout == ok(in_process).stdout
        assert report_of(api) == report_of(local)
        return over_api.stdout

    assert json.loads(both("customers", members, "members.csv")) == {
        "created": 2,
        "merged": 1,
        "rejected": 4,
        "unchanged": 1,
        "conflicts": 1,
    }
    assert report_of(tmp_path / "api-members.csv")[1:] == [
        ("2", "created", "customer-0", "", "", "", ""),
        ("3", "merged", "customer-0", "", "", "email", ""),
        ("4", "unchanged", "customer-0", "", "", "", "name"),
        ("5", "rejected", "", "invalid", "mobile", "", ""),
        ("6", "rejected", "", "invalid", "customer", "", ""),
        ("7", "rejected", "", "invalid", "gender", "", ""),
        ("8", "created", "customer-1", "", "", "", ""),
        ("9", "rejected", "", "ambiguous", "identifiers", "", ""),
    ]
    # Again: every row matches what the first import stored.
    assert json.loads(both("customers", members, "members-again.csv")) == {
        "rejected": 4,
        "unchanged": 4,
        "conflicts": 1,
    }

    assert json.loads(both("purchases", orders, "orders.csv")) == {
        "duplicates": 1,
        "recorded": 4,
        "rejected": 5,
        "conflicts": 0,
    }
    # Rows refused before recording come first in the report, as in-process; the same order twice in one file with
    # the same content is a duplicate (the purchase service compares it with the row before it in the same batch).
    assert [row[:5] for row in report_of(tmp_path / "api-orders.csv")[1:]] == [
        ("5", "rejected", "", "not_found", "customer"),
        ("6", "rejected", "", "invalid", "amount"),
        ("7", "rejected", "", "invalid", "mobile"),
        ("10", "rejected", "", "invalid", "customer"),
        ("2", "recorded", "", "", ""),
        ("3", "recorded", "", "", ""),
        ("4", "recorded", "", "", ""),
        ("8", "recorded", "", "", ""),
        ("9", "rejected", "", "invalid", "purchase.currency"),
    ]
    assert json.loads(both("purchases", orders, "orders-again.csv")) == {
        "duplicates": 4,
        "recorded": 4,
        "rejected": 5,
        "conflicts": 0,
    }
    # Each import named five distinct identifiers (rows 2-5 and 7; the rest repeat one or name none): five
    # FindCustomers lookups each, audited under the token's principal, like the rows ImportCustomers touched.
    actions = run.actions("cli-service")
    assert actions.count("FindCustomers") == 10 and {"ImportCustomers", "RecordPurchases"} <= set(actions)
    refused(
        run.api("service", "import", "purchases", str(orders), "--source", "pos", "--purpose", "analytics"),
        "PERMISSION_DENIED",
    )
    refused(run.api("dpo", "import", "customers", str(members), "--source", "pos"), "PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("per_minute", "rows", "call_rows"),
    [(1200, 5000, 200), (600, 700, 1)],  # ImportCustomers calls of up to 200 rows; FindCustomers, one lookup each
)
def test_the_import_paces_itself_to_the_lookup_budget(per_minute: int, rows: int, call_rows: int) -> None:
    """The vault's own budget (a token bucket: a burst, then a steady refill), on a simulated clock, against the CLI's
    pacing: every row sent exactly once and in order, close to the refill rate, with few refused calls."""
    from vault.auth.ratelimit import LookupLimiter
    from vault.errors import ResourceExhausted as Spent

    now = [0.0]
    limiter = LookupLimiter(per_minute=per_minute, per_day=0, clock=lambda: now[0])
    delivered: list[int] = []
    refusals = [0]

    def call(part: list[int]) -> int:  # as the vault does: every row's lookup is charged before any row is written
        for _ in part:
            try:
                limiter.take("pos")
            except Spent as spent:
                refusals[0] += 1
                raise exhausted(spent.retry_after_seconds) from None
            now[0] += 0.002
        delivered.extend(part)
        return len(part)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    pacer = Pacer(sleep=sleep)
    items = list(range(rows))
    answers = [n for at in range(0, rows, call_rows) for _, n in pacer.send(items[at : at + call_rows], call)]
    assert delivered == items and sum(answers) == rows
    refill = (rows - per_minute) * 60 / per_minute  # seconds: the burst goes at once, then the refill rate
    assert refill <= now[0] <= refill * 1.5, (now[0], refill)
    assert 0 < refusals[0] <= 10, refusals[0]


def test_an_import_call_refused_for_the_budget_wrote_nothing(
    settings: Settings, database: Database, key_provider: KeyProvider, people: People
) -> None:
    """What the pacing relies on: the vault charges every lookup of a call of up to BATCH rows before it writes any
    of them, so a call refused part-way can be sent again whole and its rows reported as if sent once."""
    import dataclasses
    from functools import partial

    from tests.support.people import caller
    from vault.customers.models import Profile
    from vault.errors import ResourceExhausted as Spent
    from vault.imports.service import BATCH, ImportService, canonical_row

    vault = Vault.open(dataclasses.replace(settings, lookups_per_minute=4), database=database, provider=key_provider)
    try:
        rows = [
            (n, partial(canonical_row, Profile(mobile=p.mobile), "", "crm")) for n, p in enumerate(people.many(6), 2)
        ]
        profiles = [make() for _, make in rows]
        assert len(rows) <= BATCH
        with pytest.raises(Spent):  # the fifth lookup of a budget of four
            ImportService(vault.customers, vault.purchases).profiles(caller("crm", "service"), rows, metered=True)
        assert all(vault.customers.owners_of(profile) == set() for profile in profiles)
    finally:
        vault.close()


def exhausted(retry_after: float) -> ResourceExhausted:
    import grpc

    hint = error_details_pb2.RetryInfo()
    hint.retry_delay.FromTimedelta(dt.timedelta(seconds=retry_after))
    return ResourceExhausted(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many lookups by this principal", details=[hint])
