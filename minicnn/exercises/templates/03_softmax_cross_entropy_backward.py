"""Exercise 3: the gradient of softmax cross-entropy with respect to the logits.

Forward, for logits z of shape (N, K) and integer labels of shape (N,):

    p[n] = softmax(z[n]),  p[n, i] = exp(z[n, i]) / sum_k exp(z[n, k])
    L = -(1/N) * sum_n log p[n, labels[n]]

For one sample, with t the one-hot vector of its label:

- the softmax's Jacobian is dp_i/dz_j = p_i * (delta_ij - p_j);
- the loss's slope with respect to p is dL/dp_i = -t_i / p_i;
- the chain rule sums over every p_i that z_j moves: dL/dz_j = sum_i dL/dp_i * dp_i/dz_j.

Finish the sum (t sums to 1), then remember the mean over the batch. Two practical points: the
cases include logits of about 1000, where exp overflows (softmax(z) = softmax(z - max z)), and
you never need to build the K x K Jacobian.

Check your answer:  minicnn exercises check softmax_cross_entropy_backward
"""

import numpy as np  # noqa: F401


def softmax_cross_entropy_backward(logits, labels):
    """Return dL/dlogits, shape (N, K), for the mean softmax cross-entropy above."""
    # TODO: finish the chain rule
    raise NotImplementedError("TODO: softmax_cross_entropy_backward")
