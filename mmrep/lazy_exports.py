"""Lazy public names for a package: import the defining module on first use.

`mmrep.heads` and `mmrep.training` name many classes whose modules pull in TensorFlow,
Keras layers or each other; importing them on first use keeps `import mmrep.heads` cheap
and lets recipes import one name without loading every head.
"""

import importlib


def lazy_getattr(package, exports):
    """A module-level `__getattr__` that imports `exports[name]` inside `package` on use.

    Args:
        package: str. The package's `__name__`.
        exports: dict `{public name: module name inside the package}`.

    Returns:
        A function to assign to the package's `__getattr__` (PEP 562).
    """

    def __getattr__(name):
        if name in exports:
            module = importlib.import_module(f"{package}.{exports[name]}")
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
