"""Exercise 1: the backward pass of a Dense (fully connected) layer.

Forward, for a batch of N samples with D features each, and K outputs:

    z = x @ W + b          x (N, D), W (D, K), b (K,), z (N, K)
    z[n, k] = sum_d x[n, d] * W[d, k] + b[k]

Backward: you receive dy = dL/dz, shape (N, K), the gradient of the loss with respect to this
layer's output (the loss already took its mean over the batch: dy holds the 1/N). By the chain
rule, each input of the formula above receives dy times the slope of z with respect to it,
summed over every z it touched:

- W[d, k] appears in z[n, k] for every sample n, with slope x[n, d];
- b[k] appears in z[n, k] for every n, with slope 1;
- x[n, d] appears in z[n, k] for every output k, with slope W[d, k].

Write the three sums as matrix products. Each gradient has the shape of what it is the gradient
of: dx like x, dW like W, db like b.

Check your answer:  minicnn exercises check dense_backward
A hint:             minicnn exercises check dense_backward --hint
"""

import numpy as np  # noqa: F401  (you will want it)


def dense_backward(x, W, dy):
    """Return (dx, dW, db) for z = x @ W + b, given dy = dL/dz.

    x: (N, D), W: (D, K), dy: (N, K) -> dx (N, D), dW (D, K), db (K,)
    """
    # TODO: write dx, dW and db
    raise NotImplementedError("TODO: dense_backward")
