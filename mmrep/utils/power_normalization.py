"""Power and L2 normalisation of pooled features, shared by the pooling layers and fusion.

The "improved" normalisation of Perronnin, Sánchez & Mensink ("Improving the Fisher Kernel
for Large-Scale Image Classification", ECCV 2010): the signed square root `sign(z) sqrt(|z|)`
evens out bursty components, then L2 normalisation makes the vector's dot product a
similarity. Used by the Fisher vector, the NetVLAD family and bilinear pooling (Lin et al.
2015), which all pool sums of outer products or residuals.
"""

from keras import ops

# Inside the square roots, so that zeros (an empty set, an unused cluster) stay zero with
# finite gradients.
EPSILON = 1e-12


def signed_sqrt(x):
    """`sign(x) * sqrt(|x| + 1e-12)`, elementwise."""
    return ops.sign(x) * ops.sqrt(ops.abs(x) + EPSILON)


def l2_normalize(x, axis=-1):
    """`x / sqrt(max(||x||², 1e-12))` along `axis`: all-zero blocks stay zero."""
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squares, EPSILON))
