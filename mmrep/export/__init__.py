"""Export for serving: SavedModels in TF Serving's layout, and embedding a manifest with one.

`export_saved_model` writes `path/<version>/` with a named `serving_default` signature,
one `embed_<name>` signature per embedding model and `embed_<name>_bytes` for image ones;
`embed_manifest` runs such a SavedModel over a CSV / JSON Lines manifest and writes the
outputs as .npy, .npz or .parquet (`mmrep embed`).
"""

from mmrep.export.embed import embed_manifest
from mmrep.export.errors import (
    MissingDependencyError,
    ModelNotFoundError,
    OutputExistsError,
    ServingError,
    VersionExistsError,
)
from mmrep.export.saved_model import export_saved_model, read_description
from mmrep.export.versions import numeric_versions, resolve_saved_model

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
