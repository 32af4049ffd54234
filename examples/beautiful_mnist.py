"""MNIST in plain code: the network, one training step and the loop, nothing hidden.

    python examples/beautiful_mnist.py              # 2 epochs: ~99.3% test accuracy
    python examples/beautiful_mnist.py --steps 20   # a quick look at 20 steps (what CI runs)
"""
import sys
import time

import numpy as np

import minicnn as mc
from minicnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

(x_train, y_train), (x_test, y_test), _ = mc.data.load_mnist()
mean, std = x_train.mean(), x_train.std()
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std  # zero mean, unit variance

model = mc.Sequential([  # three conv-BatchNorm-ReLU-pool blocks: 28 -> 14 -> 7 -> 3 pixels
    Conv2D(1, 16, 3, padding=1, bias=False), BatchNorm2D(16), ReLU(), MaxPool2D(2),
    Conv2D(16, 32, 3, padding=1, bias=False), BatchNorm2D(32), ReLU(), MaxPool2D(2),
    Conv2D(32, 64, 3, padding=1, bias=False), BatchNorm2D(64), ReLU(), MaxPool2D(2),
    Flatten(), Dense(64 * 3 * 3, 10),
], seed=0)  # bias=False: BatchNorm subtracts each channel's mean next, which cancels a bias
# label smoothing: targets of 0.955 / 0.005 reward no extreme logits; AdamW's lr only matters
# until the one-cycle schedule sets it on the first step (docs/usage.md: why these choices)
loss_fn = mc.losses.SoftmaxCrossEntropy(label_smoothing=0.05)
optimizer = mc.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=5e-4)
EPOCHS, BATCH = 2, 64
steps_per_epoch = int(sys.argv[2]) if sys.argv[1:2] == ["--steps"] else len(x_train) // BATCH
schedule = mc.optim.OneCycleLR(optimizer, max_lr=1.5e-2, total_steps=EPOCHS * steps_per_epoch,
                               pct_start=0.25)


def train_step(x, y):
    logits = model.forward(x, training=True)  # (B, 10) class scores
    loss = loss_fn.forward(logits, y)          # mean cross-entropy, a float
    optimizer.zero_grad()
    model.backward(loss_fn.backward())         # dL/dlogits back through every layer
    optimizer.step()                           # every W moves against its W.grad (AdamW)
    schedule.step()                            # the one-cycle learning rate, per step
    return loss


rng, start = np.random.default_rng(0), time.perf_counter()
for epoch in range(EPOCHS):
    order = rng.permutation(len(x_train))      # a new shuffle every epoch
    for step in range(steps_per_epoch):
        batch = order[step * BATCH:(step + 1) * BATCH]
        loss = train_step(x_train[batch], y_train[batch])
    accuracy = (model.predict(x_test).argmax(axis=1) == y_test).mean()
    print(f"epoch {epoch + 1}: loss {loss:.3f}, test accuracy {accuracy:.2%}, "
          f"{time.perf_counter() - start:.0f} s")
