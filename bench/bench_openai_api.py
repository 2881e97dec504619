"""Time to first byte of the OpenAI-compatible API against the first chunk inside the worker.

    python bench/bench_openai_api.py [--url http://127.0.0.1:7860/] [--key KEY] [--repeats 5]
    python bench/bench_openai_api.py --demo            # starts `python app.py --demo` on CPU itself

Saves a voice from a generated recording, then for every response format streams one request
(`with_streaming_response`) and times the first byte and the end at the client; one SSE request
per repeat gives the server's own numbers (`timing` of `speech.audio.done`: the first chunk as the
web process saw it, and inside the worker from the job's start). Prints one JSON object: medians
per format, and the worker's first chunk, so the API's overhead on the first byte is the
difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_server import running_app  # noqa: E402
from tests.browser.audio_samples import speechlike  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog near the river bank today."
FORMATS = ("pcm", "wav", "mp3", "opus", "aac", "flac")


def measure(client: openai.OpenAI, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.wav"
        sf.write(path, speechlike(4.0, 16000), 16000)
        with open(path, "rb") as f:
            client.audio.voices.create(audio_sample=f, consent="bench", name="bench",
                                       extra_body={"transcript": "hello there"})
    result: dict = {"text_chars": len(TEXT), "repeats": repeats, "formats": {}}
    for fmt in FORMATS:
        firsts, totals = [], []
        for i in range(repeats):
            start = time.perf_counter()
            first = None
            with client.audio.speech.with_streaming_response.create(
                    model="cosyvoice3", voice="bench", input=TEXT, response_format=fmt,
                    extra_body={"seed": i}) as response:
                for _ in response.iter_bytes():
                    first = time.perf_counter() - start if first is None else first
            firsts.append(first)
            totals.append(time.perf_counter() - start)
        result["formats"][fmt] = {"first_byte_s": round(statistics.median(firsts), 4),
                                  "total_s": round(statistics.median(totals), 4)}
    server, worker = [], []
    for i in range(repeats):
        with client.audio.speech.with_streaming_response.create(
                model="cosyvoice3", voice="bench", input=TEXT, response_format="pcm", stream_format="sse",
                extra_body={"seed": i}) as response:
            done = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")][-1]
        server.append(done["timing"]["first_chunk_s"])
        worker.append(done["timing"]["worker_first_chunk_s"])
    result["web_process_first_chunk_s"] = round(statistics.median(server), 4)
    result["worker_first_chunk_s"] = round(statistics.median(worker), 4)
    voices = client.get("/audio/voices", cast_to=httpx.Response).json()["data"]
    client.audio.voices.delete(next(v["id"] for v in voices if v["name"] == "bench"))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:7860/")
    p.add_argument("--key", default="none")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--demo", action="store_true", help="start the app on the demo model (CPU) for the run")
    args = p.parse_args()
    if args.demo:
        with tempfile.TemporaryDirectory() as root, running_app(Path(root)) as app:
            client = openai.OpenAI(base_url=app.url + "v1", api_key=args.key, max_retries=0, timeout=600)
            print(json.dumps({"server": "demo (CPU)", **measure(client, args.repeats)}))
        return 0
    client = openai.OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=args.key, max_retries=0, timeout=600)
    print(json.dumps({"server": args.url, **measure(client, args.repeats)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
