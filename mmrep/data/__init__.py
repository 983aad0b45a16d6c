"""Data: the embedded mmdigits data set, manifests for users' own data, feature caching."""

from mmrep.data.feature_cache import cache_features, load_features, load_features_numpy
from mmrep.data.manifest import ManifestError, from_manifest, undecodable_images
from mmrep.data.mmdigits import MODALITIES, SPLITS, load_mmdigits, split_summary
from mmrep.data.mmdigits_files import export_mmdigits
from mmrep.data.modality_dropout import with_modality_dropout

__all__ = [
    "MODALITIES",
    "SPLITS",
    "ManifestError",
    "cache_features",
    "export_mmdigits",
    "from_manifest",
    "load_features",
    "load_features_numpy",
    "load_mmdigits",
    "split_summary",
    "undecodable_images",
    "with_modality_dropout",
]
