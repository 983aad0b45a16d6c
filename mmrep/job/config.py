"""The run config: a TOML file describing a run's data, encoders, fusion, head and training.

`load_config(path)` reads and checks a config file; `check_config(mapping)` checks a
mapping (as `tomllib` gives it) and fills in the defaults; `builtin_config("mmdigits")`
is the main job's own config (what `mmrep train` runs with no `--config`);
`config_to_toml(config)` writes a checked config back as TOML (the run folder keeps it,
and `mmrep train --config runs/NAME/config.toml` runs it again).

Every error names the key (`modalities.text.sequence_length`), what was expected and
what came, and the file. File paths are relative to the config file's folder; a checked
config holds them absolute, so a copy of it anywhere describes the same run.

The schema (see the README's "Train on your own data"):

- top level: `name`, `task`, `seed`. `task = "classification"` trains a classifier on the
  fused embedding (and, with the `coordinated` fusion, the CLIP loss between every pair of
  modalities that coordinates their embeddings); `"retrieval"` trains that pair loss alone
  (no labels needed; `coordinated` only); `"both"` is classification that insists on
  `coordinated`;
- `[data]`: `train`, `validation`, `test` (manifests), `label`, `ignore`,
  `validation_fraction`, `root` (a folder the manifests' paths may be anywhere under;
  by default each manifest's own folder) or `allow_outside = true` (paths anywhere), or
  `builtin = "mmdigits"`;
- `[modalities.<name>]`: one table per modality, two or more; the modality's kind is
  its name (`image`, `text`, `audio`, `video`) or the table's `kind`;
- `[fusion]`: `kind`, `dim`, `vector_dim`; `[head]`: `kind`;
- `[train]`: `epochs`, `batch_size`, `learning_rate`, `modality_dropout`, `precision`,
  `jit_compile`, `steps_per_epoch`, `limit`;
- `[export]`: `enabled`, `dir`.
"""

import copy
import math
import os
import re

import tomllib

from mmrep.job.names import FUSIONS, HEADS
from mmrep.job.run_folder import NAME_RULE, is_run_name
from mmrep.utils.modalities import MODALITY_ORDER, ordered_modalities

TASKS = ("classification", "retrieval", "both")
FUSION_KINDS = FUSIONS
HEAD_KINDS = ("none", *HEADS)
BUILTIN_DATA = ("mmdigits",)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
IMAGE_POOLINGS = ("avg", "max", "flatten")
VIDEO_SAMPLINGS = ("first", "uniform", "interval")
SEED_LIMIT = 2**31


class ConfigError(ValueError):
    """A run config that cannot be used; the message names the file, the key and the value."""


class _Checker:
    """Reads keys out of one table, checking each, and reports the keys nobody read."""

    def __init__(self, source, path, table):
        self.source, self.path = source, path
        if not isinstance(table, dict):
            self.fail(path, "a table", table)
        self.table, self.read = table, set()

    def where(self, key):
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key, expected, value):
        raise ConfigError(f"{self.source}: `{key}`: expected {expected}. Received: {_show(value)}")

    def get(self, key, kind, default=..., *, choices=None, minimum=None, maximum=None):
        """The value of `key`, of `kind` ("str", "int", "float", "bool", "ints", "strs")."""
        self.read.add(key)
        if key not in self.table:
            if default is ...:
                raise ConfigError(f"{self.source}: `{self.where(key)}` is required and missing")
            return default
        value = self.table[key]
        ok = {
            "str": isinstance(value, str) and value != "",
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value),
            "bool": isinstance(value, bool),
            "ints": isinstance(value, list)
            and value
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value),
            "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[kind]
        expected = {
            "str": "a non-empty string",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "ints": "a non-empty list of positive integers",
            "strs": "a list of strings",
        }[kind]
        if choices is not None:
            expected = "one of " + ", ".join(repr(c) for c in choices)
            ok = ok and value in choices
        if ok and minimum is not None and value < minimum:
            ok, expected = False, f"{expected} >= {minimum}"
        if ok and maximum is not None and value >= maximum:
            ok, expected = False, f"{expected} < {maximum}"
        if not ok:
            self.fail(self.where(key), expected, value)
        return float(value) if kind == "float" else value

    def path_value(self, key, root, default=None, *, required=False):
        value = self.get(key, "str", ... if required else default)
        if value is None:
            return None
        return os.path.normpath(os.path.join(root, os.path.expanduser(value)))

    def done(self, allowed_extra=()):
        unknown = sorted(set(self.table) - self.read - set(allowed_extra))
        if unknown:
            known = ", ".join(sorted(self.read | set(allowed_extra))) or "none"
            raise ConfigError(
                f"{self.source}: unknown key `{self.where(unknown[0])}` (this table takes: {known})"
            )


def _show(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _weights(checker, key, root):
    """A weights value: a name (kept as given) or a local path (made absolute)."""
    value = checker.get(key, "str", None)
    if value is None:
        return None
    local = os.path.normpath(os.path.join(root, os.path.expanduser(value)))
    if value.startswith((".", "/", "~")) or os.path.exists(local):
        return local
    return value


def _image_table(checker, root, prefix=""):
    from mmrep.encoders.image.backbones import BACKBONES

    encoder = checker.get(
        prefix + "encoder", "str", "mobilenet_v3_small", choices=sorted(BACKBONES)
    )
    weights = _weights(checker, prefix + "weights", root)
    default_size = 32 if encoder == "small_cnn" else 224
    table = {
        "encoder": encoder,
        "weights": weights,
        "image_size": checker.get(prefix + "image_size", "int", default_size, minimum=8),
        "pooling": checker.get(prefix + "pooling", "str", "avg", choices=IMAGE_POOLINGS),
        "trainable": checker.get(prefix + "trainable", "bool", weights is None),
        "trainable_blocks": checker.get(prefix + "trainable_blocks", "int", None, minimum=0),
        "filters": checker.get(prefix + "filters", "ints", None),
    }
    if table["filters"] is not None and encoder != "small_cnn":
        checker.fail(
            checker.where(prefix + "filters"),
            "no `filters` (only small_cnn takes them)",
            table["filters"],
        )
    if weights is not None and encoder == "small_cnn" and weights == "imagenet":
        checker.fail(
            checker.where(prefix + "weights"), "no ImageNet weights for small_cnn", weights
        )
    return table


def _text_table(checker, root):
    encoder = checker.get("encoder", "str", "bert", choices=("bert",))
    weights = _weights(checker, "weights", root)
    table = {
        "encoder": encoder,
        "weights": weights,
        "sequence_length": checker.get("sequence_length", "int", 64, minimum=2),
        "pooling": checker.get("pooling", "str", "mean", choices=("mean", "cls")),
        "frozen_layers": checker.get("frozen_layers", "int", 0, minimum=0),
        "trainable": checker.get("trainable", "bool", True),
    }
    # Sizes of a BERT trained from scratch (ignored, and refused, with weights).
    scratch = {
        "layers": ("int", 2),
        "hidden_size": ("int", 64),
        "heads": ("int", 2),
        "vocabulary_size": ("int", 5000),
    }
    for key, (kind, default) in scratch.items():
        if weights is not None:
            if key in checker.table:
                checker.fail(
                    checker.where(key),
                    f"no `{key}` with `weights` (the checkpoint sets it)",
                    checker.table[key],
                )
            checker.read.add(key)
            table[key] = None
            continue
        table[key] = checker.get(key, kind, default, minimum=1)
    if weights is None and table["hidden_size"] % table["heads"]:
        checker.fail(
            checker.where("heads"),
            f"a divisor of hidden_size={table['hidden_size']}",
            table["heads"],
        )
    return table


def _audio_table(checker, root):
    table = {
        "encoder": checker.get("encoder", "str", "vggish", choices=("vggish",)),
        "weights": _weights(checker, "weights", root),
        "seconds": checker.get("seconds", "float", 4.0, minimum=0.975),
        "trainable": checker.get("trainable", "bool", True),
        "conv_filters": checker.get("conv_filters", "ints", None),
        "fc_units": checker.get("fc_units", "ints", None),
        "embedding_dim": checker.get("embedding_dim", "int", None, minimum=1),
    }
    if table["conv_filters"] is not None and len(table["conv_filters"]) != 4:
        checker.fail(checker.where("conv_filters"), "4 convolution widths", table["conv_filters"])
    if table["weights"] is not None:
        for key in ("conv_filters", "fc_units", "embedding_dim"):
            if table[key] is not None:
                checker.fail(
                    checker.where(key),
                    f"no `{key}` with `weights` (VGGish's own sizes)",
                    table[key],
                )
    return table


def _video_table(checker, root, modalities):
    frame_encoder = checker.get("frame_encoder", "str", "own", choices=("image", "own"))
    fps = checker.get("fps", "float", None, minimum=1e-6)
    table = {
        "encoder": checker.get("encoder", "str", "frames", choices=("frames",)),
        "frame_encoder": frame_encoder,
        "fps": fps,
        "num_frames": checker.get("num_frames", "int", 8, minimum=1),
        "frame_size": checker.get("frame_size", "int", 112, minimum=8),
        "sampling": checker.get(
            "sampling", "str", "interval" if fps else "uniform", choices=VIDEO_SAMPLINGS
        ),
        "pooling": checker.get("pooling", "str", "mean", choices=("mean", "max")),
    }
    if table["sampling"] == "interval" and fps is None:
        checker.fail(checker.where("fps"), "frames per second for sampling = 'interval'", None)
    if table["sampling"] != "interval" and fps is not None:
        checker.fail(
            checker.where("sampling"),
            "'interval' (the sampling that uses `fps`)",
            table["sampling"],
        )
    if frame_encoder == "image":
        if "frame" in checker.table:
            checker.fail(
                checker.where("frame"), "no [frame] table with frame_encoder = 'image'", "a table"
            )
        if "image" not in modalities.values():
            checker.fail(
                checker.where("frame_encoder"),
                "'own' (there is no image modality to share)",
                "image",
            )
        table["frame"] = None
    else:
        frame = _Checker(checker.source, checker.where("frame"), checker.table.get("frame", {}))
        table["frame"] = _image_table(frame, root)
        frame.done()
    checker.read.add("frame")
    return table


# Keys of [data] that only a table of manifests has.
DATA_FILE_KEYS = ("train", "validation", "test", "root", "allow_outside")


def _data_table(checker, root, task):
    builtin = checker.get("builtin", "str", None, choices=BUILTIN_DATA)
    if builtin is not None:
        for key in (*DATA_FILE_KEYS, "label", "ignore", "validation_fraction"):
            if key in checker.table:
                checker.fail(
                    checker.where(key), f"no `{key}` with builtin = {builtin!r}", checker.table[key]
                )
        return {"builtin": builtin}
    data = {
        "train": checker.path_value("train", root, required=True),
        "validation": checker.path_value("validation", root),
        "test": checker.path_value("test", root),
        "label": checker.get("label", "str", None if task == "retrieval" else "label"),
        "ignore": checker.get("ignore", "strs", []),
        "validation_fraction": checker.get(
            "validation_fraction", "float", 0.2, minimum=0.0, maximum=1.0
        ),
        "root": checker.path_value("root", root),
        "allow_outside": checker.get("allow_outside", "bool", False),
    }
    if data["root"] is not None and not os.path.isdir(data["root"]):
        raise ConfigError(
            f"{checker.source}: `{checker.where('root')}`: expected a folder the manifests' "
            f"paths lie under. Received: {data['root']!r}, which is not a folder"
        )
    if data["root"] is not None and data["allow_outside"]:
        raise ConfigError(
            f"{checker.source}: `{checker.where('allow_outside')}`: expected either `root` or "
            "`allow_outside = true`, not both"
        )
    for key in ("train", "validation", "test"):
        if data[key] is not None and not os.path.isfile(data[key]):
            raise ConfigError(
                f"{checker.source}: `{checker.where(key)}`: no manifest file at {data[key]!r} "
                "(paths are relative to the config file's folder)"
            )
    return data


def _modality_tables(checker, root):
    names = list(checker.table)
    if len(names) < 2:
        raise ConfigError(
            f"{checker.source}: `modalities`: expected two or more [modalities.<name>] "
            f"tables. Received: {names}"
        )
    kinds = {}
    for name in names:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            checker.fail(
                checker.where(name),
                "a modality name of ASCII letters, digits and underscores, starting with a "
                "letter (it names manifest columns, model inputs and `embed_<name>` "
                "signatures)",
                name,
            )
        table = checker.table[name]
        if not isinstance(table, dict):
            checker.fail(checker.where(name), "a table", table)
        kind = table.get("kind", name)
        if kind not in MODALITY_ORDER:
            checker.fail(
                checker.where(f"{name}.kind"),
                f"one of {', '.join(MODALITY_ORDER)} (or a table named like one)",
                kind,
            )
        kinds[name] = kind
    out = {}
    for name in ordered_modalities(names):
        table = _Checker(checker.source, checker.where(name), checker.table[name])
        kind = kinds[name]
        if kind == "image":
            values = _image_table(table, root)
        elif kind == "text":
            values = _text_table(table, root)
        elif kind == "audio":
            values = _audio_table(table, root)
        else:
            values = _video_table(table, root, kinds)
        table.done(allowed_extra=("kind",))
        out[name] = {"kind": kind, **values}
        checker.read.add(name)
    return out


def check_config(mapping, *, source="config", root="."):
    """Checks a run config mapping and fills in every default.

    Args:
        mapping: dict, as `tomllib` reads a config file.
        source: str. Where it came from, for messages. Defaults to `"config"`.
        root: str. The folder relative paths are relative to. Defaults to `"."`.

    Returns:
        dict. The full config: every table and key, paths absolute.

    Raises:
        ConfigError: for a missing, unknown or ill-typed key or value; the message names
            the key, what was expected and what came.
    """
    root = os.path.abspath(root)
    top = _Checker(source, "", mapping)
    task = top.get("task", "str", "classification", choices=TASKS)
    config = {
        "name": top.get("name", "str", None),
        "task": task,
        "seed": top.get("seed", "int", 0),
    }
    if config["name"] is not None and not is_run_name(config["name"]):
        top.fail("name", f"{NAME_RULE} (the run folder's name)", config["name"])
    if not 0 <= config["seed"] < SEED_LIMIT:
        # NumPy's global seeding takes [0, 2**32); the job also seeds with `seed + k`.
        top.fail("seed", "an integer >= 0 and < 2**31", config["seed"])
    data = _Checker(source, "data", mapping.get("data", {}))
    config["data"] = _data_table(data, root, task)
    data.done()
    top.read.add("data")
    modalities = _Checker(source, "modalities", mapping.get("modalities", {}))
    config["modalities"] = _modality_tables(modalities, root)
    top.read.add("modalities")

    fusion = _Checker(source, "fusion", mapping.get("fusion", {}))
    config["fusion"] = {
        "kind": fusion.get("kind", "str", "coordinated", choices=FUSION_KINDS),
        "dim": fusion.get("dim", "int", 64, minimum=1),
        "vector_dim": fusion.get("vector_dim", "int", 64, minimum=1),
    }
    fusion.done()
    head = _Checker(source, "head", mapping.get("head", {}))
    config["head"] = {"kind": head.get("kind", "str", "none", choices=HEAD_KINDS)}
    head.done()
    if task != "classification" and config["fusion"]["kind"] != "coordinated":
        raise ConfigError(
            f"{source}: `fusion.kind`: task = {task!r} trains one embedding per modality "
            "against the others, which needs 'coordinated'. Received: "
            f"{config['fusion']['kind']!r}"
        )

    train = _Checker(source, "train", mapping.get("train", {}))
    config["train"] = {
        "epochs": train.get("epochs", "int", 10, minimum=1),
        "batch_size": train.get("batch_size", "int", 32, minimum=1),
        "learning_rate": train.get("learning_rate", "float", 1e-3, minimum=1e-12),
        "modality_dropout": train.get("modality_dropout", "float", 0.3, minimum=0.0, maximum=1.0),
        "precision": train.get("precision", "str", "float32", choices=PRECISIONS),
        "jit_compile": train.get("jit_compile", "bool", False),
        "steps_per_epoch": train.get("steps_per_epoch", "int", None, minimum=1),
        "limit": train.get("limit", "int", None, minimum=1),
    }
    train.done()
    export = _Checker(source, "export", mapping.get("export", {}))
    config["export"] = {
        "enabled": export.get("enabled", "bool", True),
        "dir": export.path_value("dir", root, os.path.join(root, "saved_models")),
    }
    export.done()
    for table in ("fusion", "head", "train", "export"):
        top.read.add(table)
    top.done()
    if config["name"] is None:
        config["name"] = default_name(config)
    return config


def default_name(config):
    """`<data>_<fusion>[_<head>]`: the manifest's folder name or the built-in data set."""
    data = config["data"]
    base = data.get("builtin") or os.path.basename(os.path.dirname(data["train"])) or "run"
    head = config["head"]["kind"]
    return f"{base}_{config['fusion']['kind']}" + ("" if head == "none" else f"_{head}")


def load_config(path):
    """Reads and checks a TOML run config (relative paths from its folder).

    Args:
        path: str. The `.toml` file.

    Returns:
        dict. The checked config (see `check_config`).

    Raises:
        FileNotFoundError: when there is no such file.
        ConfigError: for a file that is not TOML or a config that does not check.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file at {path!r}")
    try:
        with open(path, "rb") as f:
            mapping = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a TOML file: {error}") from None
    return check_config(mapping, source=path, root=os.path.dirname(os.path.abspath(path)))


def builtin_config(data="mmdigits"):
    """The main job's config: four small encoders trained from scratch on mmdigits.

    Args:
        data: str. The built-in data set; only `"mmdigits"`.

    Returns:
        dict. A checked config (`mmrep train --print-config` prints it).
    """
    if data not in BUILTIN_DATA:
        raise ConfigError(f"no built-in config {data!r}; there is {', '.join(BUILTIN_DATA)}")
    mapping = {
        "name": "mmdigits_coordinated",
        "task": "classification",
        "data": {"builtin": "mmdigits"},
        "modalities": {
            "image": {
                "encoder": "small_cnn",
                "image_size": 32,
                "filters": [16, 32, 32],
                "pooling": "flatten",
            },
            "text": {
                "encoder": "bert",
                "sequence_length": 16,
                "layers": 2,
                "hidden_size": 64,
                "heads": 2,
                "vocabulary_size": 1000,
            },
            "audio": {
                "encoder": "vggish",
                "seconds": 1.0,
                "conv_filters": [8, 16, 32, 32],
                "fc_units": [64],
                "embedding_dim": 64,
            },
            "video": {
                "encoder": "frames",
                "num_frames": 16,
                "frame_size": 32,
                "sampling": "first",
                "pooling": "mean",
                "frame": {
                    "encoder": "small_cnn",
                    "image_size": 16,
                    "filters": [16, 32, 64],
                    "pooling": "max",
                },
            },
        },
        "fusion": {"kind": "coordinated", "dim": 64, "vector_dim": 64},
        "train": {"epochs": 20, "batch_size": 64, "learning_rate": 2e-3, "modality_dropout": 0.5},
        "export": {"dir": "saved_models"},
    }
    return check_config(mapping, source=f"the built-in {data} config", root=os.getcwd())


def with_overrides(config, **overrides):
    """A copy of a checked config with command-line values put in (`None`: not given).

    Args:
        config: dict. A checked config.
        **overrides: `name`, `seed`, `epochs`, `batch_size`, `learning_rate`,
            `precision`, `jit_compile`, `export` (bool), `export_dir`, `fusion`, `head`,
            `steps_per_epoch`, `limit`.

    Returns:
        dict. The config, checked again.
    """
    config = copy.deepcopy(config)
    places = {
        "name": ("name",),
        "seed": ("seed",),
        "fusion": ("fusion", "kind"),
        "head": ("head", "kind"),
        "epochs": ("train", "epochs"),
        "batch_size": ("train", "batch_size"),
        "learning_rate": ("train", "learning_rate"),
        "precision": ("train", "precision"),
        "jit_compile": ("train", "jit_compile"),
        "steps_per_epoch": ("train", "steps_per_epoch"),
        "limit": ("train", "limit"),
        "export": ("export", "enabled"),
        "export_dir": ("export", "dir"),
    }
    renamed = "name" in overrides and overrides["name"] is not None
    for key, value in overrides.items():
        if key not in places:
            raise TypeError(f"with_overrides: unknown override {key!r}")
        if value is None:
            continue
        if key == "export_dir":
            value = os.path.abspath(value)
        *tables, last = places[key]
        target = config
        for table in tables:
            target = target[table]
        target[last] = value
    if not renamed and (overrides.get("fusion") is not None or overrides.get("head") is not None):
        config["name"] = default_name(config)
    return recheck(config, source="the command line's config")


def _as_mapping(config):
    """A checked config as a TOML mapping (no `None` values: TOML has no null)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        return value

    mapping = strip(config)
    video = [m for m, t in config["modalities"].items() if t["kind"] == "video"]
    for name in video:
        if config["modalities"][name]["frame_encoder"] == "image":
            mapping["modalities"][name].pop("frame", None)
    return mapping


def recheck(config, source="the run config"):
    """Checks a config again (e.g. one edited in Python after `load_config`).

    Args:
        config: dict. A checked config, or a mapping as `check_config` takes it.
        source: str. For messages.

    Returns:
        dict. The checked config.
    """
    return check_config(_as_mapping(config), source=source)


def _escape(character):
    if character.isprintable():
        return character
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _toml_key(key):
    """A bare TOML key when it can be one, else a quoted one."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(_escape(c) for c in escaped)
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML value for {value!r}")


def config_to_toml(config):
    """A checked config as TOML text that `load_config` reads back to the same config.

    Args:
        config: dict. A checked config.

    Returns:
        str.
    """
    return mapping_to_toml(_as_mapping(config))


def mapping_to_toml(mapping):
    """A config mapping (nested dicts of strings, numbers, booleans and lists) as TOML.

    Args:
        mapping: dict, as `tomllib` reads a config file (no `None` values).

    Returns:
        str.
    """
    lines = []

    def table(path, values):
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
        if path and scalars:
            lines.append(f"\n[{path}]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{path}.{_toml_key(key)}" if path else _toml_key(key), value)

    table("", mapping)
    return "\n".join(lines).lstrip("\n") + "\n"
