"""TextTokenizer: Hugging Face's ids for every folder layout, reported truncation, errors.

The reference is `transformers.AutoTokenizer` on the complete folder, called with the
contract's arguments (`padding="max_length"`, `truncation="longest_first"`).
"""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

from mmrep.encoders.text.tokenizer import TextTokenizer
from mmrep.encoders.text.wordpiece_tokenizer import WordPieceTokenizer
from tests.encoders.text.checkpoints import VOCABULARY_TEXT, write_tokenizer
from tests.encoders.text.corpus import LONG_PARAGRAPH, PAIRS, all_texts

KEYS = {"token_ids": "input_ids", "padding_mask": "attention_mask", "segment_ids": "token_type_ids"}


@pytest.fixture(scope="module")
def uncased(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("uncased"))
    return directory, write_tokenizer(directory, lowercase=True)


@pytest.fixture(scope="module")
def cased(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("cased"))
    return directory, write_tokenizer(directory, lowercase=False)


def reference(directory, texts, pairs=None, length=32):
    hf = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    encoded = hf(
        texts,
        text_pair=pairs,
        padding="max_length",
        truncation="longest_first",
        max_length=length,
        return_token_type_ids=True,
        return_attention_mask=True,
        return_tensors="np",
    )
    return {ours: encoded[theirs] for ours, theirs in KEYS.items()}


def assert_outputs(actual, expected):
    assert sorted(actual) == sorted(KEYS)
    for key, want in expected.items():
        assert actual[key].dtype == np.int32, f"{key}: dtype {actual[key].dtype}"
        np.testing.assert_array_equal(actual[key], want, err_msg=key)


def copy_folder(source, target, names):
    os.makedirs(target)
    for name in names:
        shutil.copy(os.path.join(source, name), target)
    return str(target)


@pytest.mark.parametrize(
    "layout",
    [
        ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"],
        ["tokenizer.json", "tokenizer_config.json"],
        ["vocab.txt", "tokenizer_config.json"],
    ],
    ids=["complete", "tokenizer_json", "vocab_txt"],
)
@pytest.mark.parametrize("casing", ["uncased", "cased"])
def test_every_folder_layout_gives_hugging_face_ids(request, tmp_path, casing, layout):
    full, _ = request.getfixturevalue(casing)
    folder = copy_folder(full, tmp_path / "folder", layout)
    tokenizer = TextTokenizer.from_pretrained(folder, sequence_length=32, on_truncation="ignore")
    texts = all_texts()
    assert_outputs(tokenizer(texts), reference(full, texts))
    first, second = (list(side) for side in zip(*PAIRS, strict=True))
    assert_outputs(tokenizer(first, second, sequence_length=20), reference(full, first, second, 20))


def test_vocab_txt_with_config_json_only(uncased, tmp_path):
    full, _ = uncased
    folder = copy_folder(full, tmp_path / "folder", ["vocab.txt"])
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "bert", "max_position_embeddings": 40}, f)
    tokenizer = TextTokenizer.from_pretrained(folder, sequence_length=40)
    texts = ["Café [MASK] 東京", "👍🏽 naïve"]
    assert_outputs(tokenizer(texts), reference(full, texts, length=40))
    assert tokenizer.max_position_embeddings == 40


def test_a_single_string_is_a_batch_of_one(uncased):
    tokenizer = TextTokenizer.from_pretrained(uncased[0], sequence_length=8)
    out = tokenizer("Café")
    assert out["token_ids"].shape == (1, 8)
    assert_outputs(
        tokenizer(np.array(["Café", "x"])), reference(uncased[0], ["Café", "x"], length=8)
    )
    empty = tokenizer([])
    assert {k: v.shape for k, v in empty.items()} == {k: (0, 8) for k in KEYS}


def test_truncation_is_reported_with_indices_and_lengths(uncased):
    directory, _ = uncased
    texts = ["short", LONG_PARAGRAPH, "also short", "word " * 20]
    hf = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    full = [len(ids) for ids in hf(texts)["input_ids"]]
    tokenizer = TextTokenizer.from_pretrained(directory, sequence_length=16)
    with pytest.warns(UserWarning) as record:
        out = tokenizer(texts)
    message = str(record[0].message)
    assert "2 of 4 inputs are longer than sequence_length=16" in message
    assert f"index 1 ({full[1]} tokens), index 3 ({full[3]} tokens)" in message
    assert_outputs(out, reference(directory, texts, length=16))

    strict = TextTokenizer.from_pretrained(directory, sequence_length=16, on_truncation="error")
    with pytest.raises(ValueError, match=r"index 1 .* max_position_embeddings=512"):
        strict(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict(texts[:1])  # fits: no report
        silent = TextTokenizer.from_pretrained(directory, 16, on_truncation="ignore")
        assert_outputs(silent(texts), reference(directory, texts, length=16))


def test_pair_truncation_counts_both_segments(uncased):
    directory, _ = uncased
    tokenizer = TextTokenizer.from_pretrained(directory, sequence_length=12)
    hf = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    first, second = ["a b c d", "a b"], ["e f g h", "c"]
    full = [len(ids) for ids in hf(first, second)["input_ids"]]
    assert full == [11, 6]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenizer(first, second)
    with pytest.warns(UserWarning, match=r"1 of 2 inputs .* index 0 \(11 tokens\)"):
        out = tokenizer(first, second, sequence_length=10)
    assert_outputs(out, reference(directory, first, second, 10))


def test_sequence_length_is_limited_by_max_position_embeddings(uncased, tmp_path):
    full, _ = uncased
    with pytest.raises(ValueError, match=r"max_position_embeddings=512 .* sequence_length=513"):
        TextTokenizer.from_pretrained(full, sequence_length=513)  # model_max_length
    folder = copy_folder(full, tmp_path / "folder", ["tokenizer.json", "tokenizer_config.json"])
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "bert", "max_position_embeddings": 64}, f)
    with pytest.raises(ValueError, match=r"max_position_embeddings=64 .* sequence_length=65"):
        TextTokenizer.from_pretrained(folder, sequence_length=65)
    tokenizer = TextTokenizer.from_pretrained(folder, sequence_length=64)
    with pytest.raises(ValueError, match=r"max_position_embeddings=64 .* sequence_length=100"):
        tokenizer(["x"], sequence_length=100)
    with pytest.raises(ValueError, match=r"max_position_embeddings=64 .* sequence_length=65"):
        tokenizer.in_graph(sequence_length=65)


def test_missing_or_wrong_folders_name_what_was_expected_and_found(uncased, tmp_path):
    full, _ = uncased
    with pytest.raises(FileNotFoundError, match=r"No such path: '.*nowhere'"):
        TextTokenizer.from_pretrained(tmp_path / "nowhere")
    vocab = os.path.join(full, "vocab.txt")
    with pytest.raises(NotADirectoryError, match=r"Received a file: '.*vocab\.txt'"):
        TextTokenizer.from_pretrained(vocab)
    for i, names in enumerate(([], ["config.json"], ["vocab.txt"])):
        folder = tmp_path / f"incomplete_{i}"
        os.makedirs(folder)
        for name in names:
            (folder / name).write_text("[PAD]\n" if name == "vocab.txt" else "{}")
        with pytest.raises(FileNotFoundError) as error:
            TextTokenizer.from_pretrained(folder)
        assert "tokenizer.json, or vocab.txt with tokenizer_config.json or config.json" in str(
            error.value
        )
        assert f"Found: {sorted(names)}" in str(error.value)
    # tokenizer.json alone has no pad token for transformers (no tokenizer_config.json).
    alone = copy_folder(full, tmp_path / "alone", ["tokenizer.json"])
    with pytest.raises(ValueError, match=r"padding token .* Received: pad_token=None"):
        TextTokenizer.from_pretrained(alone)
    broken = copy_folder(full, tmp_path / "broken", ["tokenizer_config.json"])
    with open(os.path.join(broken, "tokenizer.json"), "w") as f:
        f.write('{"version": "1.0", "model": ')
    with pytest.raises(ValueError, match=r"Could not load the tokenizer in .*broken"):
        TextTokenizer.from_pretrained(broken)


def test_properties(uncased, cased, tmp_path):
    for (directory, vocabulary), lowercase in ((uncased, True), (cased, False)):
        tokenizer = TextTokenizer.from_pretrained(directory)
        assert tokenizer.vocabulary_size == len(vocabulary)
        assert tokenizer.vocabulary == vocabulary
        for name in ("cls", "sep", "pad", "unk", "mask"):
            token = f"[{name.upper()}]"
            assert getattr(tokenizer, f"{name}_token_id") == vocabulary.index(token), name
        assert (tokenizer.lowercase, tokenizer.strip_accents) == (lowercase, lowercase)
        assert tokenizer.sequence_length == 128
    # tokenizer_config.json decides over tokenizer.json, as in transformers.
    folder = copy_folder(uncased[0], tmp_path / "override", ["tokenizer.json"])
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": False}, f)
    tokenizer = TextTokenizer.from_pretrained(folder, sequence_length=16)
    assert tokenizer.lowercase is False
    texts = ["Café Straße", "HELLO"]
    np.testing.assert_array_equal(
        tokenizer.in_graph()(np.array(texts))["token_ids"], tokenizer(texts)["token_ids"]
    )


@pytest.mark.parametrize("casing", ["uncased", "cased"])
def test_in_graph_layer_gives_the_same_ids(request, casing):
    directory, _ = request.getfixturevalue(casing)
    tokenizer = TextTokenizer.from_pretrained(directory, 24, on_truncation="ignore")
    layer = tokenizer.in_graph(name="tokenize")
    assert isinstance(layer, WordPieceTokenizer) and layer.name == "tokenize"
    assert layer.vocabulary_size == tokenizer.vocabulary_size
    assert layer.lowercase == (casing == "uncased")
    texts = all_texts()
    expected = tokenizer(texts)
    actual = layer(np.array(texts))
    for key in KEYS:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_bpe_tokenizer_works_in_python_but_not_in_graph(tmp_path):
    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    backend.train_from_iterator(VOCABULARY_TEXT, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    backend.save(str(tmp_path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]"}
    config.update(cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))

    tokenizer = TextTokenizer.from_pretrained(tmp_path, sequence_length=16)
    texts, pairs = ["the quick brown fox", "naïve café"], ["jumps", ""]
    assert_outputs(tokenizer(texts, pairs), reference(str(tmp_path), texts, pairs, 16))
    with pytest.raises(ValueError, match=r"model is BPE \(expected WordPiece\).*pre_tokenizer is"):
        tokenizer.in_graph()


def test_bad_call_arguments_are_named(uncased):
    tokenizer = TextTokenizer.from_pretrained(uncased[0], sequence_length=8)
    with pytest.raises(TypeError, match=r"texts\[1\] of type int"):
        tokenizer(["a", 3])
    with pytest.raises(TypeError, match=r"a str or a list of str\. Received: dict"):
        tokenizer({"text": "a"})
    with pytest.raises(ValueError, match=r"one entry per text \(2\). Received: 1 pairs"):
        tokenizer(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="sequence_length=1"):
        tokenizer(["a"], sequence_length=1)
    with pytest.raises(ValueError, match=r"sequence_length >= 3 for pairs.*sequence_length=2"):
        tokenizer(["a"], ["b"], sequence_length=2)
    with pytest.raises(ValueError, match=r"on_truncation.*Received: on_truncation='loud'"):
        TextTokenizer.from_pretrained(uncased[0], on_truncation="loud")


def test_in_graph_matches_added_special_tokens(uncased, tmp_path):
    hf = AutoTokenizer.from_pretrained(uncased[0], local_files_only=True)
    hf.add_special_tokens({"additional_special_tokens": ["[E1]", "[/E1]"]})
    hf.save_pretrained(str(tmp_path))
    tokenizer = TextTokenizer.from_pretrained(tmp_path, sequence_length=24)
    layer = tokenizer.in_graph()
    assert layer.extra_special_tokens == ("[E1]", "[/E1]")
    assert layer.vocabulary_size == tokenizer.vocabulary_size == len(uncased[1]) + 2
    texts = ["the [E1]fox[/E1] runs [MASK]", "[e1] is not special", "[E1"]
    expected = reference(str(tmp_path), texts, length=24)
    assert_outputs(tokenizer(texts), expected)
    actual = layer(np.array(texts))
    for key in KEYS:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
