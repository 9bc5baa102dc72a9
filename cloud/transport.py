"""HTTP to a remote backend: one client with explicit timeouts, the key as a Bearer token,
transient failures retried, and HTTP errors turned into errors a user can act on."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any, cast, get_args

import httpx

from cloud.detect import Kind, Target
from engine.protocol import ErrorCode, SubtideError

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Statuses that mean "not now" rather than "no": gateways, cold proxies, rate limits.
TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 522, 524})
# The request was surely not acted on: safe to repeat even when it is not idempotent.
NOT_ACCEPTED = frozenset({425, 429, 503})
MAX_WAIT_S = 30.0
_ERROR_CODES: frozenset[str] = frozenset(get_args(ErrorCode))
# Codes of a Subtide server's refusals that are not Event codes, as the nearest Event code.
_SERVER_CODES: dict[str, ErrorCode] = {
    "too_large": "bad_input",
    "rate_limited": "backend_unavailable",
    "unavailable": "backend_unavailable",
}


class BackendError(SubtideError):
    """The remote backend could not be used for this request."""

    def __init__(
        self, message: str, hint: str | None = None, code: ErrorCode = "backend_unavailable"
    ) -> None:
        super().__init__(code, message, hint)


class AuthError(BackendError):
    """The backend refused the key (401/403)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, code="auth")


class NotFoundError(BackendError):
    """The endpoint, pod or job does not exist (404)."""


class UnreachableError(BackendError):
    """No answer at all: DNS, refused connection, timeouts, after the retries."""


class Transport:
    def __init__(
        self,
        target: Target,
        api_key: str | None,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.target = target
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=target.url, headers=headers, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        accept: Collection[int] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """The response to a request, retried while the failure is transient; raises a
        BackendError for anything else. A non-idempotent request is repeated only when the
        backend surely did not act on it. Statuses in `accept` come back as they are: the
        caller knows what they mean there (a 503 from /ping, say)."""
        return self._send(method, path, idempotent, accept, stream=False, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """An open streaming response, retried and checked like `request` until its headers
        arrive. A failure while reading the body is the caller's: only it knows where to
        resume from."""
        response = self._send(method, path, True, (), stream=True, **kwargs)
        try:
            yield response
        finally:
            response.close()

    def _send(
        self,
        method: str,
        path: str,
        idempotent: bool,
        accept: Collection[int],
        *,
        stream: bool,
        **kwargs: Any,
    ) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                request = self.client.build_request(method, path, **kwargs)
                response = self.client.send(request, stream=stream)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or (sent and not idempotent):
                    raise self.unreachable(exc) from None
                self.pause(attempt)
                continue
            status = response.status_code
            if status in accept:
                return response
            retryable = status in (TRANSIENT if idempotent else NOT_ACCEPTED)
            if retryable and not last:
                response.close()
                self.pause(attempt, response.headers.get("Retry-After"))
                continue
            return self._checked(response, stream)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _checked(self, response: httpx.Response, stream: bool) -> httpx.Response:
        if stream and response.status_code >= 400:
            # The error's body explains it; a streamed one is read before it is checked.
            try:
                response.read()
            except httpx.TransportError as exc:
                raise self.unreachable(exc) from None
            finally:
                response.close()
        return self.check(response)

    def check(self, response: httpx.Response) -> httpx.Response:
        """`response` when it succeeded; else the BackendError that explains it."""
        status = response.status_code
        if status < 400:
            return response
        said = _message_of(response)
        where = f"{self.target.kind.label} at {self.target.url}"
        if status in (401, 403):
            raise AuthError(f"The {where} refused the key ({status}).", self.target.hint(status))
        if status == 404:
            raise NotFoundError(f"Not found at the {where}.", self.target.hint(status))
        if refusal := _subtide_refusal(response):
            # A Subtide server said what is wrong (a bad source, a too large upload): its own
            # words and advice serve the user better than the status.
            code, message, hint = refusal
            raise BackendError(message, hint or self.target.hint(status), code=code)
        raise BackendError(
            f"The {where} answered {status}{': ' + said if said else ''}.",
            self.target.hint(status),
        )

    def json(self, response: httpx.Response) -> dict[str, Any]:
        """The JSON object a backend answered; a BackendError for anything else."""
        body = self.json_value(response)
        if not isinstance(body, dict):
            raise self._not_json("a JSON object")
        return body

    def json_value(self, response: httpx.Response) -> object:
        """Whatever JSON a backend answered (RunPod's /stream may be an object or a list); a
        BackendError when the body is not JSON at all."""
        try:
            return response.json()
        except ValueError:
            raise self._not_json("JSON") from None

    def _not_json(self, what: str) -> BackendError:
        return BackendError(
            f"The {self.target.kind.label} at {self.target.url} did not answer with {what}.",
            self.target.hint(404),
        )

    def unreachable(self, exc: httpx.TransportError) -> UnreachableError:
        what = type(exc).__name__
        return UnreachableError(
            f"Could not reach the {self.target.kind.label} at {self.target.url} ({what}).",
            reach_hint(self.target),
        )

    def pause(self, attempt: int, retry_after: str | None = None) -> None:
        wait = self.backoff_s * 2**attempt
        if retry_after and retry_after.strip().isdigit():
            wait = float(retry_after)
        time.sleep(min(wait, MAX_WAIT_S))

    def close(self) -> None:
        self.client.close()


def _subtide_refusal(response: httpx.Response) -> tuple[ErrorCode, str, str | None] | None:
    """(code, message, hint) from a Subtide server's error body, `{"error": {code, message,
    hint}}`; None for any other body."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    given = str(error.get("code", ""))
    code = _SERVER_CODES.get(given) or (
        cast(ErrorCode, given) if given in _ERROR_CODES else "backend_unavailable"
    )
    hint = error.get("hint")
    return code, error["message"][:300], hint[:300] if isinstance(hint, str) else None


def _message_of(response: httpx.Response) -> str:
    """The error text a backend put in its body, short, without echoing anything else."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str):
                return value[:200]
    return ""


def reach_hint(target: Target) -> str:
    """What to check when nothing answers at `target`."""
    if target.kind is Kind.POD:
        return "Check that the pod is Running (not Idle or Stopped) and that port 5001 is exposed."
    if target.kind is Kind.HTTP:
        return "Check that the server is running (subtide serve) and the address and port."
    return "Check your internet connection and the URL; RunPod may also be briefly unavailable."
