"""Every sentence the server puts on the page, in English and Chinese.

One table turns each error code of the worker protocol into one plain sentence; a second one
covers what can be wrong with a prompt recording (too short, too long, silent, unreadable), keyed
by the reason the refusal carries (`Failed.reason`, never guessed from the English message); the
refusals of a request's spec (`cosyvoice3.spec.check_spec`) name their notice by their reason too
(`refusal_sentence`). The
model's own detail message, when there is one, is a single line appended in parentheses; stack
traces never reach the page. `language(request)` picks "zh" or "en" from the browser's
Accept-Language header (the static labels are translated in the browser by gr.I18n, see i18n.py).
"""

from __future__ import annotations

import json

from cosyvoice3.errors import (
    AudioDecodeError,
    BadInstructionError,
    BadSeedError,
    BadSpeedError,
    EmptyTextError,
    PromptTooLongError,
    PromptTooShortError,
    SilentPromptError,
    TextTooLongError,
    UnknownModeError,
)
from webui import script as S
from worker import protocol as P

EN, ZH = "en", "zh"

ERRORS = {
    P.BAD_INPUT: ("The request could not be used.", "请求无法处理。"),
    P.TOO_LONG: ("The text is too long for one request: shorten it or split it into parts.",
                 "文本太长，请缩短或分段生成。"),
    P.OOM: ("The GPU ran out of memory: try a shorter text, or try again in a moment.",
            "显存不足：请缩短文本，或稍后再试。"),
    P.WORKER_CRASHED: ("The speech engine crashed and was restarted, but this request could not be "
                       "finished: please try again.", "语音引擎崩溃后已重启，但本次请求未能完成，请重试。"),
    P.WORKER_HUNG: ("The speech engine stopped responding and was restarted: please try again.",
                    "语音引擎无响应，已重启，请重试。"),
    P.TIMEOUT: ("The request took too long and was stopped: try a shorter text.",
                "请求超时已停止，请缩短文本后重试。"),
    P.OVERLOADED: ("The server is busy with other requests: please try again in a moment.",
                   "服务器繁忙，请稍后再试。"),
    P.CANCELLED: ("Generation was stopped.", "已停止生成。"),
    P.INTERNAL: ("Something went wrong inside the speech engine: please try again.",
                 "语音引擎内部出错，请重试。"),
}

# What can be wrong with a prompt recording: the reasons of the prompt checks' errors
# (cosyvoice3.errors; they travel in Failed.reason), and OTHER for any other refusal of a prompt.
TOO_SHORT, TOO_LONG, SILENT, UNREADABLE = (PromptTooShortError.reason, PromptTooLongError.reason,
                                           SilentPromptError.reason, AudioDecodeError.reason)
OTHER = "other"
PROMPT_PROBLEMS = {
    TOO_SHORT: ("The prompt audio is too short: record or upload 3-10 seconds of clear speech.",
                "参考音频太短：请录制或上传 3-10 秒清晰的语音。"),
    TOO_LONG: ("The prompt audio is longer than {limit:.0f} seconds: use a shorter clip, or keep only "
               "its first {limit:.0f} seconds.", "参考音频超过 {limit:.0f} 秒：请换一段更短的音频，或只保留前 {limit:.0f} 秒。"),
    SILENT: ("The prompt audio is silent: check the microphone and record again.",
             "参考音频没有声音：请检查麦克风后重新录制。"),
    UNREADABLE: ("The prompt audio could not be read: upload a wav, mp3, ogg, flac, webm or m4a file.",
                 "无法读取参考音频：请上传 wav、mp3、ogg、flac、webm 或 m4a 文件。"),
    OTHER: ("The prompt audio could not be used.", "参考音频无法使用。"),
}

# Why a dialogue script was refused (webui/script.py): its errors' reasons, each with its params.
SCRIPT_TAGS_HINT = ("Script tags are [voice:NAME], [pause:0.8s] and [instruction:...].",
                    "脚本标签有 [voice:名称]、[pause:0.8s] 和 [instruction:...]。")
SCRIPT_PROBLEMS = {
    S.UNKNOWN_VOICE: ("Not among your saved voices: {voices}. Save the voice first, or check the name.",
                                       "已保存的音色中没有：{voices}。请先保存该音色，或检查名称。"),
    S.NO_VOICE: ("Text on {lines} comes before any [voice:NAME] tag and no voice is chosen: pick a voice, "
                                  "or start the script with a voice tag.",
                                  "{lines}在任何 [voice:名称] 标签之前，且未选择音色：请选择音色，或在脚本开头写上音色标签。"),
    S.BAD_PAUSE: ("Line {line}: the pause “{value}” is not a length above 0 up to {max_s:g} s; "
                                   "write it like [pause:0.8s] or [pause:800ms].",
                                   "第 {line} 行：停顿“{value}”不是大于 0、至多 {max_s:g} 秒的时长，"
                                   "请写成 [pause:0.8s] 或 [pause:800ms]。"),
    S.TOO_MUCH_PAUSE: ("Line {line}: the pauses up to here add up to more than {max_s:g} s, the most one script "
                       "may have.", "第 {line} 行：到此为止的停顿合计超过 {max_s:g} 秒，超出了一个脚本的上限。"),
    S.BAD_TAG: ("Line {line}: {problem} {hint}", "第 {line} 行：{problem}{hint}"),
    S.EMPTY_SCRIPT: ("The script has no text to speak: write the lines after their tags.",
                                "脚本中没有要朗读的文本：请在标签后写上台词。"),
}
SCRIPT_TAG_PROBLEMS = {
    S.UNKNOWN: ("“{tag}” is not a script tag.", "“{tag}”不是脚本标签。"),
    S.UNCLOSED: ("“{tag}” has no closing bracket on its line.", "“{tag}”在本行缺少右方括号。"),
    S.EMPTY: ("“{tag}” has nothing after the colon.", "“{tag}”的冒号后面是空的。"),
    S.NO_TEXT: ("“{tag}” has no text after it to apply to.", "“{tag}”之后没有可应用的文本。"),
    S.BAD_INSTRUCTION: ("the instruction of “{tag}” cannot be used.", "“{tag}”中的指令无法使用。"),
}

NOTICES = {
    "script_chosen_voice": ("(the chosen voice)", "（所选音色）"),
    "script_pause": ("(pause)", "（停顿）"),
    "need_text": ("Type the text to speak first.", "请先输入要合成的文本。"),
    "text_too_long": ("The text has {n} characters; the limit is {limit}. Shorten it or split it into parts.",
                      "文本有 {n} 个字符，上限为 {limit}。请缩短或分段生成。"),
    "need_prompt": ("Record or upload a prompt voice (3-10 s), or pick a saved voice.",
                    "请录制或上传一段参考语音（3-10 秒），或选择已保存的音色。"),
    "bad_mode": ("Unknown mode “{mode}”: use one of {modes}.", "未知模式“{mode}”：请使用 {modes} 之一。"),
    "bad_speed": ("The speed {speed:g} is outside {low:g} to {high:g}.", "语速 {speed:g} 超出 {low:g} 到 {high:g} 的范围。"),
    "bad_number": ("The speed must be a number.", "语速必须是数字。"),
    "bad_seed": ("The seed {seed} is not a whole number from {low} to {high}.",
                 "随机种子 {seed} 不是 {low} 到 {high} 之间的整数。"),
    "file_too_large": ("The prompt file is too large ({detail}).", "参考音频文件太大（{detail}）。"),
    "need_instruction": ("Instruct mode needs an instruction: pick a preset or type one.",
                         "指令模式需要一条指令：请选择预设或自行输入。"),
    "cross_lingual_auto": ("No prompt text given: using cross-lingual cloning (the voice is cloned "
                           "without a transcript).", "未填写参考文本：将使用跨语种复刻（无需参考文本）。"),
    "prompt_hint": ("Speak 3-10 seconds. Silence is trimmed and the level evened out for you.",
                    "请说 3-10 秒。静音会自动裁剪，音量会自动调整。"),
    "prompt_ready": ("Voice ready: {used:.1f} s of speech will be used.", "音色已就绪：将使用 {used:.1f} 秒语音。"),
    "prompt_cut": ("Kept the first {limit:.0f} seconds of the recording.", "已保留录音的前 {limit:.0f} 秒。"),
    "voice_loaded": ("Using saved voice “{name}” ({used:.1f} s).", "正在使用已保存的音色“{name}”（{used:.1f} 秒）。"),
    "voice_missing": ("That saved voice no longer exists (it may have expired).", "该音色已不存在（可能已过期）。"),
    "voice_saved": ("Saved voice “{name}”.", "已保存音色“{name}”。"),
    "voice_deleted": ("Deleted voice “{name}”.", "已删除音色“{name}”。"),
    "need_voice_name": ("Give the voice a name first.", "请先为音色命名。"),
    "nothing_to_save": ("Record or upload a prompt voice first; then it can be saved.",
                        "请先录制或上传参考语音，然后才能保存。"),
    "no_owner": ("Saved voices need this site's cookie: allow cookies for it and reload the page.",
                 "保存音色需要本站的 Cookie：请允许后重新加载页面。"),
    "pick_voice_to_delete": ("Pick a saved voice to delete.", "请先选择要删除的音色。"),
    "recovering": ("The speech engine is restarting; your request will continue by itself.",
                   "语音引擎正在重启，请求将自动继续。"),
    "queued": ("Waiting for the speech engine...", "正在等待语音引擎..."),
    "reading": ("Reading the text before speaking it...", "正在读取文本，随后开始朗读..."),
    "generating": ("Generating... {audio:.1f} s of audio so far", "生成中... 已生成 {audio:.1f} 秒音频"),
    "stopped": ("Generation was stopped.", "已停止生成。"),
    "long_progress": ("Generating... segment {done} of {total}, {audio:.1f} s of audio so far, about {left} left",
                      "生成中... 第 {done} / {total} 段，已生成 {audio:.1f} 秒音频，约剩 {left}"),
    "takes_range": ("Takes must be a whole number from {low} to {high}.", "生成版本数须为 {low} 到 {high} 的整数。"),
    "takes_one_text": ("Takes are for one text, not a script: send the script without takes.",
                       "生成多个版本只适用于单段文本，不适用于对话脚本：请去掉 takes 再发送脚本。"),
    "takes_not_streamed": ("Takes are answered whole by /v1/audio/captioned_speech; /v1/audio/speech streams "
                           "one take: send it without takes.",
                           "多个版本由 /v1/audio/captioned_speech 一次返回；/v1/audio/speech 只流式返回一个版本："
                           "请去掉 takes。"),
    "take_label": ("Take {n} · seed {seed}", "版本 {n} · 种子 {seed}"),
    "use_seed": ("Use seed {seed}", "使用种子 {seed}"),
    "transcript_filled": ("Transcribed automatically ({language}): check it and correct it if needed.",
                          "已自动识别（{language}）：请核对，必要时修改。"),
    "transcript_filled_unknown": ("Transcribed automatically: check it and correct it if needed.",
                                  "已自动识别：请核对，必要时修改。"),
    "transcript_downloading": ("Downloading the speech recogniser (first use): {detail}",
                               "正在下载语音识别模型（首次使用）：{detail}"),
    "transcript_loading": ("Loading the speech recogniser... {percent:.0f}%", "正在加载语音识别模型... {percent:.0f}%"),
    "transcript_demo": ("(Demo recogniser: the text is random.)", "（演示识别模型：文本是随机的。）"),
    "transcript_none": ("No speech was recognised: type what is said in the prompt audio.",
                        "未识别出语音：请输入参考音频中说的内容。"),
    "transcript_kept": ("Kept the transcript you typed (the automatic one was not used).",
                        "已保留你输入的参考文本（未使用自动识别的结果）。"),
    "transcript_failed": ("Automatic transcription is not available right now: type what is said in the "
                          "prompt audio.", "暂时无法自动识别：请输入参考音频中说的内容。"),
}

# The refusals of a request's spec (cosyvoice3.spec.check_spec): reason -> the notice that words it
# (its params fill the notice), and the spec field at fault where an API names it.
REFUSALS = {EmptyTextError.reason: "need_text", TextTooLongError.reason: "text_too_long",
            UnknownModeError.reason: "bad_mode", BadSpeedError.reason: "bad_speed", BadSeedError.reason: "bad_seed",
            BadInstructionError.reason: "need_instruction"}
REFUSED_FIELDS = {BadSeedError.reason: "seed"}

# Languages the recogniser tags (its codes) -> names on the page.
LANGUAGE_NAMES = {"zh": ("Chinese", "中文"), "en": ("English", "英语"), "yue": ("Cantonese", "粤语"),
                  "ja": ("Japanese", "日语"), "ko": ("Korean", "韩语")}


def language(request) -> str:
    """"zh" when the browser prefers Chinese (Accept-Language), else "en"."""
    headers = getattr(request, "headers", None) or {}
    accept = headers.get("accept-language", "") if hasattr(headers, "get") else ""
    first = accept.split(",")[0].strip().lower()
    return ZH if first.startswith("zh") else EN


def pick(pair: tuple[str, str], lang: str) -> str:
    return pair[1] if lang == ZH else pair[0]


def notice(key: str, lang: str = EN, **values) -> str:
    return pick(NOTICES[key], lang).format(**values)


def language_name(code: str, lang: str = EN) -> str:
    """The page's name of a recogniser language code ('' for none or an unknown one)."""
    return pick(LANGUAGE_NAMES[code], lang) if code in LANGUAGE_NAMES else ""


def notice_js(key: str, mark: str) -> str:
    """A JavaScript expression for a notice (marked with `mark`) in the browser's language, for
    the page's scripts that run without a server round trip."""
    en, zh = NOTICES[key]
    return (f"((navigator.language || '').toLowerCase().startsWith('zh') ? {json.dumps(f'{mark} {zh}')} "
            f": {json.dumps(f'{mark} {en}')})")


def error_sentence(code: str, lang: str = EN, detail: str = "") -> str:
    """One sentence for a protocol error code, plus the model's one-line detail when useful."""
    sentence = pick(ERRORS.get(code, ERRORS[P.INTERNAL]), lang)
    detail = first_line(detail)
    if detail and code in (P.BAD_INPUT, P.TOO_LONG):
        sentence = f"{sentence} ({detail})"
    return sentence


def refusal_sentence(reason: str, params: dict, lang: str = EN, detail: str = "") -> str:
    """The sentence of a refused request spec, by its reason and numbers (`detail`: the model's
    message, for a reason without a notice of its own)."""
    key = REFUSALS.get(reason)
    if key is None:
        return error_sentence(P.BAD_INPUT, lang, detail)
    if key == "bad_speed" and "speed" not in params:
        return notice("bad_number", lang)
    sentence = notice(key, lang, **params)
    return f"{sentence} ({params['detail']})" if params.get("detail") else sentence


def prompt_problem(reason: str) -> str:
    """The PROMPT_PROBLEMS key of a refused prompt's reason (`Failed.reason`, an error's `reason`)."""
    return reason if reason in PROMPT_PROBLEMS else OTHER


def prompt_sentence(problem: str, lang: str = EN, limit_s: float = 30.0, detail: str = "") -> str:
    sentence = pick(PROMPT_PROBLEMS[problem], lang).format(limit=limit_s)
    detail = first_line(detail)
    if problem == OTHER and detail:
        sentence = f"{sentence} ({detail})"
    return sentence


def first_line(text: str, limit: int = 240) -> str:
    """The first non-empty line of a message, shortened; never a traceback."""
    for line in (text or "").strip().splitlines():
        line = line.strip()
        if line and not line.startswith("Traceback"):
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def script_sentence(reason: str, params: dict, lang: str = EN) -> str:
    """One sentence for a refused script: its ScriptError's `reason` and `params` (webui/script.py)."""
    if reason == S.UNKNOWN_VOICE:
        return pick(SCRIPT_PROBLEMS[reason], lang).format(voices=_voices_and_lines(params["voices"], lang))
    if reason == S.NO_VOICE:
        return pick(SCRIPT_PROBLEMS[reason], lang).format(lines=_lines(params["lines"], lang))
    if reason == S.BAD_TAG:
        problem = pick(SCRIPT_TAG_PROBLEMS[params["problem"]], lang).format(tag=params["tag"])
        return pick(SCRIPT_PROBLEMS[reason], lang).format(line=params["line"], problem=problem,
                                                           hint=pick(SCRIPT_TAGS_HINT, lang))
    return pick(SCRIPT_PROBLEMS[reason], lang).format(**params)


def script_line(line: int, sentence: str, lang: str = EN) -> str:
    """A line of a script refused by the request checks: 'Line 3: <why>' ('第 3 行：<why>')."""
    return f"第 {line} 行：{sentence}" if lang == ZH else f"Line {line}: {sentence}"


def _lines(lines: list[int], lang: str) -> str:
    """'line 3' / 'lines 3, 5' ('第 3 行' / '第 3、5 行')."""
    if lang == ZH:
        return f"第 {'、'.join(map(str, lines))} 行"
    return f"{'line' if len(lines) == 1 else 'lines'} {', '.join(map(str, lines))}"


def _voices_and_lines(voices: list[dict], lang: str) -> str:
    """'“Bob” (line 3), “Carol” (lines 5, 7)' ('“Bob”（第 3 行）、“Carol”（第 5、7 行）')."""
    if lang == ZH:
        return "、".join(f"“{v['name']}”（{_lines(v['lines'], lang)}）" for v in voices)
    return ", ".join(f"“{v['name']}” ({_lines(v['lines'], lang)})" for v in voices)
