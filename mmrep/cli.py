"""The `mmrep` command: `train`, `evaluate`, `export` and `embed`.

`import mmrep` imports every subpackage (so every layer is registered with Keras), so the
command starts TensorFlow before it parses its arguments. Errors the user can fix
(a missing run or model, a manifest that does not match the model, an output that exists,
a run name that is no folder name, a destination that is a file or cannot be written)
end the command with `mmrep <command>: error: <message>` and exit status 2, without a
traceback. The code raises its own errors for these where it checks a path; as a last
resort, a `PermissionError`, `NotADirectoryError` or `IsADirectoryError` about a path the
user gave (or one inside it) is shown the same way. Any other exception is a bug and keeps
its traceback.
"""

import argparse
import os
import sys

from mmrep import __version__
from mmrep.job.names import DEFAULT_FUSION, FUSIONS, HEADS
from mmrep.training.options import add_training_arguments


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_train(commands):
    train = commands.add_parser(
        "train",
        help="train a run config (default: the built-in mmdigits job), evaluate it, export it",
        description=(
            "Trains the model a TOML run config describes (--config FILE: your manifests, "
            "pretrained encoders by name, a fusion, a head, the task), with random modality "
            "dropout. Writes runs/NAME/ (model.keras, config.toml, metrics.json with "
            "accuracy per modality condition, linear probes and retrieval, PNG plots) and "
            "exports a SavedModel to EXPORT_DIR/NAME/VERSION/ for TF Serving. With no "
            "--config it runs the built-in mmdigits job (--print-config shows its config); "
            "flags override the config's keys."
        ),
    )
    train.add_argument("--config", metavar="FILE", help="a TOML run config (see the README)")
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the full config (with every default and override) and exit",
    )
    train.add_argument(
        "--fusion", choices=FUSIONS, help=f"override fusion.kind (built-in: {DEFAULT_FUSION})"
    )
    train.add_argument(
        "--head",
        choices=(*HEADS, "none"),
        help="override head.kind (a head on the fused embedding)",
    )
    train.add_argument("--epochs", type=_positive_int, help="override train.epochs")
    train.add_argument("--batch-size", type=_positive_int, help="override train.batch_size")
    train.add_argument("--learning-rate", type=float, help="override train.learning_rate")
    train.add_argument("--seed", type=int, help="override seed")
    train.add_argument("--name", help="override name (the run folder's name)")
    _add_runs_dir(train)
    train.add_argument(
        "--export-dir",
        help="override export.dir (a folder of TF Serving base folders)",
    )
    train.add_argument(
        "--no-export", action="store_true", help="do not export a SavedModel after training"
    )
    add_training_arguments(train)
    # Not given: the config's own `train.precision` and `train.jit_compile`.
    train.set_defaults(precision=None, jit_compile=None)


def _add_runs_dir(parser):
    parser.add_argument(
        "--runs-dir", default="runs", help="folder holding the run folders (default: runs)"
    )


def _add_export_dir(parser):
    parser.add_argument(
        "--export-dir",
        default="saved_models",
        help="folder holding exported models, one TF Serving base folder per run "
        "(default: saved_models)",
    )


def _add_evaluate_and_export(commands):
    evaluate = commands.add_parser(
        "evaluate",
        help="recompute a run's metrics and plots, or evaluate it on another manifest",
        description=(
            "Reloads RUN/model.keras and RUN/config.toml and recomputes metrics.json and the "
            "plots, or, with --manifest, prints the metrics on that manifest (the run "
            "folder is left as it is)."
        ),
    )
    evaluate.add_argument("run", metavar="RUN", help="a run folder, or a run name in --runs-dir")
    evaluate.add_argument(
        "--manifest", metavar="FILE", help="a manifest with the run's columns to evaluate on"
    )
    _add_runs_dir(evaluate)

    export = commands.add_parser(
        "export",
        help="export a run's model as a SavedModel for serving",
        description=(
            "Exports RUN/model.keras to EXPORT_DIR/NAME/VERSION/ (the TF Serving layout) with "
            "a serving_default signature and one embedding signature per modality. The write "
            "is atomic; an existing version is kept unless --overwrite is given."
        ),
    )
    export.add_argument("run", metavar="RUN", help="a run folder, or a run name in --runs-dir")
    _add_runs_dir(export)
    _add_export_dir(export)
    export.add_argument(
        "--version",
        type=_positive_int,
        help="version number (default: one more than the largest there)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace the version if it exists")


def _add_embed(commands):
    embed = commands.add_parser(
        "embed",
        help="embed the rows of a manifest with an exported model",
        description=(
            "Reads a CSV or JSON Lines manifest of image/text/audio/video files (empty cells "
            "are missing modalities), runs an exported SavedModel on it and writes its "
            "outputs: .npy (the embedding), .npz (every output, and the labels) or .parquet "
            "(one row per manifest row; needs pyarrow)."
        ),
    )
    embed.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="a SavedModel version folder, or a TF Serving base folder (latest version)",
    )
    embed.add_argument("--manifest", required=True, metavar="FILE", help=".csv or .jsonl")
    embed.add_argument(
        "--output", required=True, metavar="FILE", help=".npy, .npz or .parquet (must not exist)"
    )
    embed.add_argument("--batch-size", type=_positive_int, default=64, help="(default: 64)")
    embed.add_argument(
        "--signature",
        default="serving_default",
        help="the signature to run (default: serving_default)",
    )
    embed.add_argument(
        "--ignore",
        nargs="+",
        default=(),
        metavar="COLUMN",
        help="manifest columns to leave unread (an id or source column)",
    )
    embed.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="a row that cannot be read or run: stop there, naming it (fail, the default; "
        "finished rows are kept for --resume), or leave it out and list it with its reason "
        "in OUTPUT.skipped.jsonl (skip)",
    )
    embed.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run of OUTPUT (killed, or stopped at a bad row)",
    )
    embed.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=1024,
        help="rows per saved chunk, the unit --resume keeps (default: 1024)",
    )
    embed.add_argument(
        "--root",
        metavar="FOLDER",
        help="a folder the manifest's paths may be anywhere under (default: the manifest's "
        "folder; paths that leave it are refused)",
    )
    embed.add_argument(
        "--allow-outside",
        action="store_true",
        help="allow manifest paths anywhere (absolute, or leaving the manifest's folder)",
    )


def _parser():
    parser = argparse.ArgumentParser(
        prog="mmrep",
        description="Multimodal representation learning on TensorFlow / Keras 3.",
    )
    parser.add_argument("--version", action="version", version=f"mmrep {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(commands)
    _add_evaluate_and_export(commands)
    _add_embed(commands)
    return parser


def _run(args):
    if args.command == "train":
        _train(args)
    elif args.command == "evaluate":
        from mmrep.job import evaluate_run

        evaluate_run(args.run, runs_dir=args.runs_dir, manifest=args.manifest)
    elif args.command == "export":
        from mmrep.job import export_run

        export_run(
            args.run,
            runs_dir=args.runs_dir,
            export_dir=args.export_dir,
            version=args.version,
            overwrite=args.overwrite,
        )
    elif args.command == "embed":
        from mmrep.export import embed_manifest

        embed_manifest(
            args.model,
            args.manifest,
            args.output,
            batch_size=args.batch_size,
            signature=args.signature,
            ignore=tuple(args.ignore),
            on_error=args.on_error,
            resume=args.resume,
            chunk_rows=args.chunk_rows,
            root=args.root,
            allow_outside=args.allow_outside,
        )


def _train(args):
    from mmrep.job import builtin_config, config_to_toml, load_config, train_run, with_overrides

    config = load_config(args.config) if args.config else builtin_config()
    config = with_overrides(
        config,
        name=args.name,
        seed=args.seed,
        fusion=args.fusion,
        head=args.head,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        precision=args.precision,
        jit_compile=args.jit_compile,
        export=False if args.no_export else None,
        export_dir=args.export_dir,
    )
    if args.print_config:
        print(config_to_toml(config), end="")
        return
    train_run(config, runs_dir=args.runs_dir)


def _user_errors():
    """The exception types that mean bad input from the user, not a bug."""
    from mmrep.data.manifest import ManifestError
    from mmrep.export import ServingError
    from mmrep.job import ConfigError, RunError

    return (ServingError, RunError, ConfigError, ManifestError, FileNotFoundError, FileExistsError)


# OSErrors that mean "this path is not what the command needs", when the path is the user's.
_PATH_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError)
_PATH_ARGUMENTS = ("config", "runs_dir", "export_dir", "run", "manifest", "model", "output")


def _user_path_error(error, args):
    """A message for an OSError about a path the user gave (or one inside it), else `None`."""
    if not isinstance(error, _PATH_ERRORS) or not error.filename:
        return None
    given = [getattr(args, key, None) for key in _PATH_ARGUMENTS]
    given = [os.path.abspath(path) for path in given if isinstance(path, str) and path]
    for filename in (error.filename, error.filename2):
        if not isinstance(filename, str):
            continue
        path = os.path.abspath(filename)
        if any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in given):
            return f"cannot use {filename!r}: {error.strerror or error}"
    return None


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        _run(args)
    except _user_errors() as error:
        parser.exit(2, f"mmrep {args.command}: error: {error}\n")
    except _PATH_ERRORS as error:
        message = _user_path_error(error, args)
        if message is None:
            raise
        parser.exit(2, f"mmrep {args.command}: error: {message}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
