"""BERT's text normalisation and pre-tokenisation rules as RE2 patterns and tables.

What `WordPieceTokenizer` needs to reproduce Hugging Face's `BertNormalizer` and
`BertPreTokenizer` inside the TensorFlow graph: the character classes it removes, turns
into spaces, isolates (CJK) or splits on (punctuation), and the per-character lowercase
mapping.
"""

import functools

import numpy as np

# The character classes of Hugging Face's `BertNormalizer` and `BertPreTokenizer`
# (tokenizers/src/normalizers/bert.rs, pre_tokenizers/bert.rs), as RE2 classes.
# Removed by `clean_text`: NUL, U+FFFD and "other" characters except \t \n \r.
CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\p{Co}\x{FFFD}]"
# Rust's `char::is_whitespace` (the White_Space property) once the controls are gone.
WHITESPACE = r"[\t\n\r\p{Zs}\x{2028}\x{2029}]"
# Hugging Face's "Chinese character" ranges, copied as they are: 0x2B920 (not BERT's
# 0x2B820) starts the sixth range, so U+2B820..U+2B91F are not split off by either.
CJK = (
    r"([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])"
)
PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"
SPLIT = r"[\t\n\r\p{Zs}\x{2028}\x{2029}]+|" + PUNCTUATION


@functools.cache
def lowercase_table():
    """Per-character lowercase (Rust's `char::to_lowercase`, no final-sigma rule).

    ICU's `tf.strings.lower` lowercases a word-final Σ to ς, Hugging Face to σ, so the
    mapping is a table of code points. Returns the sorted single-code-point mappings
    and the multi-code-point ones (only U+0130 İ -> "i̇").
    """
    single, multi = {}, {}
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        lower = chr(code).lower()
        if lower != chr(code):
            if len(lower) == 1:
                single[code] = ord(lower)
            else:
                multi[code] = lower
    keys = np.array(sorted(single), "int32")
    return keys, np.array([single[k] for k in keys], "int32"), multi


def re2_literal(text):
    """`text` as an RE2 literal: ASCII letters and digits as they are, the rest escaped."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):X}}}" for c in text)
