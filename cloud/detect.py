"""What kind of backend a URL points at, after cleaning up what people paste.

RunPod hands out three URL shapes (see the deployment guide): a serverless queue endpoint
`https://api.runpod.ai/v2/{id}`, a load-balancing endpoint `https://{id}.api.runpod.ai`, and a
pod's HTTP port `https://{pod}-{port}.proxy.runpod.net`. Anything else is a self-hosted
Subtide server. Each answer says why, and a likely mistake comes with the guide's advice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import SplitResult, urlsplit

from engine.protocol import SubtideError

RUNPOD_API_HOST = "api.runpod.ai"
RUNPOD_PROXY_SUFFIX = ".proxy.runpod.net"
SUBTIDE_PORT = 5001
# A RunPod id: lower-case letters and digits (endpoint and pod ids look alike).
_ID = r"[a-z0-9]{4,40}"
_SERVERLESS_PATH = re.compile(rf"/v2/(?P<id>{_ID})")
# The same queue API behind another host: a gateway of one's own, or a stand-in in tests.
_QUEUE_PATH = re.compile(r"(?P<prefix>(/[^/]+)*)/v2/(?P<id>[A-Za-z0-9_-]+)")
_PROXY_HOST = re.compile(rf"(?P<pod>{_ID})-(?P<port>\d{{2,5}})\.proxy\.runpod\.net")
_LB_HOST = re.compile(rf"(?P<id>{_ID})\.api\.runpod\.ai")
# Routes people paste along with the base URL: RunPod's queue routes, our own and the earlier
# Subtide server's.
_SERVERLESS_TAIL = re.compile(r"/(run|runsync|health|purge-queue|(status|stream|cancel)/[^/]*)$")
_HTTP_TAIL = re.compile(r"/(ping|health|api/process|api/stream|api/jobs(/.*)?)$")
_CONSOLE_ID = re.compile(rf"/(endpoint|endpoints|pods?)/(?P<id>{_ID})")
_KNOWN_PORTS = {8888: "Jupyter", 22: "SSH", 3000: "a web UI", 7860: "Gradio"}
# A host name (letters of any script, digits, dots, dashes) or an IP address; spaces and other
# punctuation can't be in one, so "not a url" is refused here, not after seconds of retries.
_HOST = re.compile(r"[\w.-]+|[0-9a-f:.]+(%[\w.-]+)?")


class Kind(StrEnum):
    SERVERLESS = "serverless"
    LOAD_BALANCER = "load_balancer"
    POD = "pod"
    HTTP = "http"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Kind.SERVERLESS: "RunPod serverless endpoint (queue)",
    Kind.LOAD_BALANCER: "RunPod load-balancing endpoint",
    Kind.POD: "RunPod pod",
    Kind.HTTP: "Subtide server",
}


@dataclass(frozen=True)
class Target:
    """A backend URL, normalised and classified."""

    kind: Kind
    url: str  # the base URL requests are made under, without a trailing slash
    reason: str  # why it is this kind, for "Check backend"
    advice: str | None = None  # what to change, when the URL looks like a mistake
    id: str | None = None  # the endpoint or pod id on RunPod

    @classmethod
    def assume(cls, kind: Kind, url: str) -> Target:
        """A target of a known kind at any address (a stand-in, a proxy): no detection."""
        url = url.strip().rstrip("/")
        return cls(kind, url, f"{url} given as a {kind.label}", id=url.rsplit("/", 1)[-1])

    def hint(self, status: int) -> str:
        """What to do about an HTTP error status from this backend (the guide's list)."""
        if status in (401, 403):
            return _auth_hint(self)
        if status == 404:
            return _missing_hint(self)
        return "Try again in a minute; if it keeps failing, check the backend's logs."


def detect(url: str) -> Target:
    """Classifies `url`; a `bad_input` SubtideError when it cannot be a backend URL at all."""
    text = url.strip()
    if not text:
        raise SubtideError("bad_input", "No backend URL given.", _EXAMPLES)
    if text.startswith("rpa_") or text.startswith("sk-"):
        raise SubtideError(
            "bad_input",
            "That is an API key, not a backend URL.",
            "Put the key in the backend key field, and the endpoint or pod URL here. " + _EXAMPLES,
        )
    if "://" not in text:
        text = "https://" + text if _looks_like_runpod(text) else "http://" + text
    try:
        parts = split_http_url(text)
    except SubtideError as exc:
        raise SubtideError(exc.code, f"{url.strip()!r}: {exc.message}", _EXAMPLES) from None
    host = (parts.hostname or "").lower()
    path = parts.path.rstrip("/")
    if host == "runpod.io" or host.endswith(".runpod.io"):
        return _console(path)
    if host == RUNPOD_API_HOST:
        return _serverless(path)
    if match := _LB_HOST.fullmatch(host):
        return _load_balancer(match["id"])
    if host.endswith(RUNPOD_PROXY_SUFFIX):
        return _pod(host)
    return _self_hosted(parts.scheme, parts.netloc, path)


def split_http_url(text: str) -> SplitResult:
    """The parts of an http(s) URL; a `bad_input` SubtideError, never a ValueError, for anything
    else: a broken IPv6 address ("http://[::1"), a port that is not a number, no host or a host
    that can't be one. The message does not repeat the URL: the caller says which it was."""
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - reading it is what checks it
    except ValueError as exc:
        raise SubtideError("bad_input", f"Not a valid URL ({exc}).") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise SubtideError("bad_input", "Not an http(s) URL.")
    if not parts.hostname or not _HOST.fullmatch(parts.hostname):
        raise SubtideError("bad_input", "No valid host name in the URL.")
    return parts


_EXAMPLES = (
    "Use https://api.runpod.ai/v2/ENDPOINT_ID for a serverless endpoint, "
    "https://POD_ID-5001.proxy.runpod.net for a pod, or your server's address, "
    "e.g. http://localhost:5001."
)


def _looks_like_runpod(text: str) -> bool:
    host = text.split("/", 1)[0].lower()
    return host.endswith(".runpod.ai") or host.endswith(".runpod.net") or host == RUNPOD_API_HOST


def _serverless(path: str) -> Target:
    path = _SERVERLESS_TAIL.sub("", path)
    if path.startswith("/v2/") and "/openai" in path:
        raise SubtideError(
            "bad_input",
            "That is an endpoint's OpenAI-compatible route, an LLM URL.",
            "Use it as the translation provider's base URL; the backend URL is "
            "https://api.runpod.ai/v2/ENDPOINT_ID.",
        )
    if match := _SERVERLESS_PATH.fullmatch(path):
        endpoint = match["id"]
        return Target(
            Kind.SERVERLESS,
            f"https://{RUNPOD_API_HOST}/v2/{endpoint}",
            f"api.runpod.ai/v2/{endpoint} is the queue API of serverless endpoint {endpoint}",
            id=endpoint,
        )
    bare = path.strip("/").split("/")
    if len(bare) == 1 and re.fullmatch(_ID, bare[0]):
        endpoint = bare[0]
        return Target(
            Kind.SERVERLESS,
            f"https://{RUNPOD_API_HOST}/v2/{endpoint}",
            f"api.runpod.ai/{endpoint}: an endpoint id without the API version",
            advice=f"Missing /v2/: the endpoint URL is https://{RUNPOD_API_HOST}/v2/{endpoint}.",
            id=endpoint,
        )
    raise SubtideError(
        "bad_input",
        f"api.runpod.ai{path or '/'} is not a serverless endpoint URL.",
        "It looks like https://api.runpod.ai/v2/ENDPOINT_ID (the id is on the endpoint's "
        "page in the RunPod console), with no trailing slash.",
    )


def _load_balancer(endpoint: str) -> Target:
    return Target(
        Kind.LOAD_BALANCER,
        f"https://{endpoint}.{RUNPOD_API_HOST}",
        f"{endpoint}.api.runpod.ai is a load-balancing endpoint: the Subtide HTTP API directly",
        id=endpoint,
    )


def _pod(host: str) -> Target:
    match = _PROXY_HOST.fullmatch(host)
    if match is None:
        pod = host.removesuffix(RUNPOD_PROXY_SUFFIX)
        raise SubtideError(
            "bad_input",
            f"{host} names no port.",
            f"A pod's HTTP service looks like https://{pod}-{SUBTIDE_PORT}.proxy.runpod.net: "
            "the pod id, a dash, the exposed port (Connect → HTTP Service in the console).",
        )
    pod, port = match["pod"], int(match["port"])
    advice = None
    if port != SUBTIDE_PORT:
        what = _KNOWN_PORTS.get(port, "another service")
        advice = (
            f"Port {port} is usually {what}; Subtide listens on {SUBTIDE_PORT} unless PORT "
            f"says otherwise: https://{pod}-{SUBTIDE_PORT}.proxy.runpod.net."
        )
    return Target(
        Kind.POD,
        f"https://{host}",
        f"{host} is port {port} of pod {pod}, through RunPod's HTTP proxy",
        advice=advice,
        id=pod,
    )


def _console(path: str) -> Target:
    match = _CONSOLE_ID.search(path)
    hint = "Copy the endpoint id from the console: https://api.runpod.ai/v2/ENDPOINT_ID."
    if match and match.group(1).startswith("pod"):
        hint = f"A pod's URL is https://{match['id']}-{SUBTIDE_PORT}.proxy.runpod.net."
    elif match:
        hint = f"The endpoint's URL is https://{RUNPOD_API_HOST}/v2/{match['id']}."
    raise SubtideError("bad_input", "That is a RunPod console page, not a backend URL.", hint)


def _self_hosted(scheme: str, netloc: str, path: str) -> Target:
    queue_path = _SERVERLESS_TAIL.sub("", path)
    if match := _QUEUE_PATH.fullmatch(queue_path):
        return Target(
            Kind.SERVERLESS,
            f"{scheme}://{netloc}{queue_path}",
            f"{netloc}{queue_path} has the path of RunPod's queue API (/v2/ENDPOINT_ID)",
            id=match["id"],
        )
    path = _HTTP_TAIL.sub("", path)
    url = f"{scheme}://{netloc}{path}"
    return Target(Kind.HTTP, url, f"{netloc} is not a RunPod address: a Subtide HTTP server")


def _auth_hint(target: Target) -> str:
    if target.kind is Kind.SERVERLESS:
        return (
            "Put your RunPod API key (rpa_…) in the backend key field, not the LLM key field; "
            "it needs Read/Write permission, and the endpoint id must match the dashboard."
        )
    if target.kind is Kind.LOAD_BALANCER:
        return (
            "Put your RunPod API key (rpa_…) in the backend key field. For a queue endpoint, "
            f"use https://{RUNPOD_API_HOST}/v2/{target.id} instead."
        )
    return "The server wants its SUBTIDE_AUTH_TOKEN: put it in the backend key field."


def _missing_hint(target: Target) -> str:
    if target.kind is Kind.SERVERLESS:
        return (
            f"No endpoint {target.id} here: check the id in the RunPod dashboard and that the "
            "endpoint shows as Active."
        )
    if target.kind is Kind.LOAD_BALANCER:
        return (
            f"No load-balancing endpoint {target.id}. A queue endpoint's URL is "
            f"https://{RUNPOD_API_HOST}/v2/{target.id}."
        )
    if target.kind is Kind.POD:
        return (
            "Check that the pod is Running and exposes port 5001 (Connect → HTTP Service), and "
            "that its image is Subtide's."
        )
    return "Check the address: it should be a Subtide server (subtide serve), with no path."
