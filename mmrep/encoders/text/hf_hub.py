"""Checkpoint names to local folders: a folder as is, a Hugging Face id through the Hub cache.

`resolve_checkpoint` is the first step of `BertEncoder.from_pretrained` and
`TextTokenizer.from_pretrained`. A path that exists is returned unchanged. Any other string
that is a valid Hugging Face repo id (`"bert-base-uncased"`,
`"sentence-transformers/all-MiniLM-L6-v2"`, optionally `"<id>@<revision>"` with a branch, tag
or commit hash) is resolved with `huggingface_hub.snapshot_download` in the standard Hugging
Face cache, `<cache>/models--<owner>--<name>/snapshots/<commit>/`: online it downloads the
files the loaders read and no others (no ONNX or other frameworks' weights, and no pickle
unless the caller allows one); offline (`HF_HUB_OFFLINE=1`), or when the Hub cannot be
reached, it reads the cache.

The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; the Hub is
`$HF_ENDPOINT`, else huggingface.co. These variables are read at each call (huggingface_hub
reads them once, when it is imported), and the cache and endpoint are passed to it
explicitly. A name that cannot be resolved raises `FileNotFoundError` naming the id, the
cache folder searched and how to fill it; no huggingface_hub exception leaves this module.
"""

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("mmrep")

CONFIG_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "model-*.safetensors")
PICKLE_FILES = ("pytorch_model.bin",)
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
_TRUE = ("1", "ON", "YES", "TRUE")  # huggingface_hub's truthy environment values


def hf_cache_dir():
    """The Hugging Face Hub cache folder, from the environment as it is now.

    `$HF_HUB_CACHE`, else the legacy `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
    `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`: the order
    `huggingface_hub.constants` follows at import time.

    Returns:
        `(Path, str)`: the folder (which may not exist) and where it came from, in words.
    """
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        folder, source = env["HF_HUB_CACHE"], "HF_HUB_CACHE environment variable"
    elif env.get("HUGGINGFACE_HUB_CACHE"):
        folder, source = env["HUGGINGFACE_HUB_CACHE"], "HUGGINGFACE_HUB_CACHE environment variable"
    elif env.get("HF_HOME"):
        folder, source = os.path.join(env["HF_HOME"], "hub"), "HF_HOME environment variable"
    elif env.get("XDG_CACHE_HOME"):
        folder = os.path.join(env["XDG_CACHE_HOME"], "huggingface", "hub")
        source = "XDG_CACHE_HOME environment variable"
    else:
        folder = os.path.join("~", ".cache", "huggingface", "hub")
        source = "default, since neither HF_HUB_CACHE nor HF_HOME is set"
    return Path(os.path.expandvars(os.path.expanduser(folder))), source


def _offline_reason():
    """Why Hugging Face downloads are off, or `None` when they are on.

    `$HF_HUB_OFFLINE` (or `$TRANSFORMERS_OFFLINE`) as it is now; huggingface_hub also
    refuses every request when it was set as huggingface_hub was imported.
    """
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name, "").strip()
        if value:
            if value.upper() in _TRUE:
                return f"downloads are off ({name}={value})"
            break
    if constants.HF_HUB_OFFLINE:
        return "downloads are off (HF_HUB_OFFLINE was set when huggingface_hub was imported)"
    return None


def _endpoint():
    """The Hub URL: `$HF_ENDPOINT` as it is now, else huggingface_hub's endpoint."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def resolve_checkpoint(name_or_folder, *, revision=None, allow_pickle=False, include_weights=True):
    """The local folder of a checkpoint given as a folder or as a Hugging Face id.

    An existing path (folder or file) is returned as is, for the loader to check. A string
    that is a valid Hugging Face repo id is resolved in the Hugging Face cache by
    `huggingface_hub.snapshot_download`, which downloads what is missing when online and
    reads the cache when offline (`HF_HUB_OFFLINE=1`) or when the Hub cannot be reached. Only
    `config.json`, the tokenizer files (`vocab.txt`, `tokenizer.json`,
    `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`) and, with
    `include_weights`, the safetensors weights (`model.safetensors`, or the shards
    `model-*.safetensors` and their `model.safetensors.index.json`) are fetched;
    `pytorch_model.bin` only with `allow_pickle=True`.

    Args:
        name_or_folder: str or path. A local checkpoint folder or a Hugging Face id such as
            `"sentence-transformers/all-MiniLM-L6-v2"`, optionally `"<id>@<revision>"`. A
            path object (`os.PathLike`) is always a local path.
        revision: str or `None`. A branch, tag or commit hash of the id. An `@revision` in
            the name is the same thing; giving both, they must agree. Defaults to `None`
            (the name's revision, else `"main"`).
        allow_pickle: bool. Also fetch `pytorch_model.bin` (a pickle, which can run code
            when loaded). Defaults to `False`.
        include_weights: bool. Fetch the weights, not only the configuration and the
            tokenizer (a tokenizer needs no weights). Defaults to `True`.

    Returns:
        str. A local path: `name_or_folder` itself, or the snapshot folder in the cache.

    Raises:
        TypeError: `name_or_folder` is neither a string nor a path.
        ValueError: `revision` disagrees with the name's `@revision`, or is empty.
        FileNotFoundError: a path that does not exist and is not a valid Hugging Face id;
            or an id that is neither in the cache nor downloadable (offline, unreachable,
            unknown repository or revision, private or gated). The message names the id,
            the cache folder searched and how to fill it.
        OSError: a download that started and failed (a server or disk error), with the id,
            the cache and the cause.

    Example:

    >>> folder = resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> sorted(os.listdir(folder))  # doctest: +SKIP
    ['config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', ...]
    """
    if not isinstance(name_or_folder, str | os.PathLike):
        raise TypeError(
            "Expected a checkpoint folder (str or path) or a Hugging Face id (str). "
            f"Received: {name_or_folder!r}"
        )
    text = os.fspath(name_or_folder)
    if os.path.exists(text):
        return text
    repo_id, at, name_revision = text.partition("@")
    if isinstance(name_or_folder, os.PathLike) or not _is_repo_id(repo_id):
        raise FileNotFoundError(
            "Expected a checkpoint folder or a Hugging Face id (such as "
            f"'sentence-transformers/all-MiniLM-L6-v2'). No such path: '{text}'"
        )
    revision = _check_revision(text, name_revision if at else None, revision)
    patterns = list(CONFIG_FILES + TOKENIZER_FILES)
    if include_weights:
        patterns += WEIGHT_FILES
        if allow_pickle:
            patterns += PICKLE_FILES
    folder = _snapshot(text, repo_id, revision, patterns)
    logger.info("%s: the Hugging Face snapshot in %s", text, folder)
    return folder


def _is_repo_id(text):
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _check_revision(name, from_name, revision):
    if revision is not None and not isinstance(revision, str):
        raise ValueError(
            f"Expected `revision` to be a branch, tag or commit hash (str). Received: {revision!r}"
        )
    if from_name is not None and revision is not None and from_name != revision:
        raise ValueError(
            f"Expected one revision: the name {name!r} asks for {from_name!r} but "
            f"revision={revision!r}. Give it in one place."
        )
    revision = revision if revision is not None else from_name
    if revision is not None and not revision.strip():
        raise ValueError(
            f"Expected a branch, tag or commit hash after '@' (or as `revision`). "
            f"Received: {name!r}, revision={revision!r}"
        )
    return revision


def _snapshot(name, repo_id, revision, patterns):
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache, source = hf_cache_dir()
    offline = _offline_reason()
    endpoint = _endpoint()
    at = "" if revision is None else f" at revision {revision!r}"
    revision_option = "" if revision is None else f" --revision {revision}"
    looked = (
        f"looked in '{cache / ('models--' + repo_id.replace('/', '--'))}' (cache '{cache}', "
        f"from the {source})"
    )
    hint = (
        "To fill the cache, run this once on a machine with network access (it downloads "
        f"into the cache), or there run `hf download {repo_id}{revision_option}` "
        f"(`huggingface-cli download` with older huggingface_hub) and copy its cache folder "
        f"to '{cache}' here (or point HF_HUB_CACHE at the copy); or pass a local checkpoint "
        "folder."
    )
    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache),
            allow_patterns=patterns,
            endpoint=endpoint,
            local_files_only=offline is not None,
        )
    except RevisionNotFoundError as error:
        raise FileNotFoundError(
            f"{name!r} is not a local folder, and the Hub at {endpoint} has the repository "
            f"{repo_id!r} but no revision {revision!r} ({_summary(error)}); nor has the "
            f"cache: {looked}. Give a branch, tag or commit hash that exists."
        ) from None
    except LocalEntryNotFoundError as error:
        reason = offline or (
            f"the Hub at {endpoint} could not be reached ({_summary(error.__cause__ or error)})"
        )
        if type(error).__name__ == "IncompleteSnapshotError":  # newer huggingface_hub
            state = f"is in the Hugging Face cache only in part ({_summary(error)})"
        else:
            state = "is not in the Hugging Face cache"
        raise FileNotFoundError(
            f"{name!r} is not a local folder; as a Hugging Face id{at} it {state}, and "
            f"{reason}: {looked}. {hint}"
        ) from None
    except (HfHubHTTPError, OSError, *_transport_errors()) as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(error, RepositoryNotFoundError) or (
            isinstance(error, HfHubHTTPError) and status in (401, 403)
        ):
            raise FileNotFoundError(
                f"{name!r} is not a local folder, and the Hub at {endpoint} has no model "
                f"repository {repo_id!r} that it lets this machine read ({_summary(error)}); "
                "a private or gated one needs a token (`hf auth login`, or the HF_TOKEN "
                "environment variable) and, if gated, its conditions accepted on its page. "
                f"Nor is it in the cache: {looked}. {hint}"
            ) from None
        raise OSError(
            f"{name!r} is not a local folder, and downloading the Hugging Face id "
            f"{repo_id!r}{at} from {endpoint} into the cache '{cache}' failed "
            f"({_summary(error)}). Retry; or, {hint[0].lower()}{hint[1:]}"
        ) from None


def _transport_errors():
    """The base exception classes of the HTTP clients huggingface_hub uses, where imported
    (`requests` errors are already `OSError`s)."""
    errors = []
    for module in ("httpx2", "httpx"):
        error = getattr(sys.modules.get(module), "HTTPError", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def _summary(error):
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
