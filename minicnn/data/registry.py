"""Datasets by name, for the command line and for code that takes the name as a string."""

from __future__ import annotations

from .cifar import load_cifar10
from .digits import load_digits
from .image_folder import load_image_folder
from .mnist import load_fashion_mnist, load_mnist

DATASETS = {
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "digits": load_digits,
    "folder": load_image_folder,
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashion": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10", "image-folder": "folder", "image_folder": "folder", "images": "folder"}


def load_dataset(name: str, path=None, **kwargs):
    """Load a dataset by name: ``(x_train, y_train), (x_test, y_test), class_names``.

    ``name`` is one of ``mnist``, ``fashion-mnist``, ``cifar10``, ``digits`` or ``folder`` (your
    own images; then ``path`` is the image folder and is required). ``path`` is the data folder
    (the CLI's ``--data-dir``); ``digits`` has no files and ignores it. Other keyword arguments go
    to the loader (``download=``, ``cache=``, ``size=``...).
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if key == "digits":
        return load_digits(**kwargs)
    if key == "folder":
        if path is None:
            raise ValueError("the 'folder' dataset needs the image folder as path (--data-dir DIR)")
        return load_image_folder(path, **kwargs)
    return DATASETS[key](path, **kwargs)
