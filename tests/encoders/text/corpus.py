"""Test sentences by category: the in-graph tokenizer must give Hugging Face's ids on all.

Escapes spell out the invisible characters. The vocabulary of `checkpoints.py` covers
some of these characters and words and not others, so known pieces, multi-piece
words and `[UNK]` all occur.
"""

LONG_PARAGRAPH = " ".join(
    [
        "Tokenization of internationalization: the quick brown fox jumps over the lazy dog,",
        "naïve café résumés, 自然语言处理, ひらがなとカタカナ, 한국어 텍스트, 👍🏽 🎉 and more!",
    ]
    * 6
)

CORPUS = {
    "accents": [
        "Café naïve résumé señor Ångström façade jalapeño Zürich Øresund",
        "Cafe\u0301 nai\u0308ve re\u0301sume\u0301",  # NFD: combining acute / diaeresis
        "\u212bngstr\u00f6m A\u030angstro\u0308m \u00c5ngstr\u00f6m",  # Å as U+212B, NFD, NFC
        "Tiếng Việt có dấu, Ελληνικά ΑΘΗΝΑ ΟΔΟΣ Σ σ ς, İstanbul ıi",
        "Straße STRASSE ẞ Dvořák Kraków São Paulo ŒUVRE æsir ǅemal",
        "e\u0301\u0301\u0301 \u0301leading x\u0327\u0303 q\u0323\u0307",  # stacked marks
    ],
    "cjk": [
        "自然语言处理很有趣。我们喜欢学习中文，也喜欢读书。",
        "日本語のテキストはひらがなとカタカナと漢字です。東京へ行きます！",
        "한국어 텍스트도 처리합니다. 안녕하세요! 감사합니다.",
        "mixed中文and English東京tokyo한국seoul",
        "\uf900\uf901 \U00020000\U0002a6d6 \U0002b820\U0002b91f \U0002b920 \u3400",  # compat, ext B-F
        "ＦＵＬＬＷＩＤＴＨ １２３ ｶﾀｶﾅ 「日本」『本』【注】〜",
    ],
    "emoji": [
        "Emoji: 😀 😂 👍 👍🏽 ❤️ 🎉 ✨ 🙂 🔥",
        "family 👨\u200d👩\u200d👧 couple 👩\u200d❤\ufe0f\u200d👨 flag 🇫🇷🇯🇵 keycap 1\ufe0f\u20e3",
        "skin 👋🏻👋🏼👋🏽👋🏾👋🏿 new 🥰🫠🪿 text☺️ and☺",
        "😀😀😀word😂 emoji-with-dash 🎉!",
    ],
    "punctuation": [
        "Hello, world! How's it going? (Fine.) [Yes] {no} <maybe> a/b\\c @user #tag $5 100%",
        "^_^ ~ | `code` a+b=c * & \" ' ; : e.g. don't won't U.S.A. 3.14 1,000 -- ...",
        "« Bonjour » — dit-il… “quoted” ‘single’ ¡Hola! ¿Qué? ・ • · § ¶ † ‰ ′ ″",
        "!!!???... ,,, ¿¡ ‹›〈〉⟨⟩ ‐‑‒–—―",
    ],
    "control": [
        "nul\x00byte bell\x07 esc\x1b[31mred\x1b[0m del\x7f",
        "zero\u200bwidth lrm\u200emark bom\ufeffhere soft\u00adhyphen join\u200dnon\u200c",
        "replace\ufffdment private\ue000use \U000f0000plane15 \x85nel \x0bvt\x0cff",
    ],
    "whitespace": [
        "tab\tseparated\tvalues\nnew line\r\nwindows\rmac",
        "nbsp\u00a0here ideographic\u3000space thin\u2009space narrow\u202fnbsp",
        "line\u2028separator para\u2029graph ogham\u1680space em\u2003space",
        "   leading and trailing   ",
        "multiple     spaces\t\t\tand\n\n\nnewlines",
    ],
    "long_words": [
        "a" * 100,  # exactly the limit: wordpieces
        "a" * 101,  # one over: [UNK]
        "é" * 60 + " " + "日" * 120,  # 120 bytes but 60 characters; CJK split per char
        "ab" * 50 + " " + "ab" * 51 + " short",
        "👍🏽" * 50 + " " + "👍🏽" * 51,  # 100 and 102 code points
        "Ca" + "\u0301" * 99 + "fe",  # > 100 characters before accents are stripped
    ],
    "unknown": [
        "Жизнь прекрасна שלום עולם مرحبا",
        "abcЖ xyz qwerty zzz",
        "🦄 🧬 unknown emoji",
        "ᚠᛇᚻ runes and ⠃⠗⠁⠊⠇⠇⠑ braille",
    ],
    "empty": ["", " ", "\t\n", "\x00", "\u200b", "\u0301"],
    "special_tokens": [
        "Paris is the [MASK] of France.",
        "a[SEP]b [CLS][PAD] [UNK]x",
        "[mask] [ MASK ] [MASK [SEP",
        "[unused1] is in the vocabulary but not special",
    ],
    "over_long": [LONG_PARAGRAPH, LONG_PARAGRAPH.upper(), "word " * 300],
}

PAIRS = [
    ("Paris is the [MASK] of France.", "Berlin is the capital of Germany."),
    (CORPUS["accents"][0], CORPUS["cjk"][0]),
    (CORPUS["emoji"][1], CORPUS["punctuation"][2]),
    (LONG_PARAGRAPH, "short"),
    ("short", LONG_PARAGRAPH),
    (LONG_PARAGRAPH, LONG_PARAGRAPH.upper()),
    ("", "only the second"),
    ("only the first", ""),
    ("", ""),
    ("a" * 101, "word " * 40),
]


def all_texts():
    return [text for texts in CORPUS.values() for text in texts]
