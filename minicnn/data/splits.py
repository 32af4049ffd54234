"""Which images a model was tested on: the train/test split a model file records.

MNIST, Fashion-MNIST, CIFAR-10 and folders with train/ and test/ sub-folders come with their test
set. digits and flat image folders are *split* by a seed (their record in ``DATASETS`` says so):
evaluating such a model on a split drawn with another seed would score images it was trained on.
So a model file records its split (the seed and a fingerprint of the held-out images), and
evaluation draws exactly that split again.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .registry import dataset as dataset_record


class SplitMismatchError(ValueError):
    """The held-out images a model was tested on cannot be drawn again."""


def held_out_fingerprint(x_test, y_test) -> str:
    """SHA-256 of the held-out images and labels (their bytes, in order)."""
    digest = hashlib.sha256(np.ascontiguousarray(x_test).tobytes())
    digest.update(np.ascontiguousarray(y_test, dtype=np.int64).tobytes())
    return digest.hexdigest()


def split_record(dataset: str, data_dir, seed: int, x_test, y_test) -> dict:
    """What a model file keeps of its train/test split (``metadata["split"]``)."""
    return {"drawn": dataset_record(dataset).split_is_drawn(data_dir), "seed": int(seed),
            "test_images": int(len(y_test)), "test_sha256": held_out_fingerprint(x_test, y_test)}


def load_test_data(dataset: str, data_dir, metadata: dict, verbose: int = 1):
    """``(x_test, y_test, class_names)`` to score a model with ``metadata`` on ``dataset``.

    On the model's own dataset, when that dataset's split is drawn (digits, a flat image folder),
    this is exactly the held-out part of the split the model was trained beside: drawn again with
    the recorded seed and checked against the recorded fingerprint. A model that does not record
    its split, or whose held-out images cannot be drawn again (the files changed, another flat
    folder), raises :class:`SplitMismatchError`: scoring it would count images it was trained on.
    """
    record = dataset_record(dataset)
    shape = metadata.get("input_shape") or [3, 32, 32]  # an image folder is read at this size

    def held_out(seed=0):
        _, (x_test, y_test), names = record.load(data_dir, size=tuple(shape[1:]),
                                                 channels=shape[0], seed=seed, verbose=verbose)
        return x_test, y_test, names

    if not (record.split_is_drawn(data_dir) and dataset == metadata.get("dataset")):
        return held_out()
    split = metadata.get("split")
    where = "this image folder" if record.needs_path else dataset
    if not isinstance(split, dict) or not isinstance(split.get("seed"), int):
        raise SplitMismatchError(
            f"the model file does not record the train/test split it was trained with, and "
            f"{where} is split by a seed: its held-out images cannot be told apart from its "
            "training images. Retrain it with this version of minicnn (model files now record "
            "the split), or evaluate on a test set of its own (a folder with train/ and test/).")
    x_test, y_test, names = held_out(split["seed"])
    if held_out_fingerprint(x_test, y_test) != split.get("test_sha256"):
        raise SplitMismatchError(
            f"the held-out images of {where}, drawn again with the model's seed "
            f"{split['seed']}, are not the {split.get('test_images', '?')} images it was tested "
            "on (files added, removed or changed, or another folder): some of them may have been "
            "trained on. Evaluate on a folder with train/ and test/ sub-folders instead, whose "
            "test images are scored as they are.")
    return x_test, y_test, names
