"""Export for serving: SavedModels in TF Serving's layout, and embedding a manifest with one.

`export_saved_model` writes `path/<version>/` with a named `serving_default` signature,
one `embed_<name>` signature per embedding model and `embed_<name>_bytes` for image ones;
`embed_manifest` runs such a SavedModel over a CSV / JSON Lines manifest and writes the
outputs as .npy, .npz or .parquet (`mmrep embed`). Importing this package is cheap: the
functions import TensorFlow when first used.
"""

from mmrep.export.errors import (
    MissingDependencyError,
    ModelNotFoundError,
    OutputExistsError,
    ServingError,
    VersionExistsError,
)
from mmrep.lazy_exports import lazy_getattr

# Public name -> module inside mmrep.export (imported on first use: they import TensorFlow).
_EXPORTS = {
    "export_saved_model": "saved_model",
    "read_description": "saved_model",
    "embed_manifest": "embed",
    "numeric_versions": "versions",
    "resolve_saved_model": "versions",
}

__all__ = [
    "MissingDependencyError",
    "ModelNotFoundError",
    "OutputExistsError",
    "ServingError",
    "VersionExistsError",
    "embed_manifest",
    "export_saved_model",
    "numeric_versions",
    "read_description",
    "resolve_saved_model",
]

__getattr__ = lazy_getattr(__name__, _EXPORTS)
