"""Exercise 13: one step of Adam, with its bias correction.

Adam keeps two running means per weight: m of the gradient, v of its square. It steps by
m / sqrt(v): the gradient's direction, on a scale of its typical size, so every weight moves
by about lr whatever the size of its gradients.

    m <- beta1 * m + (1 - beta1) * grad
    v <- beta2 * v + (1 - beta2) * grad**2

m and v start at 0. After t steps m is a weighted sum of t gradients whose weights add up to
1 - beta1**t, not 1: early on m (and v, with beta2) is too small. Dividing by those sums
corrects it:

    m_hat = m / (1 - beta1**t),   v_hat = v / (1 - beta2**t)
    w <- w - lr * m_hat / (sqrt(v_hat) + eps)

t is the number of this step: 1 on the first. eps (1e-8 usually) keeps the division finite.

Return new arrays (w, m, v), the running means as updated (the optimizer keeps them for the
next step), and leave the arguments as they are.

Check your answer:  minicnn exercises check adam_step
"""

import numpy as np  # noqa: F401


def adam_step(w, grad, m, v, t, lr, beta1, beta2, eps):
    """Return (w, m, v) after step number ``t`` of Adam."""
    # TODO: the running means, their correction, then the step
    raise NotImplementedError("TODO: adam_step")
