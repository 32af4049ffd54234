"""Exercise 6: the convolution's backward pass through the columns.

With cols = im2col(x) of shape (C*KH*KW, P), P = N*OH*OW, and W2 = W.reshape(F, C*KH*KW), the
convolution is one matrix product:

    out = W2 @ cols          (F, P): out[f, p] = sum_r W2[f, r] * cols[r, p]

(out is then laid out as (N, F, OH, OW) and the bias added; that part is exercise-free.)

Backward: you receive dout = dL/dout, shape (F, P). This is exercise 1 again, in disguise:
every column p is a "sample". Find dW2 (W2's shape; each weight was used once per column) and
dcols (cols' shape; col2im, the next exercise, turns it into dx).

Check your answer:  minicnn exercises check conv_backward_cols
"""

import numpy as np  # noqa: F401


def conv_backward_cols(cols, W2, dout):
    """Return (dW2, dcols) for out = W2 @ cols, given dout = dL/dout."""
    # TODO: two matrix products
    raise NotImplementedError("TODO: conv_backward_cols")
