"""Exercise 4: the backward pass of max pooling.

Forward, for x of shape (N, C, H, W), windows of KH x KW moved by (SH, SW):

    y[n, c, oh, ow] = max over i < KH, j < KW of x[n, c, oh*SH + i, ow*SW + j]

Backward: inside one window, max is the identity on the winning element (slope 1) and flat in
the others (slope 0). So each window's dy[n, c, oh, ow] goes to its winner, and nowhere else.

Two things to get right:
- when several elements of a window tie for the maximum, the forward pass still returned one
  value: give the gradient to one of them, the first (np.argmax returns the first), as minicnn
  and PyTorch do; the cases have many ties;
- when windows overlap (stride smaller than the kernel), one element can win several windows:
  it must collect all of their gradients.

Check your answer:  minicnn exercises check maxpool_backward
"""

import numpy as np  # noqa: F401


def maxpool_backward(x, dy, kernel, stride):
    """Return dx (shaped like x) for max pooling of x with ``kernel`` = (KH, KW) and
    ``stride`` = (SH, SW), given dy = dL/dy of shape (N, C, OH, OW)."""
    # TODO: route each window's dy to its winner
    raise NotImplementedError("TODO: maxpool_backward")
