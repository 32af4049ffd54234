"""Mini-batches: shuffling that is exact to resume, augmentation on the fly, one prefetch thread."""

from __future__ import annotations

import queue
import threading

import numpy as np

from ..validation import is_int


class DataLoader:
    """Iterate over ``(x_batch, y_batch)`` mini-batches of arrays ``x`` (N, ...) and ``y`` (N,).

    Args:
        x, y: the samples and their labels, same length N (``y`` one label per sample).
        batch_size: samples per batch (> 0); the last batch may be smaller unless ``drop_last``.
        shuffle: visit the samples in a new random order every epoch.
        drop_last: leave out the last, incomplete batch.
        transform: augmentation ``t(x_batch, rng)`` (see :mod:`minicnn.data.transforms`), applied
            to every batch as it is produced; the labels are not touched.
        seed: everything random derives from it (a non-negative int).
        prefetch: with a transform, a background thread prepares up to this many batches ahead
            while the current one is used (numpy and Pillow release the GIL, so augmentation
            overlaps the training step). 0 prepares batches in the calling thread.

    Determinism and resuming: epoch ``k``'s order depends only on ``(seed, k)``, and the random
    numbers of batch ``b`` of epoch ``k`` only on ``(seed, k, b)``, so the batches are identical
    with or without prefetching and after a restart. Each ``iter(loader)`` (each ``for`` loop)
    runs epoch ``loader.epoch`` and advances it by one; ``set_epoch(k)`` chooses the epoch the
    next iteration runs. ``state_dict()`` / ``load_state_dict()`` save and restore the position,
    down to the batch within an epoch in progress.
    """

    def __init__(self, x, y, batch_size: int = 32, shuffle: bool = True, drop_last: bool = False,
                 transform=None, seed: int = 0, prefetch: int = 2):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1:
            raise ValueError("DataLoader: x must be an array of samples (N, ...), got a scalar")
        if y.ndim != 1:
            raise ValueError(f"DataLoader: y must be 1-D (one label per sample), got shape {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"DataLoader: x has {len(x)} samples but y has {len(y)} labels")
        if x.dtype.kind not in "biuf":  # object arrays, strings: not images
            raise TypeError(f"DataLoader: x must be a numeric array (float images), got dtype {x.dtype}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"DataLoader: y must hold integer class labels, got dtype {y.dtype}")
        if not is_int(batch_size) or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"DataLoader: seed must be a non-negative int, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable as t(x, rng), got {transform!r}")
        if not is_int(prefetch) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be a non-negative int, got {prefetch!r}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.transform, self.seed, self.prefetch = transform, int(seed), int(prefetch)
        self.epoch = 0  # the epoch the next iteration runs
        self._start_batch = 0  # ... and the batch it starts at (after load_state_dict)
        self._position: list[int] | None = None  # [epoch, batches handed out] while iterating

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n, bs = len(self.x), self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def __repr__(self):
        return (f"DataLoader({self.num_samples} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, transform={self.transform!r}, "
                f"seed={self.seed}, epoch={self.epoch})")

    # ------------------------------------------------------------------ resume

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration run epoch ``epoch``, starting at batch ``start_batch``."""
        if not is_int(epoch) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be a non-negative int, got {epoch!r}")
        if not is_int(start_batch) or not 0 <= start_batch <= len(self):
            raise ValueError(
                f"DataLoader.set_epoch: start_batch must be in 0..{len(self)}, got {start_batch!r}"
            )
        self.epoch, self._start_batch = int(epoch), int(start_batch)

    def state_dict(self) -> dict:
        """Where to resume: the epoch and the number of its batches already handed out.

        During an iteration this is the epoch in progress (``start_batch`` counts the batches
        yielded so far, so save it after the step that used the last one); between epochs it is
        the next epoch with ``start_batch`` 0. The seed and batching are included to check on load.
        """
        epoch, start = self._position if self._position is not None else (self.epoch, self._start_batch)
        return {"epoch": int(epoch), "start_batch": int(start), "seed": self.seed,
                "num_samples": self.num_samples, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``; refuses a state made with another seed or batching."""
        for key in ("seed", "num_samples", "batch_size", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"DataLoader.load_state_dict: the state has {key}={state[key]!r} but this "
                                 f"loader has {getattr(self, key)!r}; the batches would not match")
        self._position = None
        self.set_epoch(state["epoch"], state.get("start_batch", 0))

    # ------------------------------------------------------------------ batches

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch``: a function of (seed, epoch) only."""
        n = len(self.x)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, 0, int(epoch)]).permutation(n)

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None):
        """Batch ``index`` of ``epoch``, exactly as the iteration produces it."""
        if order is None:
            order = self.order(epoch)
        idx = order[index * self.batch_size:(index + 1) * self.batch_size]
        xb, yb = self.x[idx], self.y[idx]
        if self.transform is not None:
            xb = self.transform(xb, np.random.default_rng([self.seed, 1, int(epoch), int(index)]))
        return xb, yb

    def __iter__(self):
        epoch, start = self.epoch, self._start_batch
        self.epoch, self._start_batch = epoch + 1, 0
        self._position = [epoch, start]
        if self.transform is not None and self.prefetch > 0 and start < len(self):
            return self._prefetched(epoch, start)
        return self._inline(epoch, start)

    def _inline(self, epoch: int, start: int):
        order = self.order(epoch)
        for index in range(start, len(self)):
            item = self.batch(epoch, index, order)
            self._advance(epoch, index)
            yield item
        self._finish(epoch)

    def _prefetched(self, epoch: int, start: int):
        order = self.order(epoch)
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():  # time out regularly so an abandoned loop lets the thread end
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for index in range(start, len(self)):
                    if not put(("batch", self.batch(epoch, index, order))):
                        return
                put(("done", None))
            except BaseException as err:  # handed to the consumer, which re-raises it
                put(("error", err))

        thread = threading.Thread(target=work, name="minicnn-prefetch", daemon=True)
        thread.start()
        try:
            index = start
            while True:
                kind, payload = ready.get()
                if kind == "done":
                    break
                if kind == "error":
                    raise payload
                self._advance(epoch, index)
                index += 1
                yield payload
            self._finish(epoch)
        finally:
            stop.set()
            thread.join()

    def _advance(self, epoch: int, index: int) -> None:
        if self._position is not None and self._position[0] == epoch:
            self._position[1] = index + 1

    def _finish(self, epoch: int) -> None:
        if self._position is not None and self._position[0] == epoch:
            self._position = None


