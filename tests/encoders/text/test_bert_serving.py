"""Raw text to sentence embeddings: in Python, and from a SavedModel in a fresh process.

The reference is Hugging Face end to end: its tokenizer and `BertModel` on PyTorch, mean
pooled and L2-normalised in float64, on the same checkpoint folder.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
import transformers

from mmrep.encoders import BertEncoder, TextTokenizer
from tests.encoders.text.bert_checkpoints import make_bert, save
from tests.encoders.text.checkpoints import write_tokenizer

LENGTH = 16
TEXTS = [
    "Café naïve résumé, señor!",
    "自然语言处理很有趣。",
    "Emoji: 😀 👍🏽 and a long long sentence that goes on well past sixteen tokens, surely",
    "",
    "Hello, world! How's it going?",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bert-uncased")
    vocabulary = write_tokenizer(directory, lowercase=True)
    model = make_bert(seed=7, vocab_size=len(vocabulary), max_position_embeddings=32)
    save(model, directory)
    return directory, model


def reference_embeddings(directory, model, texts):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    batch = tokenizer(
        texts, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double().numpy()
    mask = batch["attention_mask"].double().numpy()[..., None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def test_python_tokenizer_and_encoder_match_hugging_face(checkpoint):
    directory, model = checkpoint
    tokenizer = TextTokenizer.from_pretrained(directory, sequence_length=LENGTH)
    encoder = BertEncoder.from_pretrained(directory, pooling="mean", normalize=True)
    with pytest.warns(UserWarning, match="truncated"):
        inputs = tokenizer(TEXTS)
    expected = reference_embeddings(directory, model, TEXTS)
    np.testing.assert_allclose(np.asarray(encoder(inputs)), expected, atol=1e-4, rtol=0)


SERVE = """
import json, sys
sys.modules["mmrep"] = None  # any attempt to import mmrep fails
import tensorflow as tf
import tensorflow_text  # registers the tokenizer's ops
model = tf.saved_model.load(sys.argv[1])
texts = json.load(open(sys.argv[2]))
out = model.serve(tf.constant(texts))
modules = sorted(
    m for m, v in sys.modules.items()
    if v is not None and m.split(".")[0] in ("mmrep", "transformers", "torch")
)
json.dump({"embeddings": out.numpy().tolist(), "modules": modules}, open(sys.argv[3], "w"))
"""


@pytest.mark.slow  # fresh-process serving
def test_saved_model_serves_raw_strings_in_a_fresh_process(checkpoint, tmp_path):
    directory, model = checkpoint
    tokenizer = TextTokenizer.from_pretrained(directory, sequence_length=LENGTH)
    encoder = BertEncoder.from_pretrained(directory, pooling="mean", normalize=True)
    text = keras.Input(shape=(), dtype="string", name="text")
    keras.Model(text, encoder(tokenizer.in_graph()(text))).export(tmp_path / "model", verbose=False)
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS))
    (tmp_path / "serve.py").write_text(SERVE)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "serve.py")]
        + [str(tmp_path / n) for n in ("model", "texts.json", "out.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    # (tensorflow_text itself imports Keras, a TensorFlow dependency; mmrep is blocked.)
    assert result["modules"] == [], "the serving process imported " + str(result["modules"])
    expected = reference_embeddings(directory, model, TEXTS)
    np.testing.assert_allclose(np.array(result["embeddings"]), expected, atol=1e-4, rtol=0)
