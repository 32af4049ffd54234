"""One image decoder for training (the image-folder loader) and prediction (``minicnn
predict``): EXIF orientation, 16-bit, palette, alpha and grey <-> RGB, read the same way."""

import numpy as np
import pytest
from PIL import Image

from minicnn.data import decode_image, load_image_folder
from minicnn.data.images import read_image
from minicnn.data.utils import to_float01


def marked(mode="L", size=(6, 4)):
    """A dark image (width 6, height 4) with one bright pixel at the top-left corner."""
    array = np.zeros(size[::-1], dtype=np.uint8)
    array[0, 0] = 255
    return Image.fromarray(array, "L").convert(mode)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.png"
    marked().save(path, exif=exif)
    upright = decode_image(path, (6, 4), 1)[0]  # displayed: 4 wide, 6 high
    assert upright.shape == (6, 4)
    assert upright[0, -1] == 255 and upright.sum() == 255  # top-left went to the top-right


def test_16_bit_palette_alpha_and_colour_conversions(tmp_path):
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(np.array([[0, 65535], [32896, 257]], dtype=np.uint16)).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    np.testing.assert_array_equal(decode_image(sixteen, (2, 2), 1)[0], [[0, 255], [128, 1]])

    palette = tmp_path / "palette.png"
    marked("RGB").convert("P").save(palette, transparency=0)
    assert decode_image(palette, (4, 6), 3)[:, 0, 0].tolist() == [255, 255, 255]

    alpha = tmp_path / "alpha.png"
    rgba = marked("RGBA")
    rgba.putalpha(128)
    rgba.save(alpha)
    assert decode_image(alpha, (4, 6), 3).shape == (3, 4, 6)  # alpha dropped

    colour = tmp_path / "colour.png"
    Image.new("RGB", (3, 3), (255, 0, 0)).save(colour)
    grey = decode_image(colour, (3, 3), 1)
    assert grey.shape == (1, 3, 3) and grey[0, 0, 0] == 76  # ITU-R 601 luma of pure red
    assert decode_image(sixteen, (2, 2), 3).shape == (3, 2, 2)  # grey -> RGB


def test_predict_reads_an_image_exactly_as_training_did(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        marked("RGB", (8, 8)).save(tmp_path / name / "photo.png", exif=exif)
    (x_train, _), _, _ = load_image_folder(tmp_path, size=(8, 8), channels=3, val_fraction=0.5,
                                          seed=0, cache=False, verbose=0)
    from_predict = read_image(tmp_path / "a" / "photo.png", (3, 8, 8))
    np.testing.assert_array_equal(from_predict, x_train[0])
    assert from_predict[:, -1, 0].tolist() == [1.0, 1.0, 1.0]  # rotated as displayed


def test_a_file_that_is_not_an_image_raises(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(OSError):
        decode_image(path, (4, 4), 1)


def test_to_float01_scales_to_unit_range():
    assert to_float01(np.array([0, 255], dtype=np.uint8)).tolist() == [0.0, 1.0]
