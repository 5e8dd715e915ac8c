"""CustomerService benchmark: creates/s, reads/s and finds/s over gRPC, and the same work in-process without gRPC.

The gRPC figures run a real ``piivault serve`` subprocess and an asyncio client in this process, both on this
machine, so "client included" holds. The in-process figures call ``CustomerService`` directly on its own database,
one thread, so the ratio between the two shows what the RPC layer costs.

    make bench                       # defaults: concurrency 16
    python -m bench.run --creates 5000 --reads 10000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from piivault.v1 import customers_pb2 as pb
from piivault.v1 import customers_pb2_grpc as pb_grpc
from tests.support.people import People, Person, caller, customer_message, profile_of
from tests.support.server import ServerProcess
from vault.app import Vault
from vault.config import Settings
from vault.customers.models import IdentifierKind
from vault.storage.db import Database
from vault.storage.migrate import upgrade

PURPOSE = "customer_service"  # a contract purpose: reads need no consent lookup, as most integrating reads


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return f"{self.name:<24}{self.count:>8}{self.rate:>12.0f}{p50:>10.2f}{p99:>10.2f}"


async def _drive(count: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    latencies: list[float] = []
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


_CONNECTIONS_PER_CLIENT = 4


@dataclass(frozen=True)
class Share:
    """One client process's part of a phase."""

    address: str
    token: str
    operation: str
    people: list[Person]
    customer_ids: list[str]
    concurrency: int


async def _run_share(share: Share) -> tuple[list[float], list[str]]:
    metadata = (("authorization", f"Bearer {share.token}"),)
    # Several connections per client process, each with its own subchannel, so that the kernel's SO_REUSEPORT
    # balancing spreads them over the server processes the way a load balancer would spread clients.
    channels = [
        grpc.aio.insecure_channel(share.address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(_CONNECTIONS_PER_CLIENT)
    ]
    # At run time the generated stub class serves aio channels too; the AsyncStub name exists only for typing.
    stubs = [cast("pb_grpc.CustomerServiceAsyncStub", pb_grpc.CustomerServiceStub(channel)) for channel in channels]  # type: ignore[redundant-cast]
    try:
        return await _run_calls(share, stubs, metadata)
    finally:
        for channel in channels:
            await channel.close(None)


async def _run_calls(
    share: Share, stubs: list[pb_grpc.CustomerServiceAsyncStub], metadata: tuple[tuple[str, str], ...]
) -> tuple[list[float], list[str]]:
    def stub(index: int) -> pb_grpc.CustomerServiceAsyncStub:
        return stubs[index % len(stubs)]

    created: list[str] = [""] * len(share.people)

    async def create(index: int) -> None:
        person = share.people[index]
        reply = await stub(index).CreateCustomer(
            pb.CreateCustomerRequest(customer=customer_message(person), request_id=f"bench-{person.member_id}"),
            metadata=metadata,
        )
        created[index] = reply.customer.customer_id

    async def read(index: int) -> None:
        await stub(index).GetCustomer(
            pb.GetCustomerRequest(customer_id=share.customer_ids[index], purpose=PURPOSE), metadata=metadata
        )

    async def find(index: int) -> None:
        reply = await stub(index).FindCustomers(
            pb.FindCustomersRequest(mobile="+86 " + share.people[index].mobile, purpose=PURPOSE), metadata=metadata
        )
        assert len(reply.customers) == 1

    call = {"create": create, "read": read, "find": find}[share.operation]
    count = len(share.customer_ids) if share.operation == "read" else len(share.people)
    latencies = await _drive(count, share.concurrency, call)
    return latencies, created


def _run_share_blocking(share: Share) -> tuple[list[float], list[str]]:
    return asyncio.run(_run_share(share))


def grpc_figures(
    server: ServerProcess, people: list[Person], reads: int, concurrency: int, client_processes: int
) -> list[Result]:
    context = multiprocessing.get_context("spawn")
    results: list[Result] = []
    with context.Pool(client_processes) as pool:

        def phase(name: str, operation: str, groups: list[list[Person]], ids: list[list[str]]) -> list[str]:
            shares = [
                Share(server.address, server.token, operation, group, id_group, concurrency // client_processes)
                for group, id_group in zip(groups, ids, strict=True)
            ]
            started = time.perf_counter()
            outcomes = pool.map(_run_share_blocking, shares)
            seconds = time.perf_counter() - started
            latencies = [value for outcome in outcomes for value in outcome[0]]
            results.append(Result(name, len(latencies), seconds, latencies))
            return [cid for outcome in outcomes for cid in outcome[1]]

        split = [people[n::client_processes] for n in range(client_processes)]
        ordered_people = [person for group in split for person in group]
        customer_ids = phase("grpc create", "create", split, [[] for _ in split])
        owner = dict(zip((p.member_id for p in ordered_people), customer_ids, strict=True))
        rng = random.Random(1)
        sample = [people[rng.randrange(len(people))] for _ in range(reads)]
        groups = [sample[n::client_processes] for n in range(client_processes)]
        phase("grpc read", "read", [[] for _ in groups], [[owner[p.member_id] for p in g] for g in groups])
        phase("grpc find (mobile)", "find", groups, [[] for _ in groups])
    return results


def in_process_figures(data_dir: Path, people: Sequence[Person], reads: int) -> list[Result]:
    settings = Settings(data_dir=data_dir, lookups_per_minute=0, lookups_per_day=0)
    data_dir.mkdir(parents=True, exist_ok=True)
    database = Database.from_url(settings.effective_database_url)
    upgrade(database.engine)
    vault = Vault.open(settings, database=database)
    service = vault.customers
    who = caller("bench", action="bench")
    results: list[Result] = []
    ids: list[str] = []

    def timed(name: str, count: int, op: Callable[[int], object]) -> None:
        latencies = []
        started = time.perf_counter()
        for index in range(count):
            t0 = time.perf_counter()
            op(index)
            latencies.append(time.perf_counter() - t0)
        results.append(Result(name, count, time.perf_counter() - started, latencies))

    timed(
        "in-process create",
        len(people),
        lambda i: ids.append(service.create(who, f"b-{i}", profile_of(people[i])).customer_id),
    )
    rng = random.Random(1)
    order = [rng.randrange(len(people)) for _ in range(reads)]
    timed("in-process read", reads, lambda i: service.get(who, ids[order[i]]))
    timed(
        "in-process find (mobile)",
        reads,
        lambda i: service.find(who, IdentifierKind.MOBILE, "+86 " + people[order[i]].mobile),
    )
    vault.close()
    return results


@dataclass
class ProviderFigures:
    provider: str
    creates_per_second: float
    calls_per_1000_creates: float
    reads_per_second: float
    calls_per_1000_reads: float


def provider_figures(data_dir: Path, people: Sequence[Person], reads: int) -> list[ProviderFigures]:
    """The same in-process creates and (cached) reads with the local keyring and with Vault Transit, in one run.

    Vault Transit is the Transit-API test server in this process, reached over HTTP through hvac, so the figures
    include a real HTTP round trip per Vault call (on loopback).
    """
    from tests.transit_server import TransitServer
    from vault.keys.local import LocalKeyringProvider
    from vault.keys.vault_transit import VaultTransitKeyProvider

    figures: list[ProviderFigures] = []
    with TransitServer() as transit:
        for name in ("local", "vault-transit"):
            settings = Settings(data_dir=data_dir / name)
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            database = Database.from_url(settings.effective_database_url)
            upgrade(database.engine)
            provider = (
                LocalKeyringProvider.open_or_create(settings.keyring_path)
                if name == "local"
                else VaultTransitKeyProvider.connect(transit.url, token=transit.root_token)
            )
            vault = Vault.open(settings, database=database, provider=provider)
            calls = provider.calls
            started = time.perf_counter()
            ids = [vault.customers.create(caller("bench"), "", profile_of(p)).customer_id for p in people]
            create_seconds = time.perf_counter() - started
            create_calls = provider.calls - calls
            rng = random.Random(3)
            calls = provider.calls
            started = time.perf_counter()
            for _ in range(reads):
                vault.customers.get(caller(), ids[rng.randrange(len(ids))])
            read_seconds = time.perf_counter() - started
            read_calls = provider.calls - calls
            vault.close()
            figures.append(
                ProviderFigures(
                    name,
                    len(ids) / create_seconds,
                    1000 * create_calls / len(ids),
                    reads / read_seconds,
                    1000 * read_calls / reads,
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=5000)
    parser.add_argument("--reads", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16, help="in-flight RPCs, over all client processes")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--provider-creates", type=int, default=2000, help="creates for the key-provider comparison")
    parser.add_argument("--server-processes", type=int, default=2)
    parser.add_argument("--server-workers", type=int, default=8, help="RPC threads per server process")
    args = parser.parse_args()
    people = People(seed=11).many(args.creates)
    with tempfile.TemporaryDirectory(prefix="piivault-bench-") as scratch:
        root = Path(scratch)
        server_env = {
            "PIIVAULT_LOG_LEVEL": "warning",
            "PIIVAULT_PROCESSES": str(args.server_processes),
            "PIIVAULT_WORKERS": str(args.server_workers),
            # The benchmark measures throughput; the per-principal lookup budget would (rightly) stop one client.
            "PIIVAULT_LOOKUPS_PER_MINUTE": "0",
            "PIIVAULT_LOOKUPS_PER_DAY": "0",
        }
        with ServerProcess(root / "grpc", server_env) as server:
            over_grpc = grpc_figures(server, people, args.reads, args.concurrency, args.client_processes)
        unaudited_command = [sys.executable, "-m", "bench.unaudited_server"]
        with ServerProcess(root / "grpc-unaudited", server_env, unaudited_command) as server:
            without_audit = grpc_figures(server, people, args.reads, args.concurrency, args.client_processes)
        direct = in_process_figures(root / "direct", people, args.reads)
        providers = provider_figures(root / "providers", people[: args.provider_creates], args.reads)
    print(
        f"piivault CustomerService benchmark — SQLite + local keyring; {os.cpu_count()} CPUs; gRPC: "
        f"{args.server_processes} server processes, {args.client_processes} client processes, "
        f"{args.concurrency} RPCs in flight"
    )
    print(f"{'operation':<24}{'count':>8}{'ops/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for result in over_grpc + direct:
        print(result.row())
    print("the same gRPC run with audit recording patched out (bench/unaudited_server.py):")
    for result in without_audit:
        print(result.row().replace("grpc ", "grpc, no audit: ", 1))
    print("audited ÷ unaudited ops/s over gRPC:")
    for audited, bare in zip(over_grpc, without_audit, strict=True):
        print(f"  {audited.name.removeprefix('grpc '):<22}{audited.rate / bare.rate:>8.2f}")
    print("gRPC cost ratio (in-process ops/s ÷ gRPC ops/s):")
    for remote, local in zip(over_grpc, direct, strict=True):
        print(f"  {remote.name.removeprefix('grpc '):<22}{local.rate / remote.rate:>8.2f}x")
    print("key providers, in-process (reads are of cached customers):")
    print(f"{'provider':<16}{'creates/s':>11}{'calls/1k creates':>18}{'reads/s':>10}{'calls/1k reads':>16}")
    for item in providers:
        print(
            f"{item.provider:<16}{item.creates_per_second:>11.0f}{item.calls_per_1000_creates:>18.1f}"
            f"{item.reads_per_second:>10.0f}{item.calls_per_1000_reads:>16.2f}"
        )
    on_local, on_transit = providers
    ratio = on_transit.creates_per_second / on_local.creates_per_second
    print(f"creates/s, Vault Transit ÷ local keyring: {ratio:.2f}")


if __name__ == "__main__":
    main()
