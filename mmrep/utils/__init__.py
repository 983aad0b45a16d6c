"""Small helpers every stage may import: argument checks, finite-input checks, masks,
power normalisation, per-example gradients, running moments, sample batching, and the
modality order with its presence-mask checks.

Nothing here imports another mmrep stage. Import the module you need
(`from mmrep.utils.arguments import check_int`); this package imports nothing itself, so
the light ones stay light.
"""
