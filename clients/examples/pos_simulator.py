"""A small point-of-sale simulator: the integration a till system would write against piivault, using the SDK only.

For each (synthetic) shopper at the till it looks the customer up by mobile number, registers them if the vault does
not know them yet, and records their basket as purchases. The till keeps nothing but the ``customer_id``.

    python clients/examples/pos_simulator.py --customers 20 --purchases 3
    python -m clients.examples.pos_simulator --store SH-042      # from the repository root

The vault's address and the till's token come from ``--address``/``--token`` or from ``PIIVAULT_ADDRESS`` and
``PIIVAULT_TOKEN`` (prefer the environment: a command line is visible to every user of the machine); TLS files from
``PIIVAULT_CA_FILE`` (and ``PIIVAULT_CLIENT_CERT_FILE``/``PIIVAULT_CLIENT_KEY_FILE`` for mTLS). The token needs the
``service`` role. Shoppers and orders are derived from ``--seed``: running again with the same seed finds every
customer and reports every order as a duplicate, which is the idempotency a till relies on when it resends after a
lost connection. It prints a JSON summary of counts and ids, never a personal value.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from piivault.client import AlreadyExists, PiiVault, PiiVaultError
from piivault.v1 import customers_pb2, purchases_pb2

PURPOSE = "order_fulfilment"  # the contract the till fulfils; it shows name, mobile and member id
SOURCE = "pos"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"
SKUS = (("SKU-TEA-250G", 3900), ("SKU-RICE-5KG", 5990), ("SKU-SOAP-3", 1250), ("SKU-MILK-1L", 1590))
PAYMENTS = ("wechat_pay", "alipay", "card", "cash")
EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z, so that re-runs send identical orders


@dataclass(frozen=True)
class Shopper:
    name: str
    mobile: str
    member_id: str


def shoppers(count: int, seed: int, store: str) -> list[Shopper]:
    """Synthetic shoppers (random names and 139 numbers; nobody real), the same for the same seed."""
    rng = random.Random(seed)  # noqa: S311 - synthetic test data, not a secret
    found: list[Shopper] = []
    for n in range(count):
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
        mobile = "139" + f"{rng.randrange(10**8):08d}"
        found.append(Shopper(name, mobile, f"{store}-{seed}-{n:05d}"))
    return found


def basket(rng: random.Random, store: str, order_id: str, when: int) -> purchases_pb2.Purchase:
    lines = [
        purchases_pb2.PurchaseLine(sku=sku, quantity=rng.randint(1, 3), unit_price_minor=price)
        for sku, price in rng.sample(SKUS, rng.randint(1, len(SKUS)))
    ]
    stamp = Timestamp()
    stamp.FromSeconds(when)
    return purchases_pb2.Purchase(
        source=SOURCE,
        order_id=order_id,
        store_id=store,
        purchase_time=stamp,
        lines=lines,
        amount_minor=sum(line.quantity * line.unit_price_minor for line in lines),
        currency="CNY",
        payment_method=rng.choice(PAYMENTS),
    )


def customer_id_for(vault: PiiVault, shopper: Shopper) -> tuple[str, bool]:
    """The shopper's customer id, and whether this call registered them."""
    found = vault.customers.find(mobile=shopper.mobile, purpose=PURPOSE).customers
    if found:
        return found[0].customer_id, False
    customer = customers_pb2.Customer(name=shopper.name, mobile=shopper.mobile, member_id=shopper.member_id)
    try:
        return vault.customers.create(customer).customer.customer_id, True
    except AlreadyExists as taken:  # another till registered them since our lookup
        if taken.existing_customer_id is None:
            raise
        return taken.existing_customer_id, False


def run(vault: PiiVault, count: int, purchases: int, store: str, seed: int) -> dict[str, object]:
    rng = random.Random(seed + 1)  # noqa: S311 - synthetic test data, not a secret
    counts = dict.fromkeys(("created", "found", "recorded", "duplicates", "rejected"), 0)
    customer_ids: list[str] = []
    for n, shopper in enumerate(shoppers(count, seed, store)):
        customer_id, created = customer_id_for(vault, shopper)
        customer_ids.append(customer_id)
        counts["created" if created else "found"] += 1
        orders = [
            (customer_id, basket(rng, store, f"{store}-{seed}-{n:05d}-{k}", EPOCH + 3600 * (n * purchases + k)))
            for k in range(purchases)
        ]
        if orders:
            # A list, not a generator: the SDK may then send the stream again after a lost connection.
            result = vault.purchases.record_many(orders)
            counts["recorded"] += result.recorded
            counts["duplicates"] += result.duplicates
            counts["rejected"] += result.rejected
    return {**counts, "customer_ids": customer_ids}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Register shoppers and record their baskets through the SDK.")
    parser.add_argument("--address", default=os.environ.get("PIIVAULT_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--token", default=None, help="default: PIIVAULT_TOKEN (preferred: not visible in ps)")
    parser.add_argument("--customers", type=int, default=10)
    parser.add_argument("--purchases", type=int, default=2, help="orders per customer")
    parser.add_argument("--store", default="SH-001", help="the store id (letters, digits, '-')")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    env = {**os.environ, "PIIVAULT_ADDRESS": args.address}
    if args.token:
        env["PIIVAULT_TOKEN"] = args.token
    if not env.get("PIIVAULT_TOKEN"):
        print("pos_simulator: set PIIVAULT_TOKEN (a token with the service role)", file=sys.stderr)
        return 2
    try:
        with PiiVault.from_env(env) as vault:
            summary = run(vault, args.customers, args.purchases, args.store, args.seed)
    except PiiVaultError as error:  # its message is the vault's fixed sentence: safe to print
        print(f"pos_simulator: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
