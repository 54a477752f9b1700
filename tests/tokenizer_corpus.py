"""A seeded corpus of texts that stress CLIP's cleaning, word split and BPE: ASCII words and sentences,
contractions, html entities, emoji, CJK, Hangul, kana, right-to-left scripts with bidi marks, combining
marks, control characters and odd whitespace, mojibake, case-mapping edge cases, digits of many scripts,
the special tokens spelt out, and texts thousands of characters long."""
from __future__ import annotations

import random
import unicodedata

WORDS = ("the", "a", "cat", "dog", "red", "blue", "house", "car", "left", "right", "of", "on", "under", "coffee",
         "cup", "handle", "astronaut", "face", "white", "wooden", "table", "spoon", "saucer", "person", "umbrella",
         "giraffe", "zebra", "skateboard", "supercalifragilistic", "antidisestablishmentarianism", "xylophone",
         "naïve", "café", "résumé", "jalapeño", "façade", "Zürich", "smörgåsbord", "œuvre", "æther", "Ångström")
CONTRACTIONS = ("it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S", "Don'T", "it’s", "they‘re",
                "rock'n'roll", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "''s", "o'clock", "y'all'd've", "it'ſ",
                "that'S", "'D", "'LL", "ma'am", "'tis", "'", "''", "`s", "´s", "it＇s")
PUNCTUATION = (".", ",", "!", "?", "...", "…", ";", ":", "-", "--", "—", "–", "(", ")", "[", "]", "{", "}", "\"",
               "“", "”", "«", "»", "„", "‚", "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "+", "=", "~",
               "<", ">", "_", "__init__", "¿", "¡", "§", "¶", "†", "‰", "°", "€", "£", "¥", "©", "®", "™",
               "→", "⇒", "∀", "∑", "√", "∞", "≠", "≤", "♥", "★", "☃", "⌘", "\u00ad", "·", "•")
ENTITIES = ("&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#39;", "&#x27;", "&nbsp;", "&eacute;", "&Eacute;",
            "&amp;amp;", "&amp;lt;", "&amp;#39;", "&amp;amp;amp;", "&#169;", "&copy", "&copy;", "&#x1F600;",
            "&#128512;", "&#0;", "&#x110000;", "&#xD800;", "&unknown;", "&AMP;", "&amp", "&#65", "&#x41;",
            "&hellip;", "&mdash;", "&shy;", "&zwj;", "&lrm;", "&rlm;", "&#8217;", "&rsquo;", "&ldquo;", "&notin;",
            "&not", "&notit;", "&#128;", "&#x80;", "&#150;", "&amp;quot;", "&amp;nbsp;", "&lt;start_of_text&gt;")
EMOJI = ("😀", "😂", "👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🧑🏿‍🚀", "🏳️‍🌈", "🏳️‍⚧️", "🇯🇵", "🇺🇸", "🇩🇪🇫🇷",
         "🇦", "❤️", "❤", "♥️", "1️⃣", "#️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🐈", "🐈‍⬛", "🫠", "🪿", "☺︎", "✌🏻", "🤌", "👁️‍🗨️")
CJK = ("猫", "中文字符", "漢字", "汉字", "图像分割", "红色的汽车", "𠀀", "𪚥", "龘", "〇", "々", "㊗", "㍿", "⺀",
       "一二三", "百度", "北京市")
HANGUL = ("고양이", "한국어", "빨간 자동차", "\u1100\u1161\u11a8", "ㄱㄴㄷ", "ﾡ", "힣")
KANA = ("ねこ", "カタカナ", "ひらがな", "ｶﾀｶﾅ", "ﾊﾟﾝ", "ガ", "カ\u3099", "ー", "ゝゞ", "ヿ", "ｧ", "赤い車", "東京タワー")
RTL = ("قطة", "العربية", "سيارة حمراء", "חתול", "עברית", "מכונית אדומה", "\u200fقطة\u200f", "\u200eחתול\u200e",
       "\u202bعربي\u202c", "\u2067עברית\u2069", "\u2066x\u2069", "\u061c", "ﻻ", "ﷺ", "٪", "؟", "،", "ـ",
       "مَدْرَسَة", "שָׁלוֹם")
COMBINING = ("é", "e\u0301", "ñ", "n\u0303", "Å", "A\u030a", "ṩ", "s\u0323\u0307", "Việt", "Vie\u0323\u0302t",
             "ﬁ", "ﬂower", "z\u0351\u0307\u0314a\u0310\u0346l\u0357g\u0334o", "\u0301", "a\u20dd", "x\u0332",
             "ǅ", "ǈ", "Ǳ", "ǲ", "ǳ", "\u0345", "\u034f", "q\u0307\u0323", "க்ஷ", "नमस्ते", "ภาษาไทย", "ສ", "ᄀ")
CASES = ("İstanbul", "ISTANBUL", "ıi", "İ", "I\u0307", "straße", "STRASSE", "ẞ", "ß", "ſ", "ſt", "ﬅ", "K",
         "Å", "Ω", "ΣΊΣΥΦΟΣ", "ΟΔΥΣΣΕΥΣ", "σς", "ς", "ΐ", "ǰ", "ŉ", "ﬀ", "ᾼ", "ᾳ", "Ⅻ", "ⅻ", "Ⓐ",
         "ⓐ", "𝐀𝐁𝐂", "𝔘𝔫𝔦", "Ａｂｃ", "ＡＢＣ", "ｘｙｚ", "ÇA", "ǄUNGLA", "Ꭰ", "ꭰ", "Ⴀ", "ⴀ", "Ა", "ა", "ꟲ", "ꞵ",
         "<start_of_text>", "<end_of_text>", "<START_OF_TEXT>", "<End_Of_Text>", "<ſtart_of_text>",
         "<start_of_text", "start_of_text>", "x<end_of_text>y", "!<start_of_text>", "<start_of_text><end_of_text>")
DIGITS = ("0", "7", "42", "2024", "3.14", "1,000", "-5", "+1", "1e10", "0x1F", "٠١٢٣٤", "۰۱۲۳", "०१२३", "১২৩",
          "๑๒๓", "໑໒", "༡༢", "၁၂", "១២", "᠑᠒", "１２３", "²³", "¹", "₁₂", "½", "⅓", "¾", "①②", "⑴", "⒈", "Ⅻ", "ⅰⅱ",
          "〇一", "𝟎𝟏𝟐", "🄀", "🔟", "߁߂", "꘠꘡", "𑁦", "፩፪", "𒐀", "𐄇", "₀", "٫", "٬")
CONTROLS = tuple(chr(c) for c in range(0x20)) + ("\x7f", "\x80", "\x85", "\x9f", "\u00a0", "\u1680", "\u180e",
                                                "\u2000", "\u2003", "\u2007", "\u2009", "\u200a", "\u200b",
                                                "\u200c", "\u200d", "\u2028", "\u2029", "\u202f", "\u205f",
                                                "\u2060", "\u3000", "\ufeff", "\ufe0f", "\ufe0e", "\ufffd",
                                                "\ufff9", "\uffff", "\ufffe", "\ue000", "\U000f0000", "\U000e0001",
                                                "\u034f", "\u115f", "\u3164", "\uffa0", "\u2800", "\r\n", "\t\t",
                                                "\x1b[31m", "\x1b[0m", "\x1c\x1d\x1e\x1f")
SPACES = (" ", " ", " ", "", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x85", "\x1f", "\u200b",
          "\u2009", "\x0b", "\x0c", "\x1c")
MOJIBAKE = ("cafÃ©", "Ã¼ber", "â€™", "donâ€™t", "â€œquotedâ€\x9d", "naÃ¯ve", "Ã\xa0 la", "ZÃ¼rich", "Ã©tÃ©",
            "æ—¥æœ¬èªž", "ðŸ˜€", "ÐŸÑ€Ð¸Ð²ÐµÑ‚", "Ã¢â‚¬â„¢", "Ã¢â‚¬Å“", "Ã‰", "sÃ£o paulo", "â€”", "Ã±",
            "\u00c3\u00a9", "ÃƒÂ©", "Ã¥", "Â£5", "Â ", "Ã\x81", "Ã¶Ã¤Ã¼", "Ä\x9f", "Å\x9f", "Ä±", "Ä°")
KINDS = {"ascii": 6, "contraction": 3, "punct": 3, "entity": 3, "emoji": 2, "cjk": 2, "hangul": 1, "kana": 1,
         "rtl": 2, "combining": 2, "case": 3, "digits": 2, "control": 2, "mojibake": 2, "random": 2}
POOLS = {"contraction": CONTRACTIONS, "punct": PUNCTUATION, "entity": ENTITIES, "emoji": EMOJI, "cjk": CJK,
         "hangul": HANGUL, "kana": KANA, "rtl": RTL, "combining": COMBINING, "case": CASES, "digits": DIGITS,
         "control": CONTROLS, "mojibake": MOJIBAKE}
# Random code points from these blocks (surrogates left out: a str that holds one cannot be encoded as UTF-8).
BLOCKS = ((0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0xDFF),
          (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x4FFF),
          (0xAC00, 0xAD00), (0xFB00, 0xFFFF), (0x1D400, 0x1D7FF), (0x1F000, 0x1FAFF), (0xE0000, 0xE007F))


def _mojibake(rng: random.Random, text: str) -> str:
    """`text` as UTF-8 read as cp1252 or Latin-1, once or twice: what ftfy undoes."""
    for _ in range(rng.choice((1, 1, 2))):
        raw = text.encode("utf-8")
        try:
            text = raw.decode(rng.choice(("cp1252", "latin-1")))
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    return text


def _piece(rng: random.Random, kind: str) -> str:
    if kind == "ascii":
        word = rng.choice(WORDS)
        return rng.choice((word, word.upper(), word.title(), word.capitalize()))
    if kind == "random":
        lo, hi = rng.choice(BLOCKS)
        return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6)))
    if kind == "mojibake" and rng.random() < 0.5:
        return _mojibake(rng, rng.choice(WORDS + CJK + EMOJI + RTL + CONTRACTIONS))
    piece = rng.choice(POOLS[kind])
    if kind == "combining" and rng.random() < 0.3:
        piece = unicodedata.normalize(rng.choice(("NFC", "NFD", "NFKC", "NFKD")), piece)
    return piece


def _text(rng: random.Random, n_pieces: int) -> str:
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=n_pieces)
    out = []
    for kind in kinds:
        out.append(_piece(rng, kind))
        out.append(rng.choice(SPACES))
    return "".join(out[:-1])


def _ascii(rng: random.Random) -> str:
    """Printable ASCII, '&' now and then: the texts the tokenizer cleans without ftfy."""
    return "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(1, 60)))


def corpus(n: int = 20_000, seed: int = 0) -> list[str]:
    """`n` texts (and ten fixed ones), the same for the same seed: mostly 1 to 12 pieces, some a single piece
    alone, some random printable ASCII, 1 in 200 thousands of characters long."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.005:
            texts.append(_text(rng, rng.randint(300, 1200)))
        elif roll < 0.05:
            texts.append(_ascii(rng))
        elif roll < 0.15:
            texts.append(_piece(rng, rng.choice(list(KINDS))))
        else:
            texts.append(_text(rng, rng.randint(1, 12)))
    texts += ["", " ", "\n", "\x00", "&amp;", "a" * 1000, "猫" * 1000, "ab" * 2000, "🐈" * 300, "the cat " * 700]
    return texts
