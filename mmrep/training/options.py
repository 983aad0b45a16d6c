"""Precision and XLA options for training scripts: `--precision` and `--jit-compile`.

Every recipe takes the same two flags. `add_training_arguments` adds them to an argparse
parser; `TrainingOptions.from_args(args).apply()` sets the global Keras dtype policy
before any model is built (a layer takes its policy when it is created), and
`compile_kwargs()` gives the arguments to pass to every `Model.compile`:

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    args = parser.parse_args()
    options = TrainingOptions.from_args(args).apply()
    model = build_model()  # after `apply()`
    model.compile(optimizer="adam", loss=..., **options.compile_kwargs())

Mixed precision (Micikevicius et al., "Mixed Precision Training", ICLR 2018) computes in
16 bits and keeps the variables in float32. `"mixed_float16"` needs loss scaling against
gradient underflow: `Model.compile` wraps the optimizer in a `LossScaleOptimizer` with a
dynamic scale itself when the model's policy is `"mixed_float16"`, and Keras' `train_step`
(and mmrep's, which go through `optimizer.scale_loss`) scale and unscale the loss.
`"mixed_bfloat16"` has float32's exponent range and needs no scaling. Both pay off on
GPUs and TPUs with 16-bit matrix units; on CPUs without them they are usually slower.

XLA (`jit_compile=True`) is off by default, as Keras' own `"auto"` is on CPU-only
machines and under `tf.distribute`. With TensorFlow 2.21 an XLA-compiled step under
`MirroredStrategy` over logical CPU devices fails (a replica's variables live on
another device), so use it on one device, GPUs or TPUs.
"""

import keras

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class TrainingOptions:
    """The numeric precision and XLA compilation of a training run.

    Args:
        precision: str. One of `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`:
            the global Keras dtype policy that `apply()` sets. Defaults to `"float32"`.
        jit_compile: bool. Whether `Model.compile` compiles the steps with XLA.
            Defaults to `False`.

    Raises:
        ValueError: for an unknown `precision` (the message lists the allowed names) or
            a `jit_compile` that is not a bool.

    Example:

    >>> options = TrainingOptions("mixed_bfloat16", jit_compile=True)
    >>> options.compile_kwargs()
    {'jit_compile': True}
    """

    def __init__(self, precision="float32", jit_compile=False):
        if precision not in PRECISIONS:
            raise ValueError(
                f"Expected `precision` to be one of {', '.join(map(repr, PRECISIONS))}. "
                f"Received: precision={precision!r}"
            )
        if not isinstance(jit_compile, bool):
            raise ValueError(
                f"Expected `jit_compile` to be a bool. Received: jit_compile={jit_compile!r}"
            )
        self.precision = precision
        self.jit_compile = jit_compile

    @classmethod
    def from_args(cls, args):
        """The options of a parsed command line (see `add_training_arguments`).

        Args:
            args: an `argparse.Namespace` with `precision` and `jit_compile` attributes.

        Returns:
            A `TrainingOptions`.

        Raises:
            ValueError: if `args` lacks the attributes (the parser was not given
                `add_training_arguments`) or holds bad values.
        """
        missing = [name for name in ("precision", "jit_compile") if not hasattr(args, name)]
        if missing:
            raise ValueError(
                f"Expected parsed arguments with {missing} (call "
                "`add_training_arguments(parser)` before parsing). "
                f"Received: {args!r}"
            )
        return cls(precision=args.precision, jit_compile=bool(args.jit_compile))

    def apply(self):
        """Sets the global Keras dtype policy to `precision`; call before building models.

        Returns:
            `self`, so that `options = TrainingOptions.from_args(args).apply()` reads well.
        """
        keras.config.set_dtype_policy(self.precision)
        return self

    def compile_kwargs(self):
        """The keyword arguments these options give to `Model.compile`.

        Returns:
            dict. `{"jit_compile": bool}`.
        """
        return {"jit_compile": self.jit_compile}

    def __repr__(self):
        return f"TrainingOptions(precision={self.precision!r}, jit_compile={self.jit_compile})"

    def __eq__(self, other):
        if not isinstance(other, TrainingOptions):
            return NotImplemented
        return (self.precision, self.jit_compile) == (other.precision, other.jit_compile)

    def __hash__(self):
        return hash((self.precision, self.jit_compile))


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
