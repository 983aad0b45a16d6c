"""The Hugging Face tokenizer of a checkpoint (a folder or an id), giving BERT's input dict."""

import json
import os
import warnings

import numpy as np
from tokenizers import Tokenizer

from mmrep.encoders.text.wordpiece_tokenizer import WordPieceTokenizer
from mmrep.utils.arguments import check_int, is_int

_ON_TRUNCATION = ("warn", "error", "ignore")
_UNKNOWN_LENGTH = 10**12  # transformers' model_max_length when the folder does not say


class TextTokenizer:
    """Tokenizes text with the fast Hugging Face tokenizer of a checkpoint folder or id.

    A plain Python object (not a layer) for data pipelines: a batch of strings, or of
    string pairs, becomes the int32 arrays `{"token_ids", "padding_mask",
    "segment_ids"}` of shape `[B, sequence_length]` that `BertEncoder` takes, exactly
    Hugging Face's `input_ids`, `attention_mask` and `token_type_ids` with
    `padding="max_length"` and `truncation="longest_first"`. Truncation is reported:
    each call that cuts an input warns (or raises) with the inputs' indices and
    untruncated lengths. A Hugging Face id is first resolved to a folder in the Hugging
    Face cache (`mmrep.encoders.text.hf_hub.resolve_checkpoint`: the tokenizer files and
    `config.json`, downloaded when online and missing); the folder is read with
    `transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)`, so
    its own settings (`do_lower_case` in `tokenizer_config.json`, added tokens) apply.

    `in_graph()` returns the equivalent `WordPieceTokenizer` layer for an exported
    model that takes raw strings; that needs a BERT-style tokenizer (WordPiece model,
    `BertNormalizer`, `BertPreTokenizer`, `[CLS] A [SEP] B [SEP]`) and raises
    `ValueError` naming what differs for any other, such as a BPE `tokenizer.json`,
    which this class still tokenizes in Python.

    Build with `TextTokenizer.from_pretrained(directory, ...)`.

    Attributes:
        hf_tokenizer: the underlying `transformers` tokenizer.
        directory: str. The checkpoint folder (for an id, its snapshot in the cache).
        sequence_length: int. The default output length.
        max_position_embeddings: int or `None`. The longest sequence the checkpoint
            takes (`config.json`, else `model_max_length`; `None` if neither says).
        on_truncation: `"warn"`, `"error"` or `"ignore"`.
        vocabulary_size, vocabulary, cls_token_id, sep_token_id, pad_token_id,
        unk_token_id, mask_token_id, lowercase, strip_accents: read-only properties.

    Example:

    >>> tokenizer = TextTokenizer.from_pretrained("checkpoints/bert-base-uncased")  # doctest: +SKIP
    >>> batch = tokenizer(["a first text", "another"], sequence_length=16)  # doctest: +SKIP
    >>> batch["token_ids"].shape, batch["token_ids"].dtype  # doctest: +SKIP
    ((2, 16), dtype('int32'))
    >>> layer = tokenizer.in_graph()  # the same ids inside a TensorFlow graph  # doctest: +SKIP

    Reference:
        Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for
        Language Understanding", NAACL 2019.
    """

    def __init__(
        self, hf_tokenizer, directory, sequence_length, max_position_embeddings, on_truncation
    ):
        self.hf_tokenizer = hf_tokenizer
        self.directory = directory
        self.max_position_embeddings = max_position_embeddings
        self.on_truncation = _check_on_truncation(on_truncation)
        self.sequence_length = self._check_sequence_length(sequence_length)
        # A copy without truncation or padding counts each input's full length.
        self._counter = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        self._counter.no_truncation()
        self._counter.no_padding()

    @classmethod
    def from_pretrained(cls, directory, sequence_length=128, on_truncation="warn"):
        """Loads the tokenizer of a Hugging Face checkpoint: a local folder or an id.

        Args:
            directory: str or path. A local checkpoint folder or a Hugging Face id (such
                as `"bert-base-uncased"`, optionally `"<id>@<revision>"`) whose files
                include `tokenizer.json`, or `vocab.txt` with `tokenizer_config.json` or
                `config.json` (BERT checkpoints hold these and `special_tokens_map.json`).
            sequence_length: int. The default output length, special tokens
                included; at most `max_position_embeddings` (from the folder's
                `config.json`, else the tokenizer's `model_max_length`).
                Defaults to `128`.
            on_truncation: `"warn"`, `"error"` or `"ignore"`: what a call does when
                an input is longer than the sequence length. Defaults to `"warn"`.

        Returns:
            A `TextTokenizer`.

        Raises:
            FileNotFoundError: neither a folder nor a Hugging Face id that is cached or
                downloadable (the message names the cache searched and how to fill it),
                or a folder without tokenizer files.
            OSError: a download from the Hub that started and failed.
            NotADirectoryError: a file.
            ValueError: a tokenizer transformers cannot load, a slow one, or one without a
                padding token.
        """
        from transformers import AutoTokenizer

        from mmrep.encoders.text.hf_hub import resolve_checkpoint

        directory = resolve_checkpoint(directory, include_weights=False)
        if not os.path.exists(directory):
            raise FileNotFoundError(
                f"Expected `directory` to be a checkpoint folder. No such path: {directory!r}"
            )
        if not os.path.isdir(directory):
            raise NotADirectoryError(
                f"Expected `directory` to be a checkpoint folder. Received a file: {directory!r}"
            )
        found = sorted(os.listdir(directory))
        has_config = {"tokenizer_config.json", "config.json"} & set(found)
        if "tokenizer.json" not in found and not ("vocab.txt" in found and has_config):
            raise FileNotFoundError(
                f"Expected a tokenizer in {directory!r}: tokenizer.json, or vocab.txt with "
                f"tokenizer_config.json or config.json. Found: {found}"
            )
        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except Exception as error:  # transformers raises many types for a bad folder
            raise ValueError(
                f"Could not load the tokenizer in {directory!r} (files: {found}): {error}"
            ) from error
        if not hasattr(hf_tokenizer, "backend_tokenizer"):
            raise ValueError(
                f"Expected a fast (`tokenizers`) tokenizer in {directory!r}. "
                f"Received: {type(hf_tokenizer).__name__}"
            )
        if hf_tokenizer.pad_token_id is None:
            raise ValueError(
                f"Expected the tokenizer in {directory!r} to have a padding token (pad_token "
                "in tokenizer_config.json or special_tokens_map.json). "
                f"Received: pad_token=None (special tokens: {hf_tokenizer.all_special_tokens})"
            )
        return cls(
            hf_tokenizer,
            directory,
            sequence_length,
            _max_position_embeddings(directory, hf_tokenizer),
            on_truncation,
        )

    # === Properties ===

    @property
    def vocabulary_size(self):
        """The number of token ids (the rows the embedding table must have)."""
        return len(self.hf_tokenizer)

    @property
    def vocabulary(self):
        """The tokens, a list indexed by id."""
        by_id = sorted(self.hf_tokenizer.get_vocab().items(), key=lambda item: item[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ValueError(f"The token ids of the tokenizer in {self.directory!r} have gaps")
        return [token for token, _ in by_id]

    cls_token_id = property(lambda self: self.hf_tokenizer.cls_token_id)
    sep_token_id = property(lambda self: self.hf_tokenizer.sep_token_id)
    pad_token_id = property(lambda self: self.hf_tokenizer.pad_token_id)
    unk_token_id = property(lambda self: self.hf_tokenizer.unk_token_id)
    mask_token_id = property(lambda self: self.hf_tokenizer.mask_token_id)

    @property
    def lowercase(self):
        """Whether the text is lowercased (the normaliser's setting)."""
        return self._normalizer_flags()[0]

    @property
    def strip_accents(self):
        """Whether accents are stripped (BERT: the same as `lowercase` unless set)."""
        return self._normalizer_flags()[1]

    def _normalizer_flags(self):
        spec = self._spec()["normalizer"] or {}
        parts = spec.get("normalizers", [spec]) if spec.get("type") == "Sequence" else [spec]
        lowercase = strip = False
        for part in parts:
            if part.get("type") == "BertNormalizer":
                lowercase = bool(part["lowercase"])
                strip = lowercase if part["strip_accents"] is None else bool(part["strip_accents"])
            lowercase |= part.get("type") == "Lowercase"
            strip |= part.get("type") == "StripAccents"
        return lowercase, strip

    def _spec(self):
        return json.loads(self.hf_tokenizer.backend_tokenizer.to_str())

    # === Tokenization ===

    def __call__(self, texts, pairs=None, sequence_length=None):
        """Tokenizes a batch.

        Args:
            texts: a str or a sequence of str (a list, tuple or numpy array).
            pairs: optional sequence of str, one per text: the second segment.
            sequence_length: optional int overriding the default length.

        Returns:
            dict of int32 numpy arrays `[B, sequence_length]`: `"token_ids"`,
            `"padding_mask"` and `"segment_ids"`.
        """
        texts = _as_strings(texts, "texts")
        if pairs is not None:
            pairs = _as_strings(pairs, "pairs")
            if len(pairs) != len(texts):
                raise ValueError(
                    f"Expected `pairs` to have one entry per text ({len(texts)}). "
                    f"Received: {len(pairs)} pairs"
                )
        length = self._check_sequence_length(
            self.sequence_length if sequence_length is None else sequence_length
        )
        if pairs is not None and length < 3:
            raise ValueError(
                "Expected sequence_length >= 3 for pairs ([CLS] a [SEP] b [SEP]). "
                f"Received: sequence_length={length}"
            )
        if not texts:
            return {key: np.zeros((0, length), "int32") for key in _KEYS.values()}
        inputs = texts if pairs is None else list(zip(texts, pairs, strict=True))
        full = [len(encoding.ids) for encoding in self._counter.encode_batch(inputs)]
        self._report_truncation(full, length)
        encoded = self.hf_tokenizer(
            texts,
            text_pair=pairs,
            padding="max_length",
            truncation="longest_first",
            max_length=length,
            return_token_type_ids=True,
            return_attention_mask=True,
            return_tensors="np",
        )
        return {ours: np.asarray(encoded[theirs], "int32") for theirs, ours in _KEYS.items()}

    def _report_truncation(self, lengths, sequence_length):
        cut = [(i, n) for i, n in enumerate(lengths) if n > sequence_length]
        if not cut or self.on_truncation == "ignore":
            return
        listed = ", ".join(f"index {i} ({n} tokens)" for i, n in cut[:10])
        more = f" and {len(cut) - 10} more" if len(cut) > 10 else ""
        message = (
            f"TextTokenizer: {len(cut)} of {len(lengths)} inputs are longer than "
            f"sequence_length={sequence_length} and are truncated: {listed}{more}."
        )
        if self.on_truncation == "error":
            raise ValueError(
                f"{message} Pass a larger sequence_length (at most "
                f"max_position_embeddings={self.max_position_embeddings}) or "
                "on_truncation='warn' or 'ignore'."
            )
        warnings.warn(message, stacklevel=3)

    def _check_sequence_length(self, value):
        value = check_int("sequence_length", value, minimum=2)
        limit = self.max_position_embeddings
        if limit is not None and value > limit:
            raise ValueError(
                f"Expected `sequence_length` <= max_position_embeddings={limit} of the "
                f"checkpoint in {self.directory!r}. Received: sequence_length={value}"
            )
        return value

    # === In-graph layer ===

    def in_graph(self, sequence_length=None, **kwargs):
        """The `WordPieceTokenizer` layer with this tokenizer's vocabulary and settings.

        Args:
            sequence_length: optional int. Defaults to this tokenizer's.
            **kwargs: Base layer keyword arguments, such as `name`.

        Returns:
            A `WordPieceTokenizer` that gives this tokenizer's ids inside a graph.

        Raises:
            ValueError: when the tokenizer is not BERT's WordPiece pipeline.
        """
        length = self._check_sequence_length(
            self.sequence_length if sequence_length is None else sequence_length
        )
        spec = self._spec()
        model, normalizer = spec["model"] or {}, spec["normalizer"] or {}
        differences = []
        for part, value, expected in (
            ("model", model.get("type"), "WordPiece"),
            ("normalizer", normalizer.get("type"), "BertNormalizer"),
            ("pre_tokenizer", (spec["pre_tokenizer"] or {}).get("type"), "BertPreTokenizer"),
        ):
            if value != expected:
                differences.append(f"{part} is {value} (expected {expected})")
        if normalizer.get("type") == "BertNormalizer" and not normalizer["clean_text"]:
            differences.append("BertNormalizer has clean_text=False (expected True)")
        tokens = self.hf_tokenizer
        if not self._has_bert_template():
            differences.append("special tokens are not [CLS] A [SEP] and [CLS] A [SEP] B [SEP]")
        added = [
            t["content"]
            for t in spec["added_tokens"]
            if not t["special"] or t["normalized"] or t["lstrip"] or t["rstrip"] or t["single_word"]
        ]
        if added:
            differences.append(f"added tokens that are not plain special tokens: {added[:3]}")
        named = {tokens.unk_token, tokens.cls_token, tokens.sep_token, tokens.pad_token}
        unmatched = sorted(named - {t["content"] for t in spec["added_tokens"]})
        if unmatched:
            differences.append(f"special tokens {unmatched} are not matched in the text")
        if differences:
            raise ValueError(
                "TextTokenizer.in_graph(): the in-graph WordPieceTokenizer reproduces BERT's "
                f"pipeline only. The tokenizer in {self.directory!r} differs: "
                f"{'; '.join(differences)}. Tokenize in Python with this TextTokenizer, or "
                "export a model that takes token ids."
            )
        lowercase, strip_accents = self._normalizer_flags()
        named.add(tokens.mask_token)
        return WordPieceTokenizer(
            vocabulary=self.vocabulary,
            sequence_length=length,
            lowercase=lowercase,
            strip_accents=strip_accents,
            tokenize_chinese_chars=bool(normalizer["handle_chinese_chars"]),
            unknown_token=model["unk_token"],
            cls_token=tokens.cls_token,
            sep_token=tokens.sep_token,
            pad_token=tokens.pad_token,
            mask_token=tokens.mask_token,
            extra_special_tokens=[
                t["content"] for t in spec["added_tokens"] if t["content"] not in named
            ],
            suffix_indicator=model["continuing_subword_prefix"],
            max_input_chars_per_word=model["max_input_chars_per_word"],
            **kwargs,
        )

    def _has_bert_template(self):
        cls, sep = self.cls_token_id, self.sep_token_id
        if cls is None or sep is None:
            return False
        first, second = "x", "y"
        a = self._counter.encode(first, add_special_tokens=False).ids
        b = self._counter.encode(second, add_special_tokens=False).ids
        single, pair = self._counter.encode(first), self._counter.encode(first, second)
        return (
            single.ids == [cls, *a, sep]
            and single.type_ids == [0] * (len(a) + 2)
            and pair.ids == [cls, *a, sep, *b, sep]
            and pair.type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        )

    def __repr__(self):
        return (
            f"TextTokenizer(directory={self.directory!r}, vocabulary_size="
            f"{self.vocabulary_size}, sequence_length={self.sequence_length}, "
            f"lowercase={self.lowercase})"
        )


_KEYS = {
    "input_ids": "token_ids",
    "attention_mask": "padding_mask",
    "token_type_ids": "segment_ids",
}


def _check_on_truncation(value):
    if value not in _ON_TRUNCATION:
        raise ValueError(
            f"Expected `on_truncation` to be one of {_ON_TRUNCATION}. "
            f"Received: on_truncation={value!r}"
        )
    return value


def _as_strings(values, name):
    if isinstance(values, str):
        return [values]
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(
            f"Expected `{name}` to be a str or a list of str. Received: {type(values).__name__}"
        )
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(
                f"Expected every entry of `{name}` to be a str. "
                f"Received: {name}[{i}] of type {type(value).__name__}"
            )
    return list(values)


def _max_position_embeddings(directory, hf_tokenizer):
    """`max_position_embeddings` from config.json, else the tokenizer's model_max_length."""
    path = os.path.join(directory, "config.json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"Could not read {path!r} as JSON: {error}") from error
        if isinstance(config, dict) and is_int(config.get("max_position_embeddings")):
            return config["max_position_embeddings"]
    length = hf_tokenizer.model_max_length
    return int(length) if length and length < _UNKNOWN_LENGTH else None
