"""Exercise 12: one step of SGD with momentum.

Plain SGD moves every weight against its gradient: w <- w - lr * grad. Momentum gives the step
a memory: a velocity that adds up the gradients, each older one weighed down by a factor
momentum (0.9 is usual), so steps that agree add up and steps that zig-zag cancel:

    velocity <- momentum * velocity + grad
    w        <- w - lr * velocity

The velocity starts at zero. This is minicnn's and PyTorch's convention (the velocity holds
gradients, not steps: a learning-rate schedule that changes lr takes effect at once).

The optimizer stores what you return, for this weight, until the next step: return new arrays
(w, velocity), and leave the arguments as they are.

Check your answer:  minicnn exercises check sgd_momentum_step
"""

import numpy as np  # noqa: F401


def sgd_momentum_step(w, grad, velocity, lr, momentum):
    """Return (w, velocity) after one step of SGD with momentum."""
    # TODO: the new velocity, then the new w
    raise NotImplementedError("TODO: sgd_momentum_step")
