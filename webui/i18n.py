"""Static page texts in English and Chinese, translated in the browser by `gr.I18n`.

The browser's language picks the table (Gradio's settings page can switch it); any language
other than Chinese gets English. The English labels of the main components are fixed names that
tests and scripts look for: "Prompt audio", "Prompt text", "Mode", "Instruction", "Text to speak",
"Generate", "Output audio", "Status". A text may name a field of the app's `Limits` (`page_i18n`),
so a label follows its flag. Server-side sentences (errors, notices) are in messages.py.
"""

from __future__ import annotations

import gradio as gr
from gradio.i18n import I18nData

from cosyvoice3.modes import Limits

EN = {
    "header": "# CosyVoice3 voice cloning\nRecord or upload 3-10 s of a voice, type a text, press Generate.",
    "prompt_audio": "Prompt audio",
    "prompt_audio_info": "Speak 3-10 seconds. Silence is trimmed and the level evened out for you.",
    "prompt_text": "Prompt text",
    "prompt_text_placeholder": "What is said in the prompt audio (leave empty for cross-lingual cloning)",
    "prompt_text_info": "Filled in by itself from the recording; check it. The transcript gives the best zero-shot quality.",
    "keep_first": "Keep the first {max_prompt_seconds:g} s",
    "voice_library": "Saved voices",
    "saved_voice": "Saved voice",
    "saved_voice_info": "Pick a voice saved earlier instead of recording again.",
    "voice_name": "Voice name",
    "voice_name_placeholder": "e.g. Alice, calm",
    "save_voice": "Save voice",
    "delete_voice": "Delete",
    "mode": "Mode",
    "cross_lingual_note": ("ℹ No prompt text given: using cross-lingual cloning "
                           "(the voice is cloned without a transcript)."),
    "mode_zero_shot": "Zero-shot clone",
    "mode_cross_lingual": "Cross-lingual clone",
    "mode_instruct": "Instruct",
    "mode_help": ("**Zero-shot**: clone the voice using its transcript (best quality).  \n"
                  "**Cross-lingual**: clone without a transcript, e.g. to speak another language.  \n"
                  "**Instruct**: clone and follow an instruction (dialect, emotion, speed, volume, style)."),
    "instruction": "Instruction",
    "instruction_info": "Choosing a preset switches the mode to Instruct.",
    "custom_instruction": "Custom instruction",
    "custom_instruction_info": "Your own wording; keep it short and plain. It wins over the preset.",
    "custom_instruction_placeholder": "e.g. 请用温柔的语气说。",
    "text": "Text to speak",
    "text_placeholder": "Type what the voice should say. The language is detected automatically.",
    "script": "Script: several voices, pauses",
    "script_help": ("Write a dialogue in the text box with tags: **[voice:NAME]** speaks what follows in a "
                    "saved voice (by name), **[pause:0.8s]** is silence (or 800ms), **[instruction:...]** gives "
                    "the next line an instruction (a preset or free text). Text before the first voice tag uses "
                    "the chosen voice. Each line is spoken as it is made; captions (SRT, VTT) name the voices."),
    "script_insert_voice": "Insert a saved voice at the cursor",
    "script_preview": "Lines and their voices",
    "advanced": "Advanced",
    "seed": "Seed",
    "dice": "⚄ Random seed",
    "takes": "Takes",
    "takes_info": "The same text in this many seeds at once (the seed, then seed+1, ...): pick the one you like",
    "speed": "Speed",
    "stream": "Stream while generating",
    "text_frontend": "Read numbers and symbols out",
    "text_frontend_info": "Off: the text is spoken as written (already normalised, or with pinyin/phoneme markup).",
    "generate": "Generate",
    "stop": "Stop",
    "output_audio": "Output audio",
    "downloads": "Download",
    "status": "Status",
    "phone": "📱 Open on your phone",
}

ZH = {
    "header": "# CosyVoice3 声音复刻\n录制或上传 3-10 秒语音，输入文本，点击生成。",
    "prompt_audio": "参考音频",
    "prompt_audio_info": "请说 3-10 秒。静音会自动裁剪，音量会自动调整。",
    "prompt_text": "参考文本",
    "prompt_text_placeholder": "参考音频中说的内容（留空则使用跨语种复刻）",
    "prompt_text_info": "录音后会自动识别填写，请核对。参考文本准确时零样本复刻效果最好。",
    "keep_first": "保留前 {max_prompt_seconds:g} 秒",
    "voice_library": "已保存的音色",
    "saved_voice": "已保存的音色",
    "saved_voice_info": "选择之前保存的音色，无需重新录制。",
    "voice_name": "音色名称",
    "voice_name_placeholder": "例如：小王，平静",
    "save_voice": "保存音色",
    "delete_voice": "删除",
    "mode": "模式",
    "cross_lingual_note": "ℹ 未填写参考文本：将使用跨语种复刻（无需参考文本）。",
    "mode_zero_shot": "零样本复刻",
    "mode_cross_lingual": "跨语种复刻",
    "mode_instruct": "指令控制",
    "mode_help": ("**零样本复刻**：使用参考文本复刻音色（效果最好）。  \n"
                  "**跨语种复刻**：无需参考文本，例如用该音色说另一种语言。  \n"
                  "**指令控制**：复刻音色并按指令说话（方言、情绪、语速、音量、风格）。"),
    "instruction": "指令",
    "instruction_info": "选择预设后模式会切换为指令控制。",
    "custom_instruction": "自定义指令",
    "custom_instruction_info": "自行输入指令，简短明确为宜；填写后优先于预设。",
    "custom_instruction_placeholder": "例如：请用温柔的语气说。",
    "text": "合成文本",
    "text_placeholder": "输入要说的内容，语言会自动识别。",
    "script": "脚本：多个音色、停顿",
    "script_help": ("在文本框中用标签写对话：**[voice:名称]** 让后面的内容用已保存的音色（按名称）朗读，"
                    "**[pause:0.8s]** 表示停顿（也可写 800ms），**[instruction:...]** 为下一行指定指令（预设或自由文本）。"
                    "第一个音色标签之前的文本使用所选音色。各行边生成边播放；字幕（SRT、VTT）标注音色名称。"),
    "script_insert_voice": "在光标处插入已保存的音色",
    "script_preview": "各行及其音色",
    "advanced": "高级设置",
    "seed": "随机种子",
    "dice": "⚄ 随机种子",
    "takes": "生成版本数",
    "takes_info": "同一文本一次用这么多个种子生成（种子、种子+1、……），挑选最满意的一个",
    "speed": "语速",
    "stream": "边生成边播放",
    "text_frontend": "朗读数字与符号",
    "text_frontend_info": "关闭后按原文朗读（文本已规范化，或带有拼音/音素标注）。",
    "generate": "生成",
    "stop": "停止",
    "output_audio": "输出音频",
    "downloads": "下载",
    "status": "状态",
    "phone": "📱 在手机上打开",
}

PREFIX = "cosyfast_"  # keeps our keys apart from Gradio's own (it has "status", "upload", ...)


LOCALES = {"en": EN, "zh": ZH, "zh-CN": ZH, "zh-TW": ZH, "zh-HK": ZH}


def page_i18n(limits: Limits) -> gr.I18n:
    """The page's translations with the app's values in them: a text's `{max_prompt_seconds:g}`
    (any field of `Limits`) says what the flag set, in every language."""
    values = limits.as_dict()
    return gr.I18n(**{locale: {PREFIX + key: text.format(**values) for key, text in texts.items()}
                      for locale, texts in LOCALES.items()})


def t(key: str) -> I18nData:
    """A translation key for a component's label or text, resolved in the browser."""
    if key not in EN:
        raise KeyError(key)
    return I18nData(PREFIX + key)
