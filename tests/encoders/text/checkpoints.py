"""Tiny BERT tokenizer folders in the real Hugging Face format, written by the tests.

`write_tokenizer(directory, lowercase=...)` writes what a BERT checkpoint folder holds
for its tokenizer: `vocab.txt`, `tokenizer.json` and `tokenizer_config.json` (from
`transformers.BertTokenizer(...).save_pretrained`) and `special_tokens_map.json`.
The vocabulary (about 1,000 tokens) is built deterministically from `VOCABULARY_TEXT`:
the special tokens laid out as in `bert-base-uncased` (`[PAD]` first, `[UNK]`,
`[CLS]`, `[SEP]`, `[MASK]` after some `[unusedN]`), every character of the text as a
word start and as a `##` continuation, the frequent words, and common suffixes, so
that multi-piece words, CJK characters, kana, Hangul and some emoji are in it and
characters absent from the text (Cyrillic, Hebrew, most emoji) give `[UNK]`.
"""

import collections
import json
import os

from tokenizers import normalizers, pre_tokenizers

SPECIAL_LAYOUT = (
    ["[PAD]"]
    + [f"[unused{i}]" for i in range(10)]
    + [
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
)

VOCABULARY_TEXT = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!",
    "Tokenization splits unbelievable words into smaller pieces, and the pieces into ids.",
    "Running, runner, runs, ran; playing, played, player, plays; nation, national.",
    "Internationalization and rationalization are long words with common suffixes.",
    "Café, naïve, résumé, señor, Ångström, façade, jalapeño, Zürich, Øresund, Straße.",
    "Tiếng Việt có dấu. Ελληνικά: Αθήνα, οδός. İstanbul, Kraków, Dvořák, São Paulo.",
    "Hello, world! How's it going? (Fine.) [Yes] {no} <maybe> a/b\\c @user #tag $5 100%",
    "^_^ ~ | `code` a+b=c * & \" ' ; : e.g. don't won't it's U.S.A. 3.14 1,000",
    "« Bonjour » — dit-il… “quoted” ‘single’ ¡Hola! ¿Qué? 「日本」 ・ • · § ¶ † ‰ ′ ″",
    "自然语言处理很有趣。我们喜欢学习中文，也喜欢读书。北京、上海和香港。",
    "日本語のテキストはひらがなとカタカナと漢字です。東京へ行きます！",
    "한국어 텍스트도 처리합니다. 안녕하세요! 감사합니다.",
    "Emoji: 😀 😂 👍 👍🏽 ❤️ 🎉 👨‍👩‍👧 🇫🇷 ✨ 🙂 🔥",
    "Numbers 12345 and 3.14159, dates 2024-01-31, times 12:30, phone +1 (555) 010-9999.",
]

SUFFIXES = ["##ing", "##ed", "##er", "##s", "##ly", "##ation", "##ization", "##able", "##ness"]


def _words(lowercase):
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    splitter = pre_tokenizers.BertPreTokenizer()
    for text in VOCABULARY_TEXT:
        for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)):
            yield word


def build_vocabulary(lowercase=True):
    """The fixture vocabulary (a list of tokens in id order) for a cased or uncased model."""
    counts = collections.Counter(_words(lowercase))
    chars = sorted({c for word in counts for c in word})
    words = sorted(w for w, n in counts.items() if len(w) > 1 and (n > 1 or len(w) > 5))
    stems = sorted({w[:4] for w in words if len(w) > 6 and w.isascii()})
    pieces = sorted(
        {"##" + w[i : i + 3] for w in words if w.isascii() for i in (1, 2, 3) if len(w) > i}
    )
    tokens = [*chars, *("##" + c for c in chars), *words, *stems, *SUFFIXES, *pieces]
    vocabulary = list(SPECIAL_LAYOUT)
    seen = set(vocabulary)
    for token in tokens:
        if token not in seen:
            seen.add(token)
            vocabulary.append(token)
    return vocabulary


def write_tokenizer(directory, *, lowercase=True, model_max_length=512, files=None):
    """Writes a BERT tokenizer folder and returns its vocabulary (a list by id).

    Args:
        directory: str or path. Created if missing.
        lowercase: bool. An uncased (`do_lower_case=True`, accents stripped) or cased
            tokenizer, each with its own vocabulary.
        model_max_length: int. Written to `tokenizer_config.json`, as Hugging Face
            checkpoints do (`512` for BERT).
        files: optional collection of file names to keep (e.g. `{"vocab.txt",
            "tokenizer_config.json"}`, as old checkpoints without `tokenizer.json`).
    """
    from transformers import BertTokenizer

    vocabulary = build_vocabulary(lowercase)
    os.makedirs(directory, exist_ok=True)
    tokenizer = BertTokenizer(
        vocab={token: i for i, token in enumerate(vocabulary)},
        do_lower_case=lowercase,
        model_max_length=model_max_length,
    )
    tokenizer.save_pretrained(str(directory))
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in vocabulary))
    special = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
    if files is not None:
        for name in os.listdir(directory):
            if name not in files:
                os.remove(os.path.join(directory, name))
    return vocabulary
