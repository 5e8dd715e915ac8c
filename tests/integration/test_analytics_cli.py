"""`piivault analytics export` (CSV and Parquet) and `analytics rfm`, run as the operator would, on a served vault's
data directory: tombstoned pseudonyms never reach the scores."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from consent.models import Channel, ConsentRequest, ConsentScope
from piivault.rfm import rfm
from tests.support.people import People, caller, dpo, profile_of
from vault.app import Vault
from vault.config import Settings
from vault.purchases.models import PurchaseInput

PIIVAULT = str(Path(sys.executable).parent / "piivault")
ANALYTICS = ConsentRequest(
    "analytics", ConsentScope.STANDARD, Channel.WEB, notice_version="a1", notice_sha256="ab" * 32
)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PIIVAULT, *args], env=env, capture_output=True, text=True, timeout=120, check=True)


def test_export_and_rfm(tmp_path: Path) -> None:
    data = tmp_path / "var"
    env = {**os.environ, "PIIVAULT_DATA_DIR": str(data), "PIIVAULT_ANALYTICS_SETTLE_SECONDS": "0"}
    run(env, "migrate")
    vault = Vault.open(Settings.from_env(env))
    try:
        people = People(seed=8).many(6)
        ids = [vault.customers.create(caller(), "", profile_of(p)).customer_id for p in people]
        for customer_id in ids:
            vault.consents.grant(caller(), customer_id, ANALYTICS)
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        for n, customer_id in enumerate(ids):
            for k in range(n + 1):  # customer n buys n+1 times, the last time n days before the end
                when = start + dt.timedelta(days=30 - n - k)
                order = PurchaseInput("web", f"o-{n}-{k}", when, 1000 * (n + 1), "CNY")
                vault.purchases.record(caller(), customer_id, order)
        vault.shredder.shred(dpo(), ids[0])
    finally:
        vault.close()

    for format_ in ("csv", "parquet"):
        out = tmp_path / f"purchases.{format_}"
        summary = json.loads(run(env, "analytics", "export", "--out", str(out), "--format", format_).stdout)
        assert summary["purchases"] == sum(range(2, 7)) and summary["tombstones"] == 1
        scores = rfm(out, tmp_path / f"purchases.tombstones.{format_}")
        assert len(scores) == 5
        frequent = max(scores, key=lambda s: s.frequency)  # many orders, but the oldest last purchase
        assert (frequent.frequency, frequent.monetary, frequent.segment) == (6, 360.0, "loyal")
        recent = min(scores, key=lambda s: s.recency_days)  # the most recent buyer, with the fewest orders
        assert (recent.frequency, recent.monetary, recent.r, recent.segment) == (2, 40.0, 5, "new")
        assert {s.segment for s in scores} <= {"champions", "loyal", "new", "at_risk", "hibernating", "potential"}
    table = run(env, "analytics", "rfm", str(tmp_path / "purchases.parquet")).stdout
    assert "segment" in table and "new" in table and "loyal" in table
    exported = (tmp_path / "purchases.csv").read_text()
    assert all(customer_id not in exported for customer_id in ids)  # pseudonyms only
