"""`common.metrics.RequestSeries`: the request counter and latency histogram counted in
plain numbers, exposed exactly as prometheus_client's `Counter` and `Histogram` with the
same names, labels and buckets would be (dashboards and alerts read those)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import LATENCY_BUCKETS, Metrics, RequestRecorder

OBSERVED = [
    ("GET", "/api/v1/registry/members/{member_id}", 200, 0.0004),
    ("GET", "/api/v1/registry/members/{member_id}", 200, 0.005),  # on a bound: in it
    ("GET", "/api/v1/registry/members/{member_id}", 404, 0.03),
    ("POST", "/api/v1/registry/members", 201, 2.5),
    ("GET", "/api/v1/registry/members/{member_id}", 200, 45.0),  # past the last: +Inf only
    ("GET", "<unmatched>", 404, 0.0101),
]


FAMILIES = ("lianxin_http_requests", "lianxin_http_request_duration_seconds")


def _families(text: bytes) -> list[tuple[str, str, str, list[tuple[str, str, float]]]]:
    """The two families as a scrape reads them: name, help, type and every sample (a
    `_created` one as 0: it is a time)."""
    return [
        (
            f.name,
            f.documentation,
            f.type,
            [
                (
                    s.name,
                    str(sorted(s.labels.items())),
                    0 if s.name.endswith("_created") else s.value,
                )
                for s in f.samples
            ],
        )
        for f in text_string_to_metric_families(text.decode())
        if f.name in FAMILIES
    ]


def _library_text() -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "lianxin_http_requests",
        "HTTP requests answered, by method, route template and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "lianxin_http_request_duration_seconds",
        "Time from request start to the end of the response body.",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for method, route, status, elapsed in OBSERVED:
        requests.labels(method=method, route=route, status=str(status)).inc()
        latency.labels(method=method, route=route).observe(elapsed)
    return generate_latest(registry)


def test_exposed_as_the_librarys_counter_and_histogram() -> None:
    metrics = Metrics("registry")
    recorder = RequestRecorder(metrics)
    for method, route, status, elapsed in OBSERVED:
        recorder.record(method, route, status, elapsed, failed=False, path="/x")
    text = metrics.exposition()
    assert _families(text) == _families(_library_text())
    assert [f[0] for f in _families(text)] == list(FAMILIES)
    ours = text.decode()
    assert 'lianxin_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in ours
    assert (
        'lianxin_http_request_duration_seconds_bucket{le="0.005",method="GET",'
        'route="/api/v1/registry/members/{member_id}"} 2.0' in ours
    )


def test_created_is_when_a_series_was_first_counted() -> None:
    metrics = Metrics("registry")
    RequestRecorder(metrics).record("GET", "/r", 200, 0.001, failed=False, path="/r")
    text = metrics.exposition().decode()
    created = re.search(r"^lianxin_http_requests_created\{.*\} (\S+)$", text, re.MULTILINE)
    assert created is not None and float(created[1]) > 1.7e9
