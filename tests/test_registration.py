"""Registration on import: a `.keras` file of every registered class loads in a fresh
process after a bare `import mmrep` (or the subpackage's import), with no other call."""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import mmrep
from tests.harness import _flat_feed, _numpy_leaves, functional_model, richest_cases
from tests.registry import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Loads every saved model after the given import and compares its outputs; prints one line
# per failure. No mmrep call other than the import.
_LOADER = """
import os, pickle, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
{import_line}
import keras, numpy as np
from keras import tree

failures = []
for path in sys.argv[1:]:
    with open(path + ".pkl", "rb") as f:
        feed, expected, atol = pickle.load(f)
    try:
        model = keras.saving.load_model(path)
        got = [np.asarray(keras.ops.convert_to_numpy(x)) for x in tree.flatten(model(feed))]
        assert len(got) == len(expected), f"{{len(got)}} outputs, expected {{len(expected)}}"
        for a, e in zip(got, expected):
            np.testing.assert_allclose(a.astype("float64"), e.astype("float64"), atol=atol, rtol=atol)
    except Exception as error:
        failures.append(f"{{os.path.basename(path)}}: {{type(error).__name__}}: {{str(error)[:300]}}")
print("FAILURES", len(failures))
for line in failures:
    print(line)
"""


def _save(case, folder):
    inputs, tensors = case.example()
    model = functional_model(case, case.make_layer(), inputs, tensors)
    feed = _flat_feed(inputs, tensors)
    expected = _numpy_leaves(model(feed))
    path = os.path.join(folder, f"{case.name}.keras")
    model.save(path)
    with open(path + ".pkl", "wb") as f:
        pickle.dump((feed, expected, case.atol), f)
    return path


def _load_in_fresh_process(import_line, paths):
    code = textwrap.dedent(_LOADER.format(import_line=import_line))
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout[done.stdout.index("FAILURES") :]
    assert report.startswith("FAILURES 0"), report


def _registered_classes():
    return {
        obj
        for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("mmrep>") and isinstance(obj, type)
    }


# Deserialises every config after a bare `import mmrep`; prints the classes it rebuilt.
_DESERIALIZER = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import mmrep
import keras

for config in json.load(open(sys.argv[1])):
    obj = keras.saving.deserialize_keras_object(config)
    assert obj.get_config() == config["config"], type(obj).__name__
    print("REBUILT", type(obj).__name__)
"""


@pytest.mark.slow  # every registry case in a fresh process
def test_every_registered_class_loads_after_a_bare_import_mmrep(tmp_path):
    cases = [
        case
        for case in richest_cases(REGISTRY, "keras_save").values()
        if "keras_save" not in case.not_applicable
    ]
    saved = {case.layer_cls for case in cases}
    # Classes registered but saved only inside another (BERT's blocks inside BertEncoder).
    nested = {mmrep.encoders.BertEmbedding, mmrep.encoders.BertTransformerBlock}
    layers = {c for c in _registered_classes() if issubclass(c, keras.layers.Layer)}
    unsaved = layers - saved - nested
    assert not unsaved, sorted(c.__name__ for c in unsaved)
    paths = [_save(case, str(tmp_path)) for case in cases]
    _load_in_fresh_process("import mmrep", paths)


def test_a_head_loads_after_importing_only_mmrep_heads(tmp_path):
    # The reported failure: `import mmrep.heads` then `load_model("vae.keras")`.
    inputs = keras.Input((6,))
    outputs = mmrep.heads.VAEHead(latent_dim=2)(inputs)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "vae.keras")
    model.save(path)
    feed = np.random.default_rng(0).standard_normal((3, 6)).astype("float32")
    # The VAE head samples z in training only; in inference its outputs are deterministic.
    with open(path + ".pkl", "wb") as f:
        pickle.dump((feed, _numpy_leaves(model(feed)), 1e-6), f)
    _load_in_fresh_process("import mmrep.heads", [path])


@pytest.mark.slow  # a fresh process
def test_every_registered_loss_and_metric_deserialises_after_a_bare_import_mmrep(tmp_path):
    others = sorted(
        (c for c in _registered_classes() if not issubclass(c, keras.layers.Layer)),
        key=lambda c: c.__name__,
    )
    assert {c.__name__ for c in others} >= {"ClipLoss", "RecallAtK"}
    # Constructor arguments of the classes that need some.
    arguments = {"MedianRank": ("image", "text"), "RecallAtK": ("image", "text")}
    configs = [
        keras.saving.serialize_keras_object(cls(*arguments.get(cls.__name__, ()))) for cls in others
    ]
    path = tmp_path / "configs.json"
    path.write_text(json.dumps(configs))
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-c", _DESERIALIZER, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rebuilt = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("REBUILT")]
    assert rebuilt == [c.__name__ for c in others]


def test_every_subpackage_is_an_attribute_after_import_mmrep():
    code = (
        "import mmrep, types; "
        "print(sorted(n for n in mmrep.__all__ if isinstance(getattr(mmrep, n), types.ModuleType)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = ["data", "encoders", "export", "fusion", "heads", "job", "losses", "metrics"]
    expected += ["preprocessing", "training", "utils"]
    assert done.stdout.split("\n")[-2] == str(expected)
