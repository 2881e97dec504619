"""Offline text front end: normalisation, sentence splitting, language detection.

Replaces the official wetext/ttsfrd front end with plain Python (no FST downloads):
- `normalize` spells out numbers (integers, decimals, negatives, percentages, money,
  temperatures, fractions, years, dates, times, ordinals) in Chinese for zh text and in English
  words for en text, rewrites common symbols, unifies full/half-width characters and applies
  the zh punctuation rules of the reference (section 2.2).
- `split_segments` cuts a text into synthesis segments like the official `split_paragraph`
  (token_max_n 80, token_min_n 60, merge_len 20; zh length = characters, en length = Qwen
  tokens). Unlike the official code, a sentence longer than token_max_n is first cut at commas
  or spaces (then hard), so no segment grows without bound, and a run of terminators ("?!",
  "...") stays with its sentence instead of being dropped.
- `detect_language`: "zh" if the text has a CJK ideograph (U+4E00..U+9FFF), else "en". Text in
  other scripts (no Latin letter, no ideograph) keeps its digits: it is passed through apart
  from whitespace and width unification.
A text with both `<|` and `|>` (markup such as `<|endofprompt|>`) is neither normalised nor
split, as in the reference.
"""

from __future__ import annotations

import re
import unicodedata

from cosyvoice3.errors import EmptyTextError

TOKEN_MAX_N, TOKEN_MIN_N, MERGE_LEN = 80, 60, 20
MAX_CARDINAL_DIGITS = 10  # longer digit strings (phone numbers, ids) are read digit by digit

_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_ZH_TERMINATORS = "。？！；：、.?!;"
_EN_TERMINATORS = ".?!;:。？！；"  # official en set plus full-width ends (Japanese/Chinese-style text)
_CLOSING_QUOTES = "\"”"
_ZH_SOFT_BREAKS = "，,"
_EN_SOFT_BREAKS = ","
_KEEP_FULL_WIDTH_IN_ZH = set("，。？！：；（）")

# A number, optionally negative: a '-' counts as a sign only when it does not follow a word or number.
_NUM = r"(?:(?<![0-9A-Za-z.])-)?[0-9]+(?:\.[0-9]+)?"


def has_markup(text: str) -> bool:
    return "<|" in text and "|>" in text


def detect_language(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


def normalize(text: str, lang: str | None = None) -> str:
    """Normalise one text for the LLM; lang "zh" or "en" (detected when None)."""
    if has_markup(text) or not text.strip():
        return text
    lang = lang or detect_language(text)
    return _normalize_zh(text) if lang == "zh" else _normalize_en(text)


def split_segments(text: str, tokenizer, lang: str | None = None, token_max_n: int = TOKEN_MAX_N,
                   token_min_n: int = TOKEN_MIN_N, merge_len: int = MERGE_LEN) -> list[str]:
    """Cut text into segments; tokenizer: anything with encode(text) -> ids (en lengths).

    Every segment is at most token_min_n + token_max_n + merge_len long (length as above);
    segments of normal sentences follow the official greedy merge exactly.
    """
    if has_markup(text) or not text.strip():
        return [text]
    lang = lang or detect_language(text)
    terminators = _ZH_TERMINATORS if lang == "zh" else _EN_TERMINATORS
    soft_breaks = _ZH_SOFT_BREAKS if lang == "zh" else _EN_SOFT_BREAKS
    length = len if lang == "zh" else (lambda s: len(tokenizer.encode(s)))

    text = text.strip()
    unquoted = text.rstrip(_CLOSING_QUOTES)
    if not unquoted or unquoted[-1] not in terminators:
        text += "。" if lang == "zh" else "."
    sentences = []
    for sentence in _cut_sentences(text, terminators):
        sentences.extend(_bound_length(sentence, length, token_max_n, soft_breaks, lang))

    segments, current = [], ""
    for sentence in sentences:
        if current and length(current + sentence) > token_max_n and length(current) > token_min_n:
            segments.append(current)
            current = ""
        current += sentence
    if current:
        if segments and length(current) < merge_len:
            segments[-1] += current
        else:
            segments.append(current)
    return segments


def is_only_punctuation(text: str) -> bool:
    """True for text made only of punctuation, symbols and spaces (or empty)."""
    return all(unicodedata.category(c)[0] in "PS" or c.isspace() for c in text)


def prepare_segments(text: str, tokenizer, normalize: bool = True) -> list[str]:
    """The whole front end for one request text: normalise, split, drop punctuation-only parts.

    normalize=False is the reference's `text_frontend=False`: the text is returned whole.
    Text with `<|...|>` markup is returned whole. Raises EmptyTextError when nothing is left
    to speak.
    """
    if not text.strip():
        raise EmptyTextError("the text is empty")
    if has_markup(text) or not normalize:
        return [text]
    stripped = text.strip()
    lang = detect_language(stripped)
    normalised = _normalize_zh(stripped) if lang == "zh" else _normalize_en(stripped)
    segments = [s for s in split_segments(normalised, tokenizer, lang) if not is_only_punctuation(s)]
    if not segments:
        raise EmptyTextError("the text has nothing to speak (only punctuation or symbols)")
    return segments


# ---------------------------------------------------------------------------------- splitting


def _cut_sentences(text: str, terminators: str) -> list[str]:
    """Cut after each run of terminators; a closing quote right after stays with the sentence."""
    sentences, start, i = [], 0, 0
    while i < len(text):
        if text[i] in terminators:
            while i + 1 < len(text) and text[i + 1] in terminators:
                i += 1
            if i + 1 < len(text) and text[i + 1] in _CLOSING_QUOTES:
                i += 1
            if text[start:i + 1].strip():
                sentences.append(text[start:i + 1])
            start = i + 1
        i += 1
    if text[start:].strip():
        sentences.append(text[start:])
    return sentences


def _bound_length(sentence: str, length, limit: int, soft_breaks: str, lang: str) -> list[str]:
    """Cut a sentence longer than limit at soft breaks, then at spaces (en), then anywhere."""
    if length(sentence) <= limit:
        return [sentence]
    pieces = [p for p in re.split(rf"(?<=[{re.escape(soft_breaks)}])", sentence) if p]
    if lang != "zh":
        pieces = [word for piece in pieces for word in re.split(r"(?<=\s)(?=\S)", piece) if word]
    out, current = [], ""
    for piece in pieces:
        if length(piece) > limit:
            if current:
                out.append(current)
                current = ""
            out.extend(_hard_cut(piece, length, limit))
        elif current and length(current + piece) > limit:
            out.append(current)
            current = piece
        else:
            current += piece
    if current:
        out.append(current)
    return out


def _hard_cut(text: str, length, limit: int) -> list[str]:
    """Cut text into consecutive pieces of at most limit, by characters."""
    out, current = [], ""
    for char in text:
        if current and length(current + char) > limit:
            out.append(current)
            current = ""
        current += char
    if current:
        out.append(current)
    return out


# ------------------------------------------------------------------------------ width, spaces


def _to_half_width(text: str, keep: set[str] = frozenset()) -> str:
    """Full-width ASCII variants (U+FF01..U+FF5E, U+3000) to ASCII, except the characters in keep."""
    return "".join(c if c in keep else chr(ord(c) - 0xFEE0) if 0xFF01 <= ord(c) <= 0xFF5E
                   else " " if c == "\u3000" else c for c in text)


def _remove_blanks_zh(text: str) -> str:
    """Keep a space only between two non-space ASCII characters (reference `replace_blank`)."""
    out = []
    for i, c in enumerate(text):
        if c == " ":
            before, after = text[i - 1] if i else " ", text[i + 1] if i + 1 < len(text) else " "
            if before.isascii() and before != " " and after.isascii() and after != " ":
                out.append(c)
        else:
            out.append(c)
    return "".join(out)


# ------------------------------------------------------------------------------------ Chinese

_ZH_DIGITS = "零一二三四五六七八九"
_ZH_GROUP_UNITS = ["", "万", "亿", "万亿"]
_ZH_SYMBOLS = [("&", "和"), ("+", "加"), ("=", "等于"), ("×", "乘"), ("÷", "除以"), ("±", "正负"),
               ("²", "平方"), ("³", "立方")]


def zh_digits(digits: str) -> str:
    """'2025' -> '二零二五'."""
    return "".join(_ZH_DIGITS[int(d)] for d in digits)


def _zh_below_10000(n: int) -> str:
    out, pending_zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit:
            out += ("零" if pending_zero else "") + _ZH_DIGITS[digit] + unit
            pending_zero = False
        elif out:
            pending_zero = True
    return out


def zh_cardinal(n: int) -> str:
    """123 -> '一百二十三', 10050 -> '一万零五十', 15 -> '十五'; digits read one by one beyond 10^16."""
    if n < 0:
        return "负" + zh_cardinal(-n)
    if n == 0:
        return "零"
    if n >= 10 ** 16:
        return zh_digits(str(n))
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out, pending_zero = "", False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            pending_zero = bool(out)
            continue
        if out and (pending_zero or group < 1000):
            out += "零"
        out += _zh_below_10000(group) + _ZH_GROUP_UNITS[index]
        pending_zero = False
    return out[1:] if out.startswith("一十") else out


def zh_number(text: str) -> str:
    """A number as written ('-3.14', '007', '2025') read in Chinese (long digit strings digit by digit)."""
    sign = "负" if text.startswith("-") else ""
    text = text.lstrip("-")
    whole, _, fraction = text.partition(".")
    if len(whole) > 1 and whole.startswith("0") or len(whole) > MAX_CARDINAL_DIGITS:
        spoken = zh_digits(whole)
    else:
        spoken = zh_cardinal(int(whole))
    return sign + spoken + ("点" + zh_digits(fraction) if fraction else "")


def _zh_date(m: re.Match) -> str:
    year, month, day = m.group(1), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f"{zh_digits(year)}年{zh_cardinal(month)}月{zh_cardinal(day)}日"


def _zh_time(m: re.Match) -> str:
    hour, minute, second = int(m.group(1)), int(m.group(2)), m.group(3)
    if hour > 24 or minute > 59 or (second is not None and int(second) > 59):
        return m.group(0)
    spoken = zh_cardinal(hour) + "点"
    if minute or second:
        spoken += ("零" if minute < 10 else "") + zh_cardinal(minute) + "分"
    if second is not None and int(second):
        spoken += zh_cardinal(int(second)) + "秒"
    return spoken


def _normalize_zh(text: str) -> str:
    text = _to_half_width(text, keep=_KEEP_FULL_WIDTH_IN_ZH)
    text = re.sub(r"(?<=[0-9])\s*[~～]\s*(?=-?[0-9])", "到", text)
    text = re.sub(r"(?<![0-9])(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?![0-9])", _zh_date, text)
    text = re.sub(r"(?<![0-9])(\d{4})\s*年", lambda m: zh_digits(m.group(1)) + "年", text)
    text = re.sub(r"(?<![0-9:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![0-9:])", _zh_time, text)
    text = re.sub(rf"({_NUM})\s*%", lambda m: "百分之" + zh_number(m.group(1)), text)
    text = re.sub(rf"({_NUM})\s*(?:°C|℃)", lambda m: zh_number(m.group(1)) + "摄氏度", text)
    text = re.sub(rf"({_NUM})\s*(?:°F|℉)", lambda m: zh_number(m.group(1)) + "华氏度", text)
    text = re.sub(rf"({_NUM})\s*°", lambda m: zh_number(m.group(1)) + "度", text)
    for symbol, unit in (("[¥￥]", "元"), (r"\$", "美元"), ("€", "欧元"), ("£", "英镑")):
        text = re.sub(rf"{symbol}\s*({_NUM})", lambda m, unit=unit: zh_number(m.group(1)) + unit, text)
    text = re.sub(r"(?<![0-9/])(\d+)/(\d+)(?![0-9/])",
                  lambda m: zh_number(m.group(2)) + "分之" + zh_number(m.group(1)), text)
    text = re.sub(r"(?<![0-9])(\d{1,3}(?:,\d{3})+)(?![0-9])", lambda m: m.group(1).replace(",", ""), text)
    text = re.sub(_NUM, lambda m: zh_number(m.group(0)), text)
    for symbol, spoken in _ZH_SYMBOLS:
        text = text.replace(symbol, spoken)
    text = re.sub(r"(?<=[\u4e00-\u9fff])([,?!;:])", lambda m: _to_full_width(m.group(1)), text)

    # The reference's rules after normalisation (section 2.2); " - " is replaced before the
    # blank removal, which would otherwise leave "-" between two Chinese words.
    text = text.replace("\n", "").replace(" - ", "，")
    text = _remove_blanks_zh(text)
    text = text.replace(".", "。")
    for bracket in ("（", "）", "【", "】", "`"):
        text = text.replace(bracket, "")
    text = text.replace("——", " ")
    return re.sub(r"[，,、]+$", "。", text)


def _to_full_width(char: str) -> str:
    return chr(ord(char) + 0xFEE0)


# ------------------------------------------------------------------------------------ English

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_MONTHS = ("January February March April May June July August September October November "
           "December").split()
_YEAR_CONTEXT = r"(?:in|since|year|by|until|till|from|of|during|before|after|around|circa)"
_EN_SYMBOLS = [("&", " and "), ("+", " plus "), ("=", " equals "), ("×", " times "), ("÷", " divided by "),
               ("±", " plus or minus "), ("@", " at ")]
_CURRENCIES = ((r"\$", "dollar", "dollars"), ("€", "euro", "euros"), ("£", "pound", "pounds"),
               ("[¥￥]", "yuan", "yuan"))


def en_cardinal(n: int) -> str:
    """123 -> 'one hundred twenty-three'; digits read one by one from 10^15."""
    if n < 0:
        return "minus " + en_cardinal(-n)
    if n >= 10 ** 15:
        return en_digits(str(n))
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + en_cardinal(n % 100) if n % 100 else "")
    for value, name in _SCALES:
        if n >= value:
            rest = n % value
            return en_cardinal(n // value) + " " + name + (" " + en_cardinal(rest) if rest else "")
    raise AssertionError(n)


def en_digits(digits: str) -> str:
    return " ".join(_ONES[int(d)] for d in digits)


def en_ordinal(n: int) -> str:
    """21 -> 'twenty-first'."""
    words = en_cardinal(n)
    head, last = re.match(r"(.*?)([a-z]+)$", words).groups()
    if last in _ORDINAL_WORDS:
        return head + _ORDINAL_WORDS[last]
    return head + (last[:-1] + "ieth" if last.endswith("y") else last + "th")


def en_year(n: int) -> str:
    """2025 -> 'twenty twenty-five', 1905 -> 'nineteen oh five', 2005 -> 'two thousand five'."""
    century, rest = divmod(n, 100)
    if n % 1000 < 10 and n >= 2000 or n < 1000:
        return en_cardinal(n)
    if rest == 0:
        return en_cardinal(century) + " hundred"
    return en_cardinal(century) + (" oh " + _ONES[rest] if rest < 10 else " " + en_cardinal(rest))


def en_number(text: str) -> str:
    """A number as written ('-3.14', '007', '42') read in English (long digit strings digit by digit)."""
    sign = "minus " if text.startswith("-") else ""
    text = text.lstrip("-")
    whole, _, fraction = text.partition(".")
    if len(whole) > 1 and whole.startswith("0") or len(whole) > MAX_CARDINAL_DIGITS:
        spoken = en_digits(whole)
    else:
        spoken = en_cardinal(int(whole))
    return sign + spoken + (" point " + en_digits(fraction) if fraction else "")


def _en_time(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 24 or minute > 59:
        return m.group(0)
    if minute == 0:
        return en_cardinal(hour) + " o'clock"
    return en_cardinal(hour) + (" oh " + _ONES[minute] if minute < 10 else " " + en_cardinal(minute))


def _en_date(m: re.Match) -> str:
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f"{_MONTHS[month - 1]} {en_ordinal(day)}, {en_year(year)}"


def _en_money(m: re.Match, singular: str, plural: str) -> str:
    whole, _, cents = m.group(1).lstrip("-").partition(".")
    sign = "minus " if m.group(1).startswith("-") else ""
    spoken = sign + en_cardinal(int(whole)) + " " + (singular if int(whole) == 1 else plural)
    if len(cents) == 2 and int(cents):
        spoken += " and " + en_cardinal(int(cents)) + (" cent" if int(cents) == 1 else " cents")
    elif cents and len(cents) != 2:
        return sign + en_number(m.group(1).lstrip("-")) + " " + plural
    return spoken


def _normalize_en(text: str) -> str:
    text = re.sub(r"([，。、！？；：])(?=\S)", r"\1 ", text)
    text = _to_half_width(text).replace("。", ".").replace("、", ",")
    if _LATIN.search(text) is None and re.search(r"[^\W\d_]", text):
        return re.sub(r"\s+", " ", text).strip()  # another script: leave its numbers alone
    text = re.sub(r"(?<![0-9])(\d{1,3}(?:,\d{3})+)(?![0-9])", lambda m: m.group(1).replace(",", ""), text)
    text = re.sub(r"(?<=[0-9])\s*~\s*(?=-?[0-9])", " to ", text)
    text = re.sub(r"~\s*(?=[0-9])", "about ", text)
    text = re.sub(r"#\s*(?=[0-9])", "number ", text)
    text = re.sub(r"(?<![0-9])(\d{4})-(\d{1,2})-(\d{1,2})(?![0-9])", _en_date, text)
    text = re.sub(r"(?<![0-9:])(\d{1,2}):(\d{2})(?![0-9:])", _en_time, text)
    for symbol, singular, plural in _CURRENCIES:
        text = re.sub(rf"{symbol}\s*({_NUM})", lambda m, s=singular, p=plural: _en_money(m, s, p), text)
    text = re.sub(rf"({_NUM})\s*%", lambda m: en_number(m.group(1)) + " percent", text)
    text = re.sub(rf"({_NUM})\s*(?:°C|℃)", lambda m: en_number(m.group(1)) + " degrees Celsius", text)
    text = re.sub(rf"({_NUM})\s*(?:°F|℉)", lambda m: en_number(m.group(1)) + " degrees Fahrenheit", text)
    text = re.sub(rf"({_NUM})\s*°", lambda m: en_number(m.group(1)) + " degrees", text)
    text = re.sub(r"(?<![0-9])(\d+)(?:st|nd|rd|th)\b", lambda m: en_ordinal(int(m.group(1))), text)
    text = re.sub(r"(?<![0-9])(1[1-9]|20)(\d)0s\b",
                  lambda m: re.sub(r"y$", "ies", en_year(int(m.group(1) + m.group(2) + "0"))), text)
    text = re.sub(rf"(?i)(\b{_YEAR_CONTEXT}\s+)(1[1-9]\d\d|20\d\d)(?![0-9])",
                  lambda m: m.group(1) + en_year(int(m.group(2))), text)
    text = re.sub(_NUM, lambda m: en_number(m.group(0)), text)
    for symbol, spoken in _EN_SYMBOLS:
        text = text.replace(symbol, spoken)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r" (?=[,.?!;:])", "", text).strip()
