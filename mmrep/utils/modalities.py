"""The one modality order of mmrep: image, text, audio, video, then any other names sorted.

Every place that lays modalities side by side uses it: the columns of a presence mask
(`from_manifest`, the main job, export metadata), a fusion layer's default `modalities`,
the order of concatenated features. A manifest with columns `text,image` and a fusion
layer built from a dict `{"text": ..., "image": ...}` therefore agree on which presence
column is which, whatever order the names arrived in.
"""

MODALITY_ORDER = ("image", "text", "audio", "video")


def ordered_modalities(names):
    """`names` in mmrep's modality order: the known modalities first, then the rest sorted.

    Args:
        names: an iterable of distinct str, such as the keys of a `{modality: tensor}` dict.

    Returns:
        list of str.

    Example:

    >>> ordered_modalities(["video", "depth", "text", "image", "accelerometer"])
    ['image', 'text', 'video', 'accelerometer', 'depth']
    """
    names = list(names)
    known = [m for m in MODALITY_ORDER if m in names]
    return known + sorted(m for m in names if m not in MODALITY_ORDER)
