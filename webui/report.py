"""What the page says about one generation, as HTML: a progress bar while it runs, one-line
messages (waiting, recovering, errors), and the stats table when it is done."""

from __future__ import annotations

import html

from . import messages as M

STAT_NAMES = {"audio": ("Audio", "音频时长"), "wall": ("Wall time", "耗时"), "rtf": ("RTF", "实时率"),
              "first_chunk": ("First chunk", "首包延迟"), "backend": ("Backend", "推理后端"),
              "title": ("Generation stats", "生成统计"), "worker": ("worker", "引擎内")}


def message_html(text: str, icon: str = "") -> str:
    """One line of text, e.g. message_html(sentence, "⚠")."""
    return f'<div class="cf-message">{html.escape(f"{icon} {text}".strip(), quote=False)}</div>'


def progress_html(text: str, fraction: float | None) -> str:
    """A progress bar (indeterminate when fraction is None) with a line of text under it."""
    value = "" if fraction is None else f' value="{min(max(fraction, 0.0), 1.0):.3f}"'
    percent = f" ({fraction * 100:.0f}%)" if fraction else ""
    return (f'<div class="cf-running"><progress max="1"{value}></progress>'
            f'<div>{html.escape(text + percent, quote=False)}</div></div>')


def stats_html(audio_s: float, wall_s: float, first_chunk_s: float | None, worker_first_chunk_s: float | None,
               backend: str, lang: str) -> str:
    """The finished generation: audio seconds, wall seconds, real-time factor, first-chunk latency
    (as the page saw it, and inside the worker) and the backend of each module."""
    first = f"{first_chunk_s:.2f} s" if first_chunk_s is not None else "-"
    if worker_first_chunk_s is not None:
        first += f" ({M.pick(STAT_NAMES['worker'], lang)} {worker_first_chunk_s:.2f} s)"
    rows = [("audio", f"{audio_s:.2f} s"), ("wall", f"{wall_s:.2f} s"),
            ("rtf", f"{wall_s / audio_s:.2f}" if audio_s else "-"), ("first_chunk", first), ("backend", backend)]
    body = "".join(f"<dt>{M.pick(STAT_NAMES[name], lang)}</dt><dd>{html.escape(value)}</dd>" for name, value in rows)
    return f'<div class="cf-stats-title">{M.pick(STAT_NAMES["title"], lang)}</div><dl class="cf-stats-list">{body}</dl>'
