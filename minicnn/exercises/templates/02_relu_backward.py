"""Exercise 2: the backward pass of ReLU.

Forward: y = max(x, 0), element by element, any shape.

Backward: y depends on x element by element, so dx = dy * (the slope of max(x, 0) at x).
The slope is 1 where x > 0 and 0 where x < 0. At exactly x = 0, max(x, 0) has a kink: it has no
derivative there, and the convention (PyTorch's, minicnn's) is to take 0. The cases include
exact zeros.

Check your answer:  minicnn exercises check relu_backward
"""

import numpy as np  # noqa: F401


def relu_backward(x, dy):
    """Return dx for y = max(x, 0), given the forward input x and dy = dL/dy (same shape)."""
    # TODO: dx = dy * slope
    raise NotImplementedError("TODO: relu_backward")
