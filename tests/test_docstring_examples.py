"""Every `>>>` example in the public mmrep modules' docstrings runs and prints what it shows.

One test per module that has examples (the test id is the module name), in the style of
sonnet's doctest test: each module's docstrings are found with `doctest.DocTestFinder`
(only objects defined in that module) and run with `np`, `keras`, `tf`, `ops` and the
module's own namespace as globals.
"""

import doctest
import importlib
import io
import pkgutil
import traceback

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import mmrep

# Private modules (a name part starting with "_") and the command-line entry points are not
# part of the documented API.
_EXCLUDED = frozenset({"mmrep.cli", "mmrep.__main__"})
_OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# 49 modules had examples when this test was written; a few may be merged or moved, but
# far fewer means the walk or the finder stopped seeing them.
_MIN_MODULES_WITH_EXAMPLES = 47


def _public_module_names():
    def raise_error(name):
        raise ImportError(f"cannot import package {name} while walking mmrep")

    names = []
    for info in pkgutil.walk_packages(mmrep.__path__, prefix="mmrep.", onerror=raise_error):
        if info.name in _EXCLUDED:
            continue
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def _modules_with_examples():
    """`(name, error)` for every public module with examples, or that failed to import."""
    finder = doctest.DocTestFinder()
    found = []
    for name in _public_module_names():
        try:
            module = importlib.import_module(name)
        except Exception:  # reported by the module's test, not as a collection error
            found.append((name, traceback.format_exc()))
            continue
        if any(test.examples for test in finder.find(module)):
            found.append((name, None))
    return found


_MODULES = _modules_with_examples()


def test_modules_with_examples_are_found():
    found = [name for name, import_error in _MODULES if import_error is None]
    assert len(found) >= _MIN_MODULES_WITH_EXAMPLES, found


@pytest.mark.parametrize(("name", "import_error"), _MODULES, ids=[name for name, _ in _MODULES])
def test_docstring_examples(name, import_error, tmp_path, monkeypatch):
    assert import_error is None, f"cannot import {name}:\n{import_error}"
    # Examples that write files (SavedModels, caches) use relative paths: keep them here.
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    globs = {**vars(module), "np": np, "keras": keras, "tf": tf, "ops": ops}
    tests = [test for test in doctest.DocTestFinder().find(module, globs=globs) if test.examples]
    assert tests

    keras.utils.set_random_seed(0)
    runner = doctest.DocTestRunner(optionflags=_OPTIONFLAGS)
    report = io.StringIO()
    for test in sorted(tests, key=lambda test: test.name):
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} example(s) failed:\n{report.getvalue()}"
