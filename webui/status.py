"""The status panel: the worker client's health dict rendered as a small HTML block.

Shows the worker state (with "recovering" while it restarts, "idle" once released after a while
without requests and "waking up" while a request starts it again), what each model part runs on and
why, GPU memory, the decode batch (now, mean, max), uptime, restarts and the last restart cause, queue depth and requests in flight,
and a progress bar while the model downloads, engines build or the worker wakes up. With several workers (one per GPU,
health's `workers`): how many are ready and the totals, then those facts on a line per worker.
Pure formatting: no I/O here.
"""

from __future__ import annotations

import html

from worker.supervisor import causes as C
from worker.supervisor.health import STATUS_OF_STATE

from .messages import EN, ZH

STATES = {
    "ready": ("Ready", "就绪", "ok"),
    "starting": ("Starting", "启动中", "busy"),
    "loading": ("Loading the model", "正在加载模型", "busy"),
    "recovering": ("Recovering: the speech engine is restarting, requests will continue",
                   "恢复中：语音引擎正在重启，请求将自动继续", "warn"),
    "boot_failed": ("Failed to start", "启动失败", "bad"),
    "stopped": ("Stopped", "已停止", "bad"),
    "idle": ("Idle: the GPU is freed; the next request wakes the speech engine up",
             "空闲：已释放 GPU，下一个请求会唤醒语音引擎", "ok"),
    "waking": ("Waking up: the speech engine is starting again, requests will continue",
               "正在唤醒：语音引擎正在重新启动，请求将自动继续", "busy"),
    "unknown": ("Unknown", "未知", "warn"),
}

# states of a healthy worker (health's status "ok": ready, or idle and served after a wake-up)
AVAILABLE = {state for state, status in STATUS_OF_STATE.items() if status == "ok"}

# Labels of the supervisor's restart causes (health's worker.last_restart_cause; named in
# worker/supervisor/causes.py).
CAUSES = {
    C.CRASHED: ("crashed", "崩溃"),
    C.HUNG: ("stopped responding", "无响应"),
    C.STALLED: ("stalled", "卡住"),
    C.OUT_OF_MEMORY: ("out of GPU memory", "显存不足"),
    C.CUDA_ERROR: ("CUDA error", "CUDA 错误"),
    C.MEMORY: ("memory limit", "内存超限"),
    C.RECYCLED: ("planned recycling", "定期重启"),
    C.BOOT_CRASHED: ("crashed while starting", "启动时崩溃"),
}

WORDS = {
    "status": ("Status", "状态"),
    "worker": ("Worker", "工作进程"),
    "uptime": ("uptime", "运行时间"),
    "restarts": ("restarts", "重启次数"),
    "last_cause": ("last cause", "上次原因"),
    "queue": ("queue", "排队"),
    "inflight": ("in progress", "进行中"),
    "gpu": ("GPU memory", "显存"),
    "batch": ("batch", "批大小"),
    "flow_cache": ("flow cache", "流缓存"),
    "voices": ("voices", "个声音"),
    "prefixes": ("prompt prefixes", "提示前缀"),
    "hit_rate": ("hit rate", "命中率"),
    "batch_mean": ("mean", "平均"),
    "batch_max": ("max", "最大"),
    "device": ("device", "设备"),
    "backends": ("Backends", "推理后端"),
    "demo": ("Demo model: random weights, the output is noise, not speech.",
             "演示模型：随机权重，输出是噪声而不是语音。"),
    "unreachable": ("The status of the speech engine is not available.", "无法获取语音引擎状态。"),
    "workers_ready": ("{ready} of {total} workers ready", "{total} 个工作进程中 {ready} 个就绪"),
}


def _w(key: str, lang: str) -> str:
    return WORDS[key][1 if lang == ZH else 0]


def render_status(health: dict | None, lang: str = EN) -> str:
    """HTML of the status panel for one health snapshot (None: the client did not answer). With
    several workers (health's `workers`): how many are ready and the totals, then a line per worker."""
    if not health:
        return _section(f'<div class="cf-status-line cf-bad">{_w("unreachable", lang)}</div>', lang)
    workers = health.get("workers") or [health.get("worker") or {}]
    parts = []
    if any(w.get("demo") for w in workers):
        parts.append(f'<div class="cf-banner">{_w("demo", lang)}</div>')
    if len(workers) == 1:
        parts += _worker_lines(workers[0], health, lang)
    else:
        ready = sum(w.get("state") == "ready" for w in workers)
        able = sum(w.get("state") in AVAILABLE for w in workers)
        tone = "ok" if able == len(workers) else "warn" if able else "bad"
        summary = _w("workers_ready", lang).format(ready=ready, total=len(workers))
        facts = [f'<span class="cf-badge cf-{tone}">{html.escape(summary)}</span>', *_counts(health, lang)]
        parts.append('<div class="cf-status-line">' + " · ".join(facts) + "</div>")
        for worker in workers:
            parts += _worker_lines(worker, worker, lang, label=worker_label(worker))
    backends = workers[0].get("backends") or {}
    if backends:
        rows = "".join(f"<li><b>{html.escape(str(name))}</b>: {html.escape(backend_text(entry))}</li>"
                       for name, entry in backends.items())
        parts.append(f'<details class="cf-backends"><summary>{_w("backends", lang)}: '
                     f'{html.escape(backend_summary(backends))}</summary><ul>{rows}</ul></details>')
    return _section("".join(parts), lang)


def worker_label(worker: dict) -> str:
    """'gpu2' for cosyfast-worker-gpu2, '1' for cosyfast-worker-1: the worker's name, short."""
    name = str(worker.get("name") or "")
    return name.removeprefix("cosyfast-worker-") if name.startswith("cosyfast-worker-") else name


def _counts(counts: dict, lang: str) -> list[str]:
    return [f'{_w("queue", lang)} {int(counts.get("queue_depth") or 0)}',
            f'{_w("inflight", lang)} {int(counts.get("inflight") or 0)}']


def _worker_lines(worker: dict, counts: dict, lang: str, label: str | None = None) -> list[str]:
    """One worker's status line (its queue and requests in flight read from `counts`), its
    loading progress and its boot error."""
    state = str(worker.get("state") or "unknown")
    if state in ("starting", "loading") and worker.get("restarts"):
        state = "recovering"  # a replacement worker booting: requests wait for it
    en, zh, tone = STATES.get(state, (state, state, "warn"))
    facts = [f'<span class="cf-badge cf-{tone}">{html.escape(zh if lang == ZH else en)}</span>']
    if label is not None:
        facts.insert(0, f'<b>{_w("worker", lang)} {html.escape(label)}</b>')
    if worker.get("pid"):
        facts.append(f'{"pid" if label is not None else _w("worker", lang)} {int(worker["pid"])}')
    if state == "ready" and worker.get("uptime_s") is not None:
        facts.append(f'{_w("uptime", lang)} {format_duration(float(worker["uptime_s"]))}')
    facts.append(f'{_w("restarts", lang)} {int(worker.get("restarts") or 0)}')
    cause = worker.get("last_restart_cause")
    if cause:
        words = CAUSES.get(cause, (cause, cause))
        facts.append(f'{_w("last_cause", lang)}: {html.escape(words[1 if lang == ZH else 0])}')
    facts += _counts(counts, lang)
    batch = worker.get("batch") or {}
    if batch.get("max"):  # requests decoded together: now, mean over the last minute, most since start
        facts.append(f'{_w("batch", lang)} {int(batch.get("current") or 0)} ({_w("batch_mean", lang)} '
                     f'{float(batch.get("mean") or 0):.1f}, {_w("batch_max", lang)} {int(batch["max"])})')
    cache = batch.get("flow_cache") or {}
    if cache.get("budget_mb"):  # the streaming flow cache: memory held of its budget, voices, hit rate
        rate = cache.get("hit_rate")
        facts.append(f'{_w("flow_cache", lang)} {float(cache.get("used_mb") or 0):.0f}/{float(cache["budget_mb"]):.0f}'
                     f' MiB, {int(cache.get("voices") or 0)} {_w("voices", lang)}'
                     + (f', {_w("hit_rate", lang)} {float(rate) * 100:.0f}%' if rate is not None else ""))
    prefixes = batch.get("prefix_cache") or {}
    if prefixes.get("budget_mb") and prefixes.get("hit_rate") is not None:  # the LLM's prompt prefixes, once used
        facts.append(f'{_w("prefixes", lang)} {int(prefixes.get("prompts") or 0)}, {_w("hit_rate", lang)} '
                     f'{float(prefixes["hit_rate"]) * 100:.0f}%')
    if worker.get("gpu_memory"):
        facts.append(f'{_w("gpu", lang)} {int(worker["gpu_memory"]) / 2**30:.2f} GiB')
    if worker.get("device"):
        device = f'{worker["device"]} {worker.get("dtype") or ""}'.strip()
        facts.append(f'{_w("device", lang)} {html.escape(device)}')
    lines = ['<div class="cf-status-line">' + " · ".join(facts) + "</div>"]
    progress = worker_progress(worker)
    if progress is not None:
        fraction, message = progress
        lines.append(f'<div class="cf-progress"><progress max="1" value="{fraction:.3f}"></progress> '
                     f'{fraction * 100:.0f}% {html.escape(message)}</div>')
    if worker.get("boot_error"):
        error = html.escape(str(worker["boot_error"]).strip().splitlines()[0])
        lines.append(f'<div class="cf-status-line cf-bad">{error}</div>')
    return lines


def _section(body: str, lang: str) -> str:
    return f'<section class="cf-status" aria-label="Status" title="{_w("status", lang)}">{body}</section>'


def backend_text(entry) -> str:
    """'tensorrt fp16 on cuda:0 (reason)' from one backend entry (a dict or a plain string)."""
    if not isinstance(entry, dict):
        return str(entry)
    words = [str(entry.get(k)) for k in ("backend", "precision") if entry.get(k)]
    if entry.get("device"):
        words.append(f"on {entry['device']}")
    text = " ".join(words) or "?"
    return f"{text} ({entry['reason']})" if entry.get("reason") else text


def backend_summary(backends: dict) -> str:
    """'llm torch · flow tensorrt · hift torch': one word per module, for the stats and the panel."""
    words = []
    for name, entry in backends.items():
        backend = entry.get("backend") if isinstance(entry, dict) else entry
        words.append(f"{name} {backend}")
    return " · ".join(words)


def worker_progress(worker: dict) -> tuple[float, str] | None:
    """(fraction, message) while this worker's model downloads or engines build, else None."""
    loading = worker.get("loading") or {}
    if loading.get("fraction") is None or float(loading["fraction"]) >= 1.0:
        return None
    message = str(loading.get("message") or loading.get("stage") or "")
    return min(max(float(loading["fraction"]), 0.0), 1.0), message


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
