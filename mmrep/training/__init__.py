"""Training at scale: strategy selection, distributed input, fault tolerance, precision.

The same script runs on one CPU, several GPUs, many workers or a TPU: `select_strategy`
reads the environment, `distribute_dataset` shards input with per-replica batches,
`BackupAndRestore` resumes a killed run from its last atomic backup, and
`TrainingOptions` turns `--precision` / `--jit-compile` flags into a dtype policy and
compile arguments.
"""

from mmrep.lazy_exports import lazy_getattr

# Public name -> module inside mmrep.training.
_EXPORTS = {
    "select_strategy": "strategy",
    "is_chief": "strategy",
    "read_tf_config": "strategy",
    "KerasMultiWorkerMirroredStrategy": "strategy",
    "distribute_dataset": "datasets",
    "per_replica_batch_size": "datasets",
    "epoch_shuffled": "epoch_shuffle",
    "BackupAndRestore": "backup",
    "BackupMismatchError": "backup",
    "EpochShuffled": "epoch_shuffle",
    "EpochCallback": "epoch_shuffle",
    "TrainingOptions": "options",
    "add_training_arguments": "option_arguments",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
