"""Scraping a piivault metrics endpoint in tests and the benchmark."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

RPC_REQUESTS = "piivault_rpc_requests_total"


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there are none)."""
        wanted = set(labels.items())
        return sum(value for (sample, pairs), value in self.samples.items() if sample == name and wanted <= pairs)

    def label_values(self) -> set[str]:
        return {value for _, pairs in self.samples for _, value in pairs}

    def rpc_counts(self, service_prefix: str = "/piivault.") -> dict[tuple[str, str], float]:
        """Handled RPCs by (full method, code), for methods under ``service_prefix``."""
        counts: dict[tuple[str, str], float] = {}
        for (sample, pairs), value in self.samples.items():
            labels = dict(pairs)
            if sample == RPC_REQUESTS and labels["method"].startswith(service_prefix):
                counts[labels["method"], labels["code"]] = value
        return counts


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode("utf-8")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            samples[key] = samples.get(key, 0.0) + sample.value
    return Scrape(text, samples)


def delta(
    before: Mapping[tuple[str, str], float], after: Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """What changed between two ``rpc_counts``, leaving out what did not."""
    return {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
