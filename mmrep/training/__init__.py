"""Training at scale: strategy selection, distributed input, fault tolerance, precision.

The same script runs on one CPU, several GPUs, many workers or a TPU: `select_strategy`
reads the environment, `distribute_dataset` shards input with per-replica batches,
`BackupAndRestore` resumes a killed run from its last atomic backup, and
`TrainingOptions` turns `--precision` / `--jit-compile` flags into a dtype policy and
compile arguments.
"""

from mmrep.training.backup import BackupAndRestore, BackupMismatchError
from mmrep.training.datasets import distribute_dataset, per_replica_batch_size
from mmrep.training.epoch_shuffle import EpochCallback, EpochShuffled, epoch_shuffled
from mmrep.training.options import TrainingOptions, add_training_arguments
from mmrep.training.strategy import (
    KerasMultiWorkerMirroredStrategy,
    is_chief,
    read_tf_config,
    select_strategy,
)

__all__ = [
    "BackupAndRestore",
    "BackupMismatchError",
    "EpochCallback",
    "EpochShuffled",
    "KerasMultiWorkerMirroredStrategy",
    "TrainingOptions",
    "add_training_arguments",
    "distribute_dataset",
    "epoch_shuffled",
    "is_chief",
    "per_replica_batch_size",
    "read_tf_config",
    "select_strategy",
]
