"""In-graph BERT tokenizer: raw strings to `{"token_ids", "padding_mask", "segment_ids"}`."""

import collections

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from mmrep.encoders.text import bert_text_rules as rules
from mmrep.utils.arguments import check_int

_OUTPUT_KEYS = ("token_ids", "padding_mask", "segment_ids")


@keras.saving.register_keras_serializable(package="mmrep")
class WordPieceTokenizer(keras.layers.Layer):
    """BERT WordPiece tokenization inside the TensorFlow graph, matching Hugging Face.

    Maps raw UTF-8 strings to the BERT input dict at a fixed sequence length, so that
    an exported SavedModel can take text. It redoes Hugging Face's fast `BertTokenizer`
    step by step with TensorFlow and `tensorflow_text` ops: special tokens written in
    the text (such as `[MASK]`, case-sensitive) are matched first; the rest is cleaned
    (control and format characters removed, whitespace made spaces), CJK ideographs
    split off, accents stripped (NFD, nonspacing marks removed), lowercased character
    by character, and split on whitespace and punctuation; each word becomes its
    greedy longest-match wordpieces (`tensorflow_text.FastWordpieceTokenizer`), or
    `unknown_token` when a piece is missing or the word has more than
    `max_input_chars_per_word` characters. Pairs are truncated as Hugging Face's
    `"longest_first"` does. (`tensorflow_text.FastBertTokenizer` differs: it applies
    NFKD and case folding, `"…"` -> `"..."`, and turns control characters into spaces.)

    Known difference, on rare characters only: Hugging Face's control, mark and
    punctuation classes are Unicode 8.0 tables (the `unicode_categories` crate) and
    its lowercase is Rust's, while RE2 and ICU here follow recent Unicode and the
    lowercase table is the running Python's (Unicode 14 in Python 3.11). A code point
    assigned or re-categorised between those versions is a plain letter on one side
    and a mark, punctuation, format character or case pair on the other. Over all
    1,112,064 code points (each between two letters; tokenizers 0.23, TensorFlow
    2.21), 644 normalise or split differently when lowercasing and 149 when cased,
    e.g. U+0898 (a nonspacing mark since Unicode 14), U+2E43 (punctuation since 9.0),
    U+A7CB (a capital since 16.0), U+111C9 (punctuation in 8.0, a mark since). None is
    in Basic Latin, Latin-1, Latin Extended-A/B/Additional, Combining Diacritical
    Marks, Greek, Cyrillic, General Punctuation, CJK, kana, Hangul, fullwidth forms
    or the emoji blocks.

    Truncation cannot warn in a graph: the layer truncates silently, and
    `mmrep.encoders.TextTokenizer` reports it. Serving: the SavedModel uses
    `tensorflow_text` ops, so the serving process must `import tensorflow_text`
    before `tf.saved_model.load` (without it: "Op type not registered
    'RegexSplitWithOffsets'"; TF Serving ships these ops). A fresh process with only
    `import tensorflow as tf; import tensorflow_text` reloads and serves it without
    mmrep.

    Args:
        vocabulary: list of str. The wordpieces, in id order (the lines of BERT's
            `vocab.txt`). Stored in the layer config.
        sequence_length: int. The fixed output length `T`, special tokens included.
            Defaults to `128`.
        lowercase: bool. Whether to lowercase. Defaults to `True`.
        strip_accents: bool or `None`. Whether to strip accents; `None` follows
            `lowercase`, as in BERT. Defaults to `None`.
        tokenize_chinese_chars: bool. Whether CJK ideographs become separate words.
            Defaults to `True`.
        unknown_token, cls_token, sep_token, pad_token: str. Special tokens.
            Default to `"[UNK]"`, `"[CLS]"`, `"[SEP]"`, `"[PAD]"`.
        mask_token: str or `None`. Defaults to `"[MASK]"`.
        extra_special_tokens: list of str. More tokens to match verbatim in the text.
            Every special token must be in `vocabulary`. Defaults to `()`.
        suffix_indicator: str. Prefix of word-continuing pieces. Defaults to `"##"`.
        max_input_chars_per_word: int. Longer words become `unknown_token`.
            Defaults to `100`.
        **kwargs: Base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: a string tensor `[B]` (or `[B, 1]`) of single texts, or for pairs a
            dict `{"text": [B], "text_pair": [B]}` or a tuple `(text, text_pair)`.

    Returns:
        A dict of int32 `[B, sequence_length]` tensors: `"token_ids"`,
        `"padding_mask"` (1 on tokens, `[CLS]`/`[SEP]` included, 0 on padding) and
        `"segment_ids"` (0 for the first text, 1 for the pair, 0 on padding).

    Example:

    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able"]
    >>> tokenizer = WordPieceTokenizer(vocab, sequence_length=6)
    >>> tokenizer(np.array(["Unaffable"]))["token_ids"].numpy().tolist()
    [[2, 5, 6, 7, 3, 0]]

    Reference:
        Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for
        Language Understanding", NAACL 2019. Wu et al., "Google's Neural Machine
        Translation System", 2016 (WordPiece). Song et al., "Fast WordPiece
        Tokenization", EMNLP 2021.
    """

    def __init__(
        self,
        vocabulary,
        sequence_length=128,
        lowercase=True,
        strip_accents=None,
        tokenize_chinese_chars=True,
        unknown_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        extra_special_tokens=(),
        suffix_indicator="##",
        max_input_chars_per_word=100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(vocabulary, str) or not all(
            isinstance(t, str) and t for t in (vocabulary or [None])
        ):
            raise ValueError(
                "Expected `vocabulary` to be a non-empty list of non-empty strings. "
                f"Received: vocabulary={_preview(vocabulary)}"
            )
        vocabulary = list(vocabulary)
        duplicates = [t for t, n in collections.Counter(vocabulary).items() if n > 1]
        if duplicates:
            raise ValueError(
                f"Expected distinct tokens in `vocabulary`. Received repeated: {duplicates[:5]}"
            )
        sequence_length = check_int("sequence_length", sequence_length, minimum=2)
        max_input_chars_per_word = check_int(
            "max_input_chars_per_word", max_input_chars_per_word, minimum=2
        )
        specials = [unknown_token, cls_token, sep_token, pad_token]
        specials += [mask_token] if mask_token is not None else []
        specials += list(extra_special_tokens)
        index = {token: i for i, token in enumerate(vocabulary)}
        missing = [t for t in specials if t not in index]
        if missing:
            raise ValueError(
                f"Expected every special token in `vocabulary` ({len(vocabulary)} tokens). "
                f"Received special tokens not in it: {missing}"
            )
        self.vocabulary = tuple(vocabulary)  # a tuple: Keras would wrap a list
        self.sequence_length = sequence_length
        self.lowercase = bool(lowercase)
        self.strip_accents = None if strip_accents is None else bool(strip_accents)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.unknown_token = unknown_token
        self.cls_token = cls_token
        self.sep_token = sep_token
        self.pad_token = pad_token
        self.mask_token = mask_token
        self.extra_special_tokens = tuple(extra_special_tokens)
        self.suffix_indicator = suffix_indicator
        self.max_input_chars_per_word = max_input_chars_per_word

        self._unk_id, self._cls_id, self._sep_id, self._pad_id = (
            index[t] for t in (unknown_token, cls_token, sep_token, pad_token)
        )
        specials = sorted(set(specials), key=len, reverse=True)  # leftmost-longest match
        self._special_pattern = "|".join(rules.re2_literal(t) for t in specials)
        self._special_tokens = tf.constant(specials)
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocabulary,
            suffix_indicator=suffix_indicator,
            # Hugging Face limits characters, this op bytes: allow every word of up to
            # `max_input_chars_per_word` characters here, and limit characters below.
            max_bytes_per_word=4 * max_input_chars_per_word,
            token_out_type=tf.int32,
            unknown_token=unknown_token,
            no_pretokenization=True,
        )

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def _normalize(self, text):
        text = tf.strings.regex_replace(text, rules.CONTROL, "")
        text = tf.strings.regex_replace(text, rules.WHITESPACE, " ")
        if self.tokenize_chinese_chars:
            text = tf.strings.regex_replace(text, rules.CJK, r" \1 ")
        strip_accents = self.lowercase if self.strip_accents is None else self.strip_accents
        if strip_accents:
            text = tf_text.normalize_utf8(text, "NFD")
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        if self.lowercase:
            keys, values, multi = rules.lowercase_table()
            for code, lower in multi.items():
                text = tf.strings.regex_replace(text, rules.re2_literal(chr(code)), lower)
            chars = tf.strings.unicode_decode(text, "UTF-8")
            codes = chars.flat_values
            slot = tf.minimum(tf.searchsorted(keys, codes), len(keys) - 1)
            mapped = tf.where(tf.gather(keys, slot) == codes, tf.gather(values, slot), codes)
            text = tf.strings.unicode_encode(chars.with_flat_values(mapped), "UTF-8")
        return text

    def _wordpieces(self, text):
        """`[B]` strings to the flat wordpiece ids and the number of them per string.

        Flat index arithmetic rather than nested ragged ops keeps the graph small.
        """
        # `regex_split` stops at a NUL byte; U+0001 is removed by the cleaning just the same.
        text = tf.strings.regex_replace(text, r"\x00", "\x01")
        parts = tf_text.regex_split(text, self._special_pattern, self._special_pattern)
        part = parts.flat_values
        is_special = tf.reduce_any(tf.equal(part[:, None], self._special_tokens[None, :]), 1)
        words = tf_text.regex_split(
            tf.where(is_special, "", self._normalize(part)), rules.SPLIT, rules.PUNCTUATION
        )
        # A special part becomes one word: the token itself, which the vocabulary maps to
        # its id; a word over the length limit becomes the unknown token the same way.
        word = words.flat_values
        word = tf.where(
            tf.strings.length(word, unit="UTF8_CHAR") > self.max_input_chars_per_word,
            self.unknown_token,
            word,
        )
        counts = words.row_lengths() + tf.cast(is_special, tf.int64)
        starts = tf.cumsum(counts, exclusive=True)
        owner = tf.repeat(tf.range(tf.size(counts, tf.int64)), counts)
        offset = tf.range(tf.reduce_sum(counts)) - tf.gather(starts, owner)
        is_word = offset < tf.gather(words.row_lengths(), owner)
        source = tf.gather(words.row_splits, owner) + offset
        source = tf.where(is_word, source, tf.size(word, tf.int64))  # past the end: ""
        word = tf.where(
            is_word, tf.gather(tf.concat([word, [""]], 0), source), tf.gather(part, owner)
        )
        pieces = self._wordpiece.tokenize(word)
        per_text = tf.math.unsorted_segment_sum(
            pieces.row_lengths(),
            tf.gather(parts.value_rowids(), owner),
            tf.shape(text, tf.int64)[0],
        )
        return pieces.flat_values, per_text

    def _as_texts(self, inputs):
        if isinstance(inputs, dict):
            if set(inputs) not in ({"text"}, {"text", "text_pair"}):
                raise ValueError(
                    f"{self.name}: expected a dict with keys 'text' and optionally "
                    f"'text_pair'. Received keys: {sorted(inputs)}"
                )
            texts = [inputs["text"], inputs.get("text_pair")]
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) not in (1, 2):
                raise ValueError(
                    f"{self.name}: expected a tuple (text,) or (text, text_pair). "
                    f"Received a {type(inputs).__name__} of {len(inputs)} entries"
                )
            texts = [*inputs, None][:2]
        else:
            texts = [inputs, None]
        out = []
        for name, text in zip(("text", "text_pair"), texts, strict=True):
            if text is None:
                out.append(None)
                continue
            text = tf.convert_to_tensor(text)
            if text.dtype != tf.string:
                raise TypeError(
                    f"{self.name}: expected a string tensor for {name!r}. "
                    f"Received dtype: {text.dtype.name}"
                )
            if text.shape.rank == 2 and text.shape[1] == 1:
                text = text[:, 0]
            if text.shape.rank != 1:
                raise ValueError(
                    f"{self.name}: expected {name!r} of shape [batch] or [batch, 1]. "
                    f"Received shape: {text.shape}"
                )
            out.append(text)
        if out[1] is not None and self.sequence_length < 3:
            raise ValueError(
                f"{self.name}: a pair needs sequence_length >= 3 for [CLS] a [SEP] b [SEP]. "
                f"Received: sequence_length={self.sequence_length}"
            )
        return out

    def call(self, inputs):
        first, second = self._as_texts(inputs)
        length = self.sequence_length
        position = tf.range(length, dtype=tf.int64)[None, :]

        def dense(ids, counts):
            ragged = tf.RaggedTensor.from_row_lengths(ids, counts, validate=False)
            return ragged.to_tensor(self._pad_id, shape=[None, length]), counts

        def take(ids, start):  # row b, column t: ids[b, t - start[b]] (clipped)
            index = tf.clip_by_value(position - start, 0, length - 1)
            index = tf.broadcast_to(index, tf.shape(ids, tf.int64))
            return tf.gather(ids, index, batch_dims=1)

        first, count1 = dense(*self._wordpieces(first))
        if second is None:
            keep1, keep2 = tf.minimum(count1, length - 2), tf.zeros_like(count1) - 1
        else:
            second, count2 = dense(*self._wordpieces(second))
            keep1, keep2 = _longest_first(count1, count2, length - 3)
        # [CLS] first[:keep1] [SEP] (second[:keep2] [SEP]), keep2 = -1 without a pair.
        keep1, keep2 = keep1[:, None], keep2[:, None]
        end = keep1 + keep2 + 3
        ids = tf.where(position == end - 1, self._sep_id, self._pad_id)
        if second is not None:
            ids = tf.where(position < end - 1, take(second, keep1 + 2), ids)
        ids = tf.where(position == keep1 + 1, self._sep_id, ids)
        ids = tf.where(position <= keep1, take(first, 1), ids)
        ids = tf.where(position == 0, self._cls_id, ids)
        in_text = position < end
        return {
            "token_ids": ids,
            "padding_mask": tf.cast(in_text, "int32"),
            "segment_ids": tf.cast(in_text & (position > keep1 + 1), "int32"),
        }

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["text"]
        elif input_shape and isinstance(input_shape[0], (tuple, list)):
            input_shape = input_shape[0]  # (text, text_pair)
        batch = input_shape[0] if input_shape else None
        return {key: (batch, self.sequence_length) for key in _OUTPUT_KEYS}

    def compute_output_spec(self, inputs):
        shape = tf.nest.map_structure(lambda x: tuple(x.shape), inputs)
        shapes = self.compute_output_shape(shape)
        return {k: keras.KerasTensor(s, dtype="int32") for k, s in shapes.items()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary": list(self.vocabulary),
                "sequence_length": self.sequence_length,
                "lowercase": self.lowercase,
                "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars,
                "unknown_token": self.unknown_token,
                "cls_token": self.cls_token,
                "sep_token": self.sep_token,
                "pad_token": self.pad_token,
                "mask_token": self.mask_token,
                "extra_special_tokens": list(self.extra_special_tokens),
                "suffix_indicator": self.suffix_indicator,
                "max_input_chars_per_word": self.max_input_chars_per_word,
            }
        )
        return config


def _longest_first(n1, n2, budget):
    """Token counts kept by Hugging Face `tokenizers`' "longest_first" pair truncation.

    The shorter text keeps its length when it fits in half the budget and the longer
    one takes the rest; otherwise each gets half, the longer one the odd token (the
    second on a tie). See `truncate_encodings` in tokenizers/src/utils/truncation.rs.
    """
    short = tf.minimum(n1, n2)
    budget = tf.cast(budget, n1.dtype)
    long_kept = tf.where(short > budget, short, tf.maximum(short, budget - short))
    halve = short + long_kept > budget
    short_kept = tf.where(halve, budget // 2, short)
    long_kept = tf.where(halve, budget // 2 + budget % 2, long_kept)
    swapped = n1 > n2
    keep1 = tf.where(swapped, long_kept, short_kept)
    keep2 = tf.where(swapped, short_kept, long_kept)
    fits = n1 + n2 <= budget
    return tf.where(fits, n1, keep1), tf.where(fits, n2, keep2)


def _preview(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
