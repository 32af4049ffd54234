"""Every dataset minicnn knows, declared once: how to load it and what the rest of the library
needs to know about it (whether its split is drawn by a seed, whether mirrored images keep their
class, its classes and channels)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import image_folder
from .cifar import load_cifar10
from .digits import load_digits
from .image_folder import load_image_folder
from .mnist import load_fashion_mnist, load_mnist

COMMON_OPTIONS = ("seed", "size", "channels", "verbose")


@dataclass(frozen=True)
class Dataset:
    """A dataset's record.

    - ``loader``: returns ``(x_train, y_train), (x_test, y_test), class_names``; it takes the
      data folder first when ``takes_path`` (required when ``needs_path``: an image folder), and
      the keyword ``options`` named here (``seed``, ``size``, ``channels``, ``verbose``);
    - ``split``: ``"given"`` (the dataset comes with its test set), ``"seeded"`` (the test set is
      drawn from the images with a seed: a model file must record it) or ``"layout"`` (a folder
      decides: flat class folders are seeded, ``train/`` + ``test/`` given);
    - ``flips``: whether a mirrored image keeps its class (photos), which decides the
      augmentation (crops and flips; digits get small rotations, zooms and shifts instead);
    - ``classes``, ``channels``: fixed by the dataset, or None when a folder decides.
    """

    name: str
    loader: Callable
    options: tuple[str, ...] = ("verbose",)
    split: str = "given"
    flips: bool = False
    classes: int | None = 10
    channels: int | None = 1
    takes_path: bool = True
    needs_path: bool = False

    def load(self, path=None, **options):
        """Load it. Of the options every dataset can be asked (``COMMON_OPTIONS``), those this
        loader does not take, or given as None, are left out; any other keyword goes to the
        loader as it is (``download=``, ``cache=``...)."""
        if self.needs_path and path is None:
            raise ValueError(f"the {self.name!r} dataset needs the image folder as path "
                             "(--data-dir DIR)")
        kwargs = {k: v for k, v in options.items()
                  if k not in COMMON_OPTIONS or (k in self.options and v is not None)}
        return self.loader(path, **kwargs) if self.takes_path else self.loader(**kwargs)

    def split_is_drawn(self, path=None) -> bool:
        """Whether the test images are drawn with a seed (so a model must record which)."""
        if self.split == "layout":
            return image_folder.split_is_drawn(path)
        return self.split == "seeded"


DATASETS = {d.name: d for d in (
    Dataset("mnist", load_mnist),
    Dataset("fashion-mnist", load_fashion_mnist),
    Dataset("cifar10", load_cifar10, flips=True, channels=3),
    Dataset("digits", load_digits, options=("seed",), split="seeded", takes_path=False),
    Dataset("folder", load_image_folder, options=("seed", "size", "channels", "verbose"),
            split="layout", flips=True, classes=None, channels=None, needs_path=True),
)}
#: the datasets that come with their files (the command line's --dataset; a folder is
#: --image-folder)
BUILT_IN = tuple(name for name, d in DATASETS.items() if not d.needs_path)
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashion": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10", "image-folder": "folder", "image_folder": "folder", "images": "folder"}


def dataset(name: str) -> Dataset:
    """The record of dataset ``name`` (aliases such as ``cifar-10`` accepted)."""
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def load_dataset(name: str, path=None, **kwargs):
    """Load a dataset by name: ``(x_train, y_train), (x_test, y_test), class_names``.

    ``name`` is one of ``mnist``, ``fashion-mnist``, ``cifar10``, ``digits`` or ``folder`` (your
    own images; then ``path`` is the image folder and is required). ``path`` is the data folder
    (the CLI's ``--data-dir``); ``digits`` has no files and ignores it. Other keyword arguments go
    to the loader (``download=``, ``cache=``, ``size=``...).
    """
    return dataset(name).load(path, **kwargs)
