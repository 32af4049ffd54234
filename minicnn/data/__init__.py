"""Datasets, augmentation and mini-batches.

Every loader returns ``(x_train, y_train), (x_test, y_test), class_names`` with float32 NCHW
images in [0, 1] and int64 labels. Nothing is read, downloaded or compiled at import time.

- :func:`load_mnist`, :func:`load_fashion_mnist`: the IDX files (``minicnn.data.mnist``)
- :func:`load_cifar10`: the python-pickle batches, read safely (``minicnn.data.cifar``)
- :func:`load_digits`: scikit-learn's 8x8 digits
- :func:`load_image_folder`: your own images, one folder per class
- :data:`DATASETS`: each dataset's record (its loader, whether its split is drawn by a seed,
  whether flips keep the class, classes, channels); :func:`load_dataset`: any of them by name
- :func:`prepare_data`: a dataset normalized by its training images, with what a model file
  records about it; :func:`normalize_as_trained`: new images normalized as a model's were

Where the files are looked for (and downloaded to) is described in ``minicnn.data.sources``;
parsed arrays are cached as .npy (``minicnn.data.cache``).
"""

from .cifar import load_cifar10
from .digits import load_digits
from .idx import DatasetFileError, parse_idx, read_idx
from .image_folder import IMAGE_EXTENSIONS, load_image_folder
from .images import decode_image
from .loader import DataLoader
from .mnist import load_fashion_mnist, load_mnist
from .prepared import (
    PreparedData,
    class_names_of,
    normalize_as_trained,
    prepare_data,
    validation_split,
)
from .registry import BUILT_IN, DATASETS, Dataset, dataset, load_dataset
from .sources import DatasetNotFoundError, user_cache_dir
from .transforms import (
    Compose,
    Normalize,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    RandomScale,
    RandomTranslation,
    Transform,
    preview,
    shift_images,
    warp_affine,
)

__all__ = [
    "BUILT_IN", "DATASETS", "IMAGE_EXTENSIONS", "Compose", "DataLoader", "Dataset", "DatasetFileError",
    "DatasetNotFoundError", "Normalize", "PreparedData", "RandomAffine", "RandomCrop", "RandomHorizontalFlip",
    "RandomRotation", "RandomScale", "RandomTranslation", "Transform", "class_names_of", "dataset",
    "decode_image", "load_cifar10", "load_dataset", "load_digits", "load_fashion_mnist",
    "load_image_folder", "load_mnist", "normalize_as_trained", "parse_idx", "prepare_data", "preview",
    "read_idx", "shift_images", "user_cache_dir", "validation_split", "warp_affine",
]
