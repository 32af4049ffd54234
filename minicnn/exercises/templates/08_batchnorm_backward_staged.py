"""Exercise 8: BatchNorm's backward pass, one path at a time.

Forward (training), per channel c over its M = N*H*W values:

    mu = mean(x)                        over (N, H, W)
    var = mean((x - mu)**2)             (the biased variance)
    sigma = sqrt(var + eps)
    xhat = (x - mu) / sigma
    y = gamma[c] * xhat + beta[c]

Backward, with dy = dL/dy of x's shape and sums over (N, H, W) per channel:

- dbeta = sum(dy), dgamma = sum(dy * xhat), both of shape (C,);
- dxhat = dy * gamma[c].

Now dx. mu and var are computed from every x of the channel, so each x reaches the loss through
three paths, and its gradient is the sum of the three:

1. directly through xhat = (x - mu) / sigma, with mu and sigma held fixed;
2. through mu: mu appears in every xhat with slope -1/sigma, and dmu/dx = 1/M;
3. through var: var appears in every xhat through sigma (d sigma^-1 / d var = -1/2 sigma^-3),
   and dvar/dx = 2 (x - mu) / M.

Write the three terms separately and add them (exercise 9 turns the sum into one line).

Check your answer:  minicnn exercises check batchnorm_backward_staged
"""

import numpy as np  # noqa: F401


def batchnorm_backward_staged(x, gamma, dy, eps):
    """Return (dx, dgamma, dbeta) for BatchNorm in training mode; x and dy (N, C, H, W),
    gamma (C,)."""
    # TODO: dbeta, dgamma, then the three paths of dx
    raise NotImplementedError("TODO: batchnorm_backward_staged")
