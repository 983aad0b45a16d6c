"""Heads over encoder or fusion outputs: VAEs (Gaussian, beta, conditional, mixture prior,
product of experts) and Fisher-vector pooling (GMM Fisher vectors, NetVLAD family).
"""

__all__ = []
