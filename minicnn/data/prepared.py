"""A dataset made ready to train on, and the same normalization applied again later.

:func:`prepare_data` loads a dataset (:data:`minicnn.data.DATASETS`) and normalizes it by its
training images, keeping what a model file must record about it (classes, input shape,
normalization, the train/test split): ``minicnn train``, ``minicnn tune --retrain-best`` and the
studio's training run all start from it. :func:`normalize_as_trained` normalizes new images
(``minicnn evaluate``, ``predict``, the studio) the way a model's training images were;
:func:`as_seen` undoes it for display (the report's figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registry import dataset as dataset_record
from .splits import split_record
from .transforms import Normalize
from .utils import stratified_split


@dataclass
class PreparedData:
    """A dataset ready to train on: normalized by its training images' statistics, with what a
    model file records about it (:meth:`metadata`)."""

    dataset: str
    train: tuple  # (x, y), normalized
    test: tuple  # (x, y), normalized
    class_names: list
    normalize: Normalize  # fitted on the training images
    split: dict  # split_record(): which test images, so evaluation can draw them again

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train[0].shape[1:])

    def metadata(self) -> dict:
        """What a model trained on these data records in its file: ``minicnn evaluate``,
        ``predict``, ``explain`` and the studio read it."""
        return {"class_names": list(self.class_names), "input_shape": list(self.input_shape),
                "dataset": self.dataset,
                "normalization": {"mean": self.normalize.mean.tolist(),
                                  "std": self.normalize.std.tolist()},
                "split": self.split}


def prepare_data(dataset: str, data_dir=None, *, seed: int = 0, limit: int | None = None,
                 limit_test: bool = True, image_size=None, channels=None, verbose: int = 1,
                 loaded=None) -> PreparedData:
    """Load ``dataset`` (or take ``loaded``, what its loader returned) and normalize it by its
    training images. ``limit`` keeps the first ``limit`` training images (and test images, with
    ``limit_test``); the split record always describes the whole test set, which is what
    evaluation draws again."""
    (x_train, y_train), (x_test, y_test), class_names = loaded or dataset_record(dataset).load(
        data_dir, size=image_size, channels=channels, seed=seed, verbose=verbose)
    split = split_record(dataset, data_dir, seed, x_test, y_test)
    if limit is not None:  # a quick run: at most `limit` training (and test) images
        x_train, y_train = x_train[:limit], y_train[:limit]
        if limit_test:
            x_test, y_test = x_test[:limit], y_test[:limit]
    normalize = Normalize.fit(x_train)
    return PreparedData(dataset, (normalize(x_train, None), y_train),
                        (normalize(x_test, None), y_test), list(class_names), normalize, split)


def validation_split(x, y, fraction: float, seed: int, where: str = "tune"):
    """``(x, y)`` to train on and ``(x, y)`` held out for validation: stratified, drawn with
    ``seed`` from the labels alone, both normalized by the part that is trained on (as they
    would be in use)."""
    keep, held = stratified_split(y, fraction, seed)
    if len(held) == 0 or len(keep) == 0:
        raise ValueError(f"{where}: {len(y)} training images are too few to hold out "
                         f"{fraction:.0%} for validation")
    normalize = Normalize.fit(x[keep])
    return (normalize(x[keep], None), y[keep]), (normalize(x[held], None), y[held])


def normalize_as_trained(x, metadata):
    """Normalize images the way a model's training data was: its metadata (written by
    :meth:`PreparedData.metadata`) records the per-channel mean and std. Unchanged when it
    records none."""
    norm = (metadata or {}).get("normalization")
    if not norm:
        return x
    return Normalize(norm["mean"], norm["std"])(x, None)


def class_names_of(metadata, count: int, given=None) -> list[str]:
    """The class names to show, as strings: ``given``, else those a model's metadata records,
    else "0", "1", ... (``count`` of them)."""
    names = given if given is not None else (metadata or {}).get("class_names")
    return [str(c) for c in names] if names else [str(i) for i in range(count)]


def as_seen(x, metadata) -> np.ndarray:
    """Images as a person sees them, float64 in [0, 1]: the normalization a model's metadata
    records undone (the inverse of :func:`normalize_as_trained`); where it records none and the
    values leave [0, 1], each image stretched to it."""
    x = np.asarray(x, dtype=np.float64)
    norm = (metadata or {}).get("normalization")
    if norm:
        mean = np.asarray(norm["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
        std = np.asarray(norm["std"], dtype=np.float64).reshape(1, -1, 1, 1)
        x = x * std + mean
    elif x.size and (x.min() < 0 or x.max() > 1):  # unknown scaling: stretch each image
        low = x.min(axis=(1, 2, 3), keepdims=True)
        span = x.max(axis=(1, 2, 3), keepdims=True) - low
        x = (x - low) / np.where(span > 0, span, 1)
    return np.clip(x, 0.0, 1.0)
