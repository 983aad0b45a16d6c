"""The `--precision` and `--jit-compile` command-line flags, without importing Keras.

Kept apart from `mmrep.training.options` so that a command line (the `mmrep` command,
whose `--help` must answer before TensorFlow starts) can declare the flags cheaply;
`TrainingOptions.from_args` reads them.
"""

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

_PRECISION_HELP = (
    "dtype policy set before the models are built: 'float32' (default); 'mixed_float16' "
    "(float16 compute, float32 variables; Model.compile adds a LossScaleOptimizer with "
    "dynamic loss scaling); 'mixed_bfloat16' (bfloat16 compute, float32 variables, no loss "
    "scaling needed)"
)
_JIT_HELP = (
    "compile the training, evaluation and prediction steps with XLA (Model.compile("
    "jit_compile=True)); off by default"
)


def add_training_arguments(parser):
    """Adds `--precision` and `--jit-compile` to an argparse parser.

    Args:
        parser: an `argparse.ArgumentParser` (or argument group).

    Returns:
        The argument group holding the two options.

    Example:

    >>> import argparse
    >>> from mmrep.training import TrainingOptions
    >>> parser = argparse.ArgumentParser()
    >>> _ = add_training_arguments(parser)
    >>> TrainingOptions.from_args(parser.parse_args(["--jit-compile"]))
    TrainingOptions(precision='float32', jit_compile=True)
    """
    group = parser.add_argument_group("precision and compilation")
    group.add_argument("--precision", choices=PRECISIONS, default="float32", help=_PRECISION_HELP)
    group.add_argument("--jit-compile", action="store_true", help=_JIT_HELP)
    return group
