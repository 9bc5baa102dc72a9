"""The HTTP client for an LLM URL a job gave a server: each connection goes to an address the
guard judged, so a name that rebinds to 127.0.0.1 after its check reaches nothing."""

from __future__ import annotations

import httpx
import pytest

from engine.guarded_http import guarded_client
from engine.protocol import Cue
from engine.translate import LLMConfig, TranslateOptions, Translator, translate_cues
from engine.url_guard import UrlGuard
from tests.support.openai_server import serve_openai
from tests.support.ssrf import Reply, Resolver, site
from tests.support.timing import HANG_GUARD_S

# TEST-NET-3 is private to the guard; this one is public and unrouted from here.
PUBLIC = "93.184.215.14"


def test_a_name_that_rebinds_to_a_private_address_gets_no_request():
    with site({"/v1/models": Reply(b"{}")}) as local:
        # The first answer (the job's check) is public; every later one is 127.0.0.1.
        resolver = Resolver({"llm.rebind.test": [PUBLIC, "127.0.0.1"]})
        guard = UrlGuard(allow_private=False, resolver=resolver)
        guard.check_url(f"http://llm.rebind.test:{local.port}/v1")
        with guarded_client(guard, timeout=2) as client, pytest.raises(httpx.ConnectError):
            client.get(f"http://llm.rebind.test:{local.port}/v1/models")
        assert local.requests == []
        assert resolver.lookups == ["llm.rebind.test", "llm.rebind.test"]


def test_the_pinned_connection_reaches_the_judged_address_under_the_host_name():
    """The same route does reach the site when the judged address is allowed: the pin is the
    resolver's answer, and the request still names the host."""
    with site({"/v1/models": Reply(b'{"data": []}')}) as local:
        resolver = Resolver({"llm.local.test": ["127.0.0.1"]})
        guard = UrlGuard(allow_private=True, resolver=resolver)
        with guarded_client(guard, timeout=HANG_GUARD_S) as client:
            reply = client.get(f"http://llm.local.test:{local.port}/v1/models")
        assert reply.json() == {"data": []}
        assert local.requests == ["/v1/models"]


def test_no_redirect_and_no_proxy_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with site() as target, site() as llm:
        llm.routes["/v1/models"] = Reply(status=307, headers={"Location": f"{target.url}/x"})
        with guarded_client(UrlGuard(allow_private=True), timeout=HANG_GUARD_S) as client:
            assert client.get(f"{llm.url}/v1/models").status_code == 307
        assert llm.requests == ["/v1/models"] and target.requests == []


def test_a_translator_for_a_guarded_llm_follows_the_pin():
    """Translations for a job's LLM go where the guard's resolver says, or nowhere."""
    cues = [Cue(id=1, start=0.0, end=1.0, text="Hello there.")]
    options = TranslateOptions(max_attempts=1, backoff=0.01)
    with serve_openai() as fake:
        port = fake.url.rsplit(":", 1)[1]
        for answers, allowed, reached in (
            (["127.0.0.1"], True, True),
            ([PUBLIC, "127.0.0.1"], False, False),
        ):
            fake.reset()
            guard = UrlGuard(allow_private=allowed, resolver=Resolver({"llm.test": answers}))
            guard.check_url(f"http://llm.test:{port}/v1")  # the job's check, as the engine does
            llm = LLMConfig("m", base_url=f"http://llm.test:{port}/v1", timeout=2, guard=guard)
            with Translator(llm, options) as translator:
                results = translate_cues(translator, cues, "de", "en")
            assert (results[0].text is not None) == reached
            assert bool(fake.requests) == reached
