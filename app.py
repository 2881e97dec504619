"""cosyfast: the web app. Starts the GPU worker (through its supervisor; one per GPU with `--gpus`,
N with `--workers`, behind the router of worker/router.py), serves the Gradio UI, the
OpenAI-compatible speech API (/v1) and `GET /health` on one port with uvicorn, and stops the
workers on SIGINT/SIGTERM.

    python app.py [--demo] [--model-dir DIR] [--host 127.0.0.1] [--port 7860] ...   (--help)
    python app.py --lan      # every interface, HTTPS (a kept self-signed certificate), a login,
                             # the phone URL and its QR code printed at start (webui/lan/)

This process never imports torch: the model lives in the worker process. Heavy imports (gradio,
fastapi, uvicorn) happen inside `main()`, because the spawn start method re-runs this module's
top level in the worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from cosyvoice3.synthesis.limits import PolicyLimits

log = logging.getLogger("app")

DEFAULT_VOICES_DIR = Path.home() / ".local" / "share" / "cosyfast" / "voices"
MB, MINUTE_S, DAY_S = 1 << 20, 60.0, 86400.0  # the units of the --*-mb, --*-minutes and --*-days flags


def parse_args(argv=None) -> argparse.Namespace:
    # every default is its owner's: the dataclass field the flag sets
    from cosyvoice3.modes import MAX_PROMPT_SECONDS, Limits
    from webui.voices import DEFAULT_TTL_S
    from worker.protocol import CPU_ROWS, GPU_ROWS, WorkerConfig
    from worker.supervisor.config import SupervisorConfig

    p = argparse.ArgumentParser(prog="python app.py", description="cosyfast: a voice-cloning web app for CosyVoice3.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model-dir", help="a Fun-CosyVoice3-0.5B-2512 directory; when absent the download cache "
                   "(~/.cache/cosyfast or $COSYFAST_CACHE) is used, filled from Hugging Face / ModelScope if "
                   "empty, and the demo model is used when that is impossible")
    m.add_argument("--demo", action="store_true", help="use the tiny random demo model (output is not speech); "
                   "no download")
    m.add_argument("--cache-dir", help="root of the model cache (default ~/.cache/cosyfast, or $COSYFAST_CACHE)")
    m.add_argument("--backend", choices=("auto", "tensorrt", "onnxruntime", "torch"), default=WorkerConfig.backend,
                   help="engine for the heavy modules; auto tries TensorRT, then the fastest PyTorch path")
    m.add_argument("--llm-kernels", choices=("torch", "triton"), default=WorkerConfig.llm_kernels,
                   help="the LLM decode step on a GPU (CUDA graphs): the model's own kernels, or the fused step "
                        "on Triton kernels (attention over each request's own length)")
    m.add_argument("--device", default=WorkerConfig.device, help="auto (CUDA when available), cpu, cuda or cuda:N")
    several = m.add_mutually_exclusive_group()
    several.add_argument("--gpus", metavar="all|0,2|N", help="one worker per GPU: every GPU, these GPU indices, "
                         "or the first N; requests go to the least-loaded ready worker (an error on a machine "
                         "without an NVIDIA GPU)")
    several.add_argument("--workers", type=int, metavar="N", help="N workers on --device (N CPU workers on a "
                         "machine without a GPU); default one")
    m.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default=WorkerConfig.dtype,
                   help="precision of the model weights and compute (auto: bfloat16 on a GPU that has it, "
                        "float16 on older GPUs, float32 on the CPU)")
    m.add_argument("--no-asr", dest="asr", action="store_false",
                   help="do not transcribe prompts; the user types the transcript (transcription on: %(default)s)")
    m.add_argument("--asr-model-dir", help="a SenseVoice-Small directory; when absent the download cache, "
                   "else a download on first use (the demo model gets a random recogniser)")
    s = p.add_argument_group("server")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; with --lan every interface; "
                   "0.0.0.0: every interface, use --auth and TLS then)")
    s.add_argument("--lan", action="store_true", help="serve phones on the local network: every interface, "
                   "HTTPS with a self-signed certificate kept in the cache folder (renewed when the machine's "
                   "names change or it nears expiry; --ssl-certfile/--ssl-keyfile override it), a login "
                   "(--auth, else a generated password printed at start and kept), and the phone URL with "
                   "its QR code printed at start and shown on the page"),
    s.add_argument("--port", type=int, default=7860, help="port for the UI and /health")
    s.add_argument("--auth", metavar="USER:PASS", help="require this user name and password for the UI")
    s.add_argument("--api-key", action="append", metavar="KEY", help="a key of the OpenAI-compatible API "
                   "(/v1, sent as 'Authorization: Bearer KEY'); repeat for several. Without any key the API is "
                   "open on loopback and closed on other interfaces")
    s.add_argument("--api-key-file", metavar="FILE", help="a file of API keys, one a line (# comments)")
    s.add_argument("--ssl-certfile", help="TLS certificate (browsers allow the microphone only on "
                   "localhost or HTTPS)")
    s.add_argument("--ssl-keyfile", help="TLS private key")
    s.add_argument("--max-upload-mb", type=float, default=Limits.max_upload_bytes / MB,
                   help="largest prompt file a visitor may upload")
    s.add_argument("--voices-dir", default=str(DEFAULT_VOICES_DIR), help="where saved voices are kept")
    s.add_argument("--voice-ttl-days", type=float, default=DEFAULT_TTL_S / DAY_S,
                   help="saved voices unused for this many days are removed (0: keep forever)")
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="log level of the app and the worker")
    w = p.add_argument_group("worker supervision")
    w.add_argument("--max-queue", type=int, default=None, help="requests admitted at once over all workers; "
                   f"more are refused with 'overloaded' (default: {SupervisorConfig.max_queue} per worker)")
    w.add_argument("--max-active", type=int, default=None,
                   help=f"text segments a worker decodes together (default: {GPU_ROWS} on a GPU, {CPU_ROWS} on "
                   "the CPU); more wait")
    w.add_argument("--max-positions", type=int, default=WorkerConfig.max_positions,
                   help="LLM positions per decoding segment (prompt + speech tokens); sizes the KV cache")
    w.add_argument("--max-prefill-tokens", type=int, default=PolicyLimits.max_prefill_tokens,
                   help="prompt tokens prefilled per scheduling round (bounds the stall of running streams)")
    w.add_argument("--decode-steps", type=int, default=PolicyLimits.decode_steps,
                   help="LLM decode steps per scheduling round, read back from the GPU once (fewer host waits; "
                   "one while a request waits to join, never past a first chunk's tokens)")
    w.add_argument("--max-audio-batch", type=int, default=PolicyLimits.max_audio_works,
                   help="audio chunks made together in one flow + vocoder batch")
    w.add_argument("--flow-cache-mb", type=int, default=PolicyLimits.flow_cache_mb,
                   help="memory for the streaming flow's chunk cache (default: what is free after the model, "
                   "leaving a tenth of the GPU; 0 turns it off: every chunk re-solves its earlier frames)")
    w.add_argument("--prefix-cache-mb", type=int, default=PolicyLimits.prefix_cache_mb,
                   help="memory for the LLM's prompt prefixes (system prompt + transcript or instruction), kept "
                   "between requests of a voice so their prefill starts after it (0 turns it off)")
    w.add_argument("--hang-timeout", type=float, default=SupervisorConfig.hang_timeout_s, help="seconds without a heartbeat before the "
                   "worker is restarted")
    w.add_argument("--stall-timeout", type=float, default=SupervisorConfig.stall_timeout_s, help="seconds a busy worker may go without "
                   "progress before it is restarted")
    w.add_argument("--request-timeout", type=float, default=SupervisorConfig.request_timeout_s,
                   help="deadline of one request in seconds (a text over "
                   f"{SupervisorConfig.request_timeout_chars} characters gets it in proportion)")
    w.add_argument("--max-attempts", type=int, default=SupervisorConfig.max_attempts, help="starts of one request across worker restarts")
    w.add_argument("--max-text-chars", type=int, default=Limits.max_text_chars, help="longest text accepted")
    w.add_argument("--max-prompt-seconds", type=float, default=Limits.max_prompt_seconds,
                   help=f"longest prompt audio accepted (at most {MAX_PROMPT_SECONDS:g}, the speech tokenizer's limit)")
    w.add_argument("--min-prompt-seconds", type=float, default=Limits.min_prompt_seconds,
                   help="shortest prompt audio accepted (after trimming silence)")
    w.add_argument("--rss-limit-mb", type=int, help="restart the idle worker when its RSS exceeds this")
    w.add_argument("--gpu-limit-mb", type=int, help="restart the idle worker when its GPU memory exceeds this")
    w.add_argument("--recycle-after", type=int, help="restart the idle worker after this many requests")
    w.add_argument("--idle-release-minutes", type=float, metavar="N",
                   default=SupervisorConfig.idle_release_s and SupervisorConfig.idle_release_s / MINUTE_S,
                   help="stop a worker after N minutes without requests, freeing its GPU; the next request "
                   "starts it again, the page saying 'waking up' (None: never)")
    args = p.parse_args(argv)
    if args.auth and ":" not in args.auth:
        p.error("--auth takes USER:PASS")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        p.error("--ssl-certfile and --ssl-keyfile go together")
    if args.host is None:
        args.host = every_interface() if args.lan else "127.0.0.1"
    if args.lan:
        from webui.openai_api.access import is_loopback

        if is_loopback(args.host):
            p.error("--lan serves the network: leave out --host, or give an address other machines reach")
    if args.idle_release_minutes is not None and not args.idle_release_minutes > 0:
        p.error(f"--idle-release-minutes takes a number of minutes above 0, not {args.idle_release_minutes:g} "
                "(leave the flag out to keep the worker running)")
    if args.api_key_file and not Path(args.api_key_file).is_file():
        p.error(f"--api-key-file {args.api_key_file}: no such file")
    try:
        args.limits = limits_from_args(args)
    except ValueError as e:
        p.error(f"limits: {e}")
    try:
        args.policy = PolicyLimits(max_prefill_tokens=args.max_prefill_tokens, decode_steps=args.decode_steps,
                                   max_audio_works=args.max_audio_batch, flow_cache_mb=args.flow_cache_mb,
                                   prefix_cache_mb=args.prefix_cache_mb)
    except ValueError as e:
        p.error(str(e))
    from worker.devices import worker_devices

    try:
        args.worker_devices = worker_devices(args.gpus, args.workers, args.device)
    except ValueError as e:
        p.error(f"--gpus/--workers: {e}")
    if args.max_queue is None:
        args.max_queue = SupervisorConfig.max_queue * len(args.worker_devices)
    return args


def every_interface() -> str:
    """`::` where this machine takes IPv4 and IPv6 on one socket (dual stack), else `0.0.0.0`."""
    try:
        dual_stack_socket(0).close()
        return "::"
    except (OSError, AttributeError):
        return "0.0.0.0"


def dual_stack_socket(port: int):
    """A TCP socket bound to `::` that also takes IPv4 (asyncio's own binding of `::` is IPv6 only)."""
    import socket

    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
    except BaseException:
        sock.close()
        raise
    return sock


def serve_on_network(args: argparse.Namespace):
    """For `--lan`: the certificate and the login set into `args` (`ssl_certfile`/`ssl_keyfile`,
    `auth`). Returns the phone link (None when only this machine can reach the app) and the
    generated login to print (None when --auth gave one or without --lan)."""
    from cosyvoice3.download import cache_root
    from webui.lan import lan_serving, network_link

    if not args.lan:
        return network_link(args.host, args.port, secure=bool(args.ssl_certfile)), None
    serving = lan_serving(cache_root(args.cache_dir) / "lan", args.host, args.port, args.auth,
                          args.ssl_certfile, args.ssl_keyfile)
    args.ssl_certfile, args.ssl_keyfile, args.auth = str(serving.certfile), str(serving.keyfile), serving.auth
    return serving.link, serving.auth if serving.generated_login else None


def limits_from_args(args: argparse.Namespace):
    """The one `Limits` object of this app: the page, the supervisor and the worker all use it."""
    from cosyvoice3.modes import Limits

    return Limits(max_text_chars=args.max_text_chars, max_prompt_seconds=args.max_prompt_seconds,
                  min_prompt_seconds=args.min_prompt_seconds, max_upload_bytes=int(args.max_upload_mb * MB))


def supervisor_config(args: argparse.Namespace, device: str | None = None):
    """The SupervisorConfig of one worker, on `device` (default `--device`)."""
    from worker.protocol import WorkerConfig
    from worker.supervisor import SupervisorConfig

    return SupervisorConfig(
        worker=WorkerConfig(model_dir=args.model_dir, demo=args.demo, cache_dir=args.cache_dir,
                            device=device or args.device,
                            dtype=args.dtype, backend=args.backend, llm_kernels=args.llm_kernels,
                            max_active=args.max_active,
                            max_positions=args.max_positions,
                            policy=args.policy,
                            log_level=logging.getLevelName(args.log_level.upper()), limits=args.limits,
                            asr=args.asr, asr_model_dir=args.asr_model_dir),
        hang_timeout_s=args.hang_timeout, stall_timeout_s=args.stall_timeout, max_attempts=args.max_attempts,
        max_queue=args.max_queue, request_timeout_s=args.request_timeout,
        rss_limit=args.rss_limit_mb and args.rss_limit_mb * MB,
        gpu_limit=args.gpu_limit_mb and args.gpu_limit_mb * MB, recycle_after=args.recycle_after,
        idle_release_s=args.idle_release_minutes and args.idle_release_minutes * MINUTE_S)


def worker_router(args: argparse.Namespace):
    """One Supervisor per worker device (`--gpus`, `--workers`), behind one Router."""
    from worker.devices import worker_name
    from worker.router import Router
    from worker.supervisor import Supervisor

    devices = args.worker_devices
    return Router([Supervisor(supervisor_config(args, device), name=worker_name(i, devices))
                   for i, device in enumerate(devices)], max_queue=args.max_queue)


def synthesis_routine(client, args: argparse.Namespace):
    """The web process's one synthesis routine (webui/synthesis.py): the worker client, the voice
    library and the limits, shared by the page and the APIs."""
    from webui.synthesis import Synthesis
    from webui.voices import VoiceLibrary

    ttl_s = args.voice_ttl_days * DAY_S if args.voice_ttl_days else None
    return Synthesis(client, VoiceLibrary(args.voices_dir, ttl_s=ttl_s), args.limits)


def build_ui(synthesis, args: argparse.Namespace):
    """The Gradio Blocks of webui/ (with the "Open on your phone" panel when `args.phone` is set)."""
    import webui

    return webui.build_ui(synthesis, max_queue=args.max_queue, concurrency=decode_rows(args),
                          phone=getattr(args, "phone", None))


def decode_rows(args: argparse.Namespace) -> int:
    """The decode rows of all the workers together (each worker's rule: `WorkerConfig.rows`), the
    generations the page follows at once."""
    from worker.devices import on_gpu

    return sum(supervisor_config(args, device).worker.rows(on_gpu(device)) for device in args.worker_devices)


def build_app(client, args: argparse.Namespace):
    """FastAPI app: GET /health, the OpenAI-compatible API under /v1, and the UI at /, with the
    access rules of webui/access.py."""
    import gradio as gr
    from fastapi import FastAPI

    from webui.access import (
        MAX_BODY_BYTES,
        Credentials,
        LoginThrottleMiddleware,
        PageAccessMiddleware,
        add_health_route,
        public_events,
        text_body_bytes,
    )
    from webui.openai_api import ApiAccess, install_openai_api
    from webui.throttle import FREE_ATTEMPTS, LoginThrottle

    app = FastAPI(title="cosyfast")
    api_access = ApiAccess.from_flags(args.api_key, args.api_key_file, args.host)
    credentials = Credentials.from_flags(args.auth, api_access.keys)
    throttle = LoginThrottle()
    add_health_route(app, client.health, credentials, throttle)
    synthesis = synthesis_routine(client, args)
    install_openai_api(app, synthesis, api_access)
    blocks = build_ui(synthesis, args)
    app = gr.mount_gradio_app(app, blocks, path="/", auth=credentials.gradio_auth(),
                              auth_message=f"After {FREE_ATTEMPTS} wrong passwords, logins from one address "
                              "wait 1 s, then twice as long after each further try.",
                              max_file_size=args.limits.max_upload_bytes)
    app.add_middleware(LoginThrottleMiddleware, throttle=throttle)
    app.add_middleware(PageAccessMiddleware, public=public_events(blocks),
                       max_body_bytes=max(MAX_BODY_BYTES, text_body_bytes(args.limits.max_text_chars)))
    return app


def main(argv=None) -> int:
    args = parse_args(argv)
    from worker.logs import APP_LOG_FORMAT

    logging.basicConfig(level=args.log_level.upper(), format=APP_LOG_FORMAT)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    args.phone, generated_login = serve_on_network(args)
    import uvicorn

    from worker.client import WorkerClient

    router = worker_router(args)
    router.start()
    client = WorkerClient(router)
    app = build_app(client, args)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # stop the workers at once, in parallel with uvicorn closing its connections
            threading.Thread(target=router.stop, name="stop-workers", daemon=True).start()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, timeout_graceful_shutdown=2,
                            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    scheme = "https" if args.ssl_certfile else "http"
    log.info("serving on %s://%s:%d (health: /health, OpenAI-compatible API: /v1)", scheme,
             f"[{args.host}]" if ":" in args.host else args.host, args.port)
    if args.phone is not None:
        from webui.lan import console_banner

        print(console_banner(args.phone, generated_login), flush=True)
    try:
        Server(config).run(sockets=[dual_stack_socket(args.port)] if args.host == "::" else None)
    finally:
        router.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
