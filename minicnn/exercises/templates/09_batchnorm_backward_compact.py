"""Exercise 9: BatchNorm's backward pass in the compact form the layer uses.

Start from your three paths of exercise 8 (with dxhat = dy * gamma and sums over (N, H, W) per
channel):

    dx = dxhat / sigma                                   (1) directly
       + dmu / M,  dmu = -sum(dxhat) / sigma             (2) through the mean
       + dvar * 2 (x - mu) / M,
         dvar = sum(dxhat * (x - mu)) * -1/2 * sigma**-3 (3) through the variance

Substitute x - mu = sigma * xhat in (2) and (3), and collect everything over the common factor
gamma / (M * sigma). The result uses only dy, xhat and the two sums you already have for
dbeta and dgamma: it is one line of NumPy.

Check your answer:  minicnn exercises check batchnorm_backward_compact
"""

import numpy as np  # noqa: F401


def batchnorm_backward_compact(x, gamma, dy, eps):
    """Return (dx, dgamma, dbeta) like exercise 8, with dx in one expression."""
    # TODO: the compact form
    raise NotImplementedError("TODO: batchnorm_backward_compact")
