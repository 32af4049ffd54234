"""Exercise 10: the convolution's forward pass, through im2col.

A convolution of x (N, C, H, W) with F filters W (F, C, KH, KW), a bias b (F,), stride (SH, SW)
and padding (PH, PW) computes, for every filter f and output pixel (n, oh, ow):

    y[n, f, oh, ow] = b[f] + sum over c, i, j of W[f, c, i, j] * xpad[n, c, oh*SH + i, ow*SW + j]

im2col (exercise 5) copied every window into a column, in the order (c, i, j) down a column and
(n, oh, ow) across. So with W2 = W.reshape(F, C*KH*KW), one row per filter, all those sums are
one matrix product:

    out = W2 @ cols + b[:, None]        (F, N*OH*OW): row f, column n*OH*OW + oh*OW + ow

What is left is the layout: minicnn's images are (N, F, OH, OW). Think about which axis of out
holds what before you reshape.

im2col is imported below (the reference one; yours from exercise 5 computes the same).

Check your answer:  minicnn exercises check conv_forward
"""

import numpy as np  # noqa: F401

from minicnn.exercises.solutions import im2col  # noqa: F401


def conv_forward(x, W, b, stride, padding):
    """Return y of shape (N, F, OH, OW) for the convolution defined above."""
    # TODO: im2col, one matrix product, the bias, then the layout
    raise NotImplementedError("TODO: conv_forward")
