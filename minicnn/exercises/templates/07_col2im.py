"""Exercise 7: col2im, the backward of im2col.

im2col copied xpad[n, c, oh*SH + i, ow*SW + j] into cols[c*KH*KW + i*KW + j, n*OH*OW + oh*OW +
ow] (exercise 5). A copy's gradient goes back to where it was copied from: given dcols (the
gradient of every copy, shape (C*KH*KW, N*OH*OW)), build dx of shape x_shape.

- A pixel that sits in several windows was copied several times: its gradient is the sum of
  its copies' gradients (windows overlap when the stride is smaller than the kernel).
- Copies of the zero padding send their gradient into the padding, which is not part of x:
  accumulate into a padded array, then cut the padding off.

Check your answer:  minicnn exercises check col2im
"""

import numpy as np  # noqa: F401


def col2im(dcols, x_shape, kernel, stride, padding):
    """Return dx of shape ``x_shape`` = (N, C, H, W) from dcols (C*KH*KW, N*OH*OW)."""
    # TODO: send every entry of dcols back to its pixel
    raise NotImplementedError("TODO: col2im")
