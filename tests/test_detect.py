"""Backend URLs as users paste them: normalised, classified, and a mistake gets advice."""

from __future__ import annotations

import pytest

from cloud import Kind, check, connect, detect
from engine.protocol import SubtideError

EP = "abc123xyz"
SERVERLESS = f"https://api.runpod.ai/v2/{EP}"
LB = f"https://{EP}.api.runpod.ai"
POD = "https://k2x7q9m4w1p0-5001.proxy.runpod.net"

# (pasted, kind, normalised URL, a word the advice must contain or None for no advice)
CASES = [
    (SERVERLESS, Kind.SERVERLESS, SERVERLESS, None),
    (f"  {SERVERLESS}/  ", Kind.SERVERLESS, SERVERLESS, None),
    (f"{SERVERLESS}/run", Kind.SERVERLESS, SERVERLESS, None),
    (f"{SERVERLESS}/runsync", Kind.SERVERLESS, SERVERLESS, None),
    (f"{SERVERLESS}/health", Kind.SERVERLESS, SERVERLESS, None),
    (f"{SERVERLESS}/status/9f1c-22-e1", Kind.SERVERLESS, SERVERLESS, None),
    (f"{SERVERLESS}/stream/9f1c-22-e1", Kind.SERVERLESS, SERVERLESS, None),
    (f"http://api.runpod.ai/v2/{EP}", Kind.SERVERLESS, SERVERLESS, None),
    (f"api.runpod.ai/v2/{EP}", Kind.SERVERLESS, SERVERLESS, None),
    (f"https://api.runpod.ai/{EP}", Kind.SERVERLESS, SERVERLESS, "/v2/"),
    (f"https://api.runpod.ai/{EP}/runsync", Kind.SERVERLESS, SERVERLESS, "/v2/"),
    (LB, Kind.LOAD_BALANCER, LB, None),
    (f"{LB}/ping", Kind.LOAD_BALANCER, LB, None),
    (f"http://{EP}.api.runpod.ai/api/process", Kind.LOAD_BALANCER, LB, None),
    (POD, Kind.POD, POD, None),
    (f"{POD}/", Kind.POD, POD, None),
    (f"{POD}/api/stream", Kind.POD, POD, None),
    (f"{POD}/health", Kind.POD, POD, None),
    ("k2x7q9m4w1p0-5001.proxy.runpod.net", Kind.POD, POD, None),
    (
        "https://k2x7q9m4w1p0-8888.proxy.runpod.net",
        Kind.POD,
        "https://k2x7q9m4w1p0-8888.proxy.runpod.net",
        "Jupyter",
    ),
    # RunPod's queue API behind another host (a gateway, a stand-in).
    (
        "http://127.0.0.1:8080/v2/ep-test/run",
        Kind.SERVERLESS,
        "http://127.0.0.1:8080/v2/ep-test",
        None,
    ),
    ("http://localhost:5001", Kind.HTTP, "http://localhost:5001", None),
    ("localhost:5001/", Kind.HTTP, "http://localhost:5001", None),
    ("http://192.168.1.20:5001/api/process", Kind.HTTP, "http://192.168.1.20:5001", None),
    ("https://subs.example.org/subtide/", Kind.HTTP, "https://subs.example.org/subtide", None),
    ("https://subs.example.org/api/jobs/abc", Kind.HTTP, "https://subs.example.org", None),
]


@pytest.mark.parametrize(("pasted", "kind", "url", "advice"), CASES)
def test_url_is_normalised_and_classified(pasted, kind, url, advice):
    target = detect(pasted)
    assert (target.kind, target.url) == (kind, url)
    assert target.reason
    if advice is None:
        assert target.advice is None
    else:
        assert advice in target.advice


# (pasted, a word the hint must contain)
MISTAKES = [
    ("", "api.runpod.ai/v2/"),
    ("   ", "api.runpod.ai/v2/"),
    ("rpa_ABCDEF1234567890", "key field"),
    ("sk-proj-abc", "key field"),
    ("ftp://example.org/x", "api.runpod.ai/v2/"),
    ("https://api.runpod.ai/v2/", "ENDPOINT_ID"),
    ("https://api.runpod.ai/v2/{ENDPOINT_ID}", "ENDPOINT_ID"),
    (f"https://api.runpod.ai/v2/{EP}/openai/v1", "translation provider"),
    ("https://k2x7q9m4w1p0.proxy.runpod.net", "k2x7q9m4w1p0-5001.proxy.runpod.net"),
    (
        f"https://www.runpod.io/console/serverless/user/endpoint/{EP}",
        f"https://api.runpod.ai/v2/{EP}",
    ),
    ("https://www.runpod.io/console/pods/k2x7q9m4w1p0", "k2x7q9m4w1p0-5001.proxy.runpod.net"),
]


@pytest.mark.parametrize(("pasted", "hint"), MISTAKES)
def test_unusable_url_says_what_to_use(pasted, hint):
    with pytest.raises(SubtideError) as caught:
        detect(pasted)
    assert caught.value.code == "bad_input"
    assert hint in caught.value.hint


def test_a_key_pasted_as_url_is_not_echoed():
    with pytest.raises(SubtideError) as caught:
        detect("rpa_SECRETSECRET")
    assert "SECRET" not in caught.value.message + caught.value.hint


@pytest.mark.parametrize(
    ("url", "status", "word"),
    [
        (SERVERLESS, 401, "Read/Write"),
        (SERVERLESS, 404, "Active"),
        (LB, 401, f"api.runpod.ai/v2/{EP}"),
        (LB, 404, f"api.runpod.ai/v2/{EP}"),
        (POD, 404, "5001"),
        ("http://localhost:5001", 401, "SUBTIDE_AUTH_TOKEN"),
    ],
)
def test_http_errors_get_the_guides_advice(url, status, word):
    assert word in detect(url).hint(status)


def test_connect_picks_the_client_for_the_kind():
    assert type(connect(SERVERLESS, "rpa_x")).__name__ == "ServerlessBackend"
    for url in (LB, POD, "http://localhost:5001"):
        assert type(connect(url, "rpa_x")).__name__ == "HttpBackend"
    with pytest.raises(SubtideError):
        connect("https://api.runpod.ai/v2/", None)


def test_check_reports_a_bad_url_without_raising():
    report = check("https://k2x7q9m4w1p0.proxy.runpod.net")
    assert not report.ok
    assert any("5001" in line for line in report.lines())
