"""Exercise 5: im2col, the layout that turns a convolution into one matrix multiply.

A convolution computes, for every output pixel, a dot product of the filter with one window
of the (zero-padded) input. im2col copies every window into a column, so that all the dot
products become one product W2 @ cols with W2 = W.reshape(F, C*KH*KW).

For x of shape (N, C, H, W), a kernel (KH, KW), stride (SH, SW) and padding (PH, PW):

    xpad = x with PH zero rows above and below and PW zero columns left and right
    OH = (H + 2*PH - KH) // SH + 1,  OW = (W + 2*PW - KW) // SW + 1
    cols has shape (C*KH*KW, N*OH*OW):
    cols[c*KH*KW + i*KW + j, n*OH*OW + oh*OW + ow] = xpad[n, c, oh*SH + i, ow*SW + j]

The row order (c, i, j) must match W.reshape(F, -1); the column order (n, oh, ow) is how
minicnn lays out the output. Loops over every index work; a strided slice per (c, i, j) is
faster (see the hints).

Check your answer:  minicnn exercises check im2col
"""

import numpy as np  # noqa: F401


def im2col(x, kernel, stride, padding):
    """Return cols of shape (C*KH*KW, N*OH*OW) as defined above."""
    # TODO: pad, then copy every window into a column
    raise NotImplementedError("TODO: im2col")
