"""Read a server's ``/metrics`` as numbers (Prometheus text format, parsed by prometheus_client)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from server_process import http_get


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a series not exported yet (a counter never incremented)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def increase(self, since: Scrape, name: str, **labels: str) -> float:
        """How much the series grew since an earlier scrape."""
        return self.value(name, **labels) - since.value(name, **labels)


def scrape(http_url: str) -> Scrape:
    """GET ``<http_url>/metrics`` and parse it."""
    response = http_get(f"{http_url}/metrics")
    assert response.status == 200, response.text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples)
