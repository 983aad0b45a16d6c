"""The registry covers every public layer of mmrep."""

import importlib
import inspect
import pkgutil

import keras

import mmrep
from tests.registry import REGISTRY

# Public base classes that cannot be built on their own: {name: why, and where tested}.
BASE_CLASSES = {
    "SoftAssignmentPooling": "abstract base of NetVLAD, NetRVLAD, SoftBagOfWords and NetFV, "
    "which are registered",
}


def public_layers():
    """Every public class defined in mmrep that is a Keras layer (models included)."""
    found = set()
    for module_info in pkgutil.walk_packages(mmrep.__path__, prefix="mmrep."):
        if any(part.startswith("_") for part in module_info.name.split(".")):
            continue
        module = importlib.import_module(module_info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, keras.layers.Layer)
                and obj.__module__.startswith("mmrep.")
                and not name.startswith("_")
            ):
                found.add(obj)
    return found


def test_discovery_finds_known_layers():
    from mmrep.fusion import ConcatFusion

    assert ConcatFusion in public_layers()


def test_every_public_layer_is_registered():
    registered = {case.layer_cls for case in REGISTRY}
    missing = sorted(
        cls.__qualname__
        for cls in public_layers() - registered
        if cls.__qualname__ not in BASE_CLASSES
    )
    assert not missing, f"public layers missing from tests/registry.py: {missing}"


def test_case_names_are_unique():
    names = [case.name for case in REGISTRY]
    assert len(names) == len(set(names))
