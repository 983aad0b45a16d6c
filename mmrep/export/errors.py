"""The errors `mmrep.export` raises for what a user got wrong.

Each is a `ServingError` (a `ValueError`), so the `mmrep` command can catch one type and
print its message; those about a missing or existing file are also a
`FileNotFoundError` or `FileExistsError` (and a missing optional package an
`ImportError`), so callers can catch them as such.
"""


class ServingError(ValueError):
    """A model folder, manifest, signature or output that does not fit the request.

    The message names the path or argument, what was expected and what was found.
    """


class ModelNotFoundError(ServingError, FileNotFoundError):
    """No SavedModel where one was named: the path is missing or holds no version."""


class VersionExistsError(ServingError, FileExistsError):
    """The version folder being exported already exists and `overwrite` is off."""


class OutputExistsError(ServingError, FileExistsError):
    """The output file of `embed_manifest` already exists."""


class MissingDependencyError(ServingError, ImportError):
    """An optional package the request needs is not installed; the message says how."""
