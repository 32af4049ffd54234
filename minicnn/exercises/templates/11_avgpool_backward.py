"""Exercise 11: the backward pass of average pooling.

Forward, for x of shape (N, C, H, W), windows of KH x KW moved by (SH, SW):

    y[n, c, oh, ow] = 1/(KH*KW) * sum over i < KH, j < KW of x[n, c, oh*SH + i, ow*SW + j]

Backward: y is a sum scaled by 1/(KH*KW), so every element of a window has the same slope,
1/(KH*KW), whatever its value (unlike max pooling, x is not needed: only its shape).

Two things to get right, as in exercise 4:
- windows overlap when the stride is smaller than the kernel: a pixel then collects a share
  from every window it is in;
- windows can leave pixels out (a stride larger than the kernel, or rows and columns left over
  at the end): no window used them, so their gradient is 0.

Check your answer:  minicnn exercises check avgpool_backward
"""

import numpy as np  # noqa: F401


def avgpool_backward(dy, x_shape, kernel, stride):
    """Return dx of shape ``x_shape`` = (N, C, H, W) for average pooling with ``kernel`` =
    (KH, KW) and ``stride`` = (SH, SW), given dy = dL/dy of shape (N, C, OH, OW)."""
    # TODO: share each window's dy among its elements
    raise NotImplementedError("TODO: avgpool_backward")
