"""Gaussian mixtures in the graph: diagonal-GMM EM over a `tf.data` pipeline and the Fisher
vector of descriptor sets under a fixed or learned GMM."""

from mmrep.heads.gmm.fisher_vector import FisherVector
from mmrep.heads.gmm.gmm_em import GMMFit, fit_diagonal_gmm

__all__ = ["FisherVector", "GMMFit", "fit_diagonal_gmm"]
