"""Bad input gets a clear error naming the layer and the expected vs actual shape or value."""

import numpy as np
import pytest

import minicnn as mc
from minicnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
)
from minicnn.losses import SoftmaxCrossEntropy


def mnist_like_model():
    return mc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                          Dense(4 * 14 * 14, 10)], seed=0)


def test_wrong_number_of_channels():
    with pytest.raises(ValueError, match=r"Conv2D.*1 channels.*\(N, 1, H, W\).*got 3 channels"):
        Conv2D(1, 4, 3).forward(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2D\).*expected input with 1 channels"):
        mnist_like_model().forward(np.zeros((2, 3, 28, 28), np.float32))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"Conv2D: expected input of shape \(N, 1, H, W\), got a 3-D"):
        Conv2D(1, 4, 3).forward(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"Dense: expected a 2-D input of shape \(N, 5\).*Flatten"):
        Dense(5, 2).forward(np.zeros((2, 5, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2D: expected input of shape \(N, 3, H, W\)"):
        BatchNorm2D(3).forward(np.zeros((2, 3), np.float32))


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"Conv2D: kernel 5x5 is larger than the padded input 4x4"):
        Conv2D(1, 1, 5, padding=1).forward(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2D: pooling window 2x2 is larger than the input 1x1"):
        MaxPool2D(2).forward(np.zeros((1, 1, 1, 1), np.float32))


def test_image_too_small_for_the_network_names_the_layer():
    model = mc.Sequential([Conv2D(1, 2, 3), MaxPool2D(2), Conv2D(2, 2, 3)], seed=0)
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2D\).*kernel 3x3 is larger"):
        model.forward(np.zeros((1, 1, 6, 6), np.float32))


def test_spatial_size_mismatch_before_dense():
    with pytest.raises(ValueError, match=r"layer 4 \(Dense\).*expected input of shape \(N, 784\), "
                                         r"got \(N, 1024\)"):
        mnist_like_model().forward(np.zeros((1, 1, 32, 32), np.float32))


def test_mismatched_label_count():
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy: expected 4 labels of shape \(4,\)"):
        SoftmaxCrossEntropy().forward(np.zeros((4, 3), np.float32), np.array([0, 1, 2]))


def test_labels_out_of_range_or_not_integers():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\] for 3 classes.*to 3"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\].*from -1"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0, -1]))
    with pytest.raises(TypeError, match="labels must be integers, got dtype float"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_input(bad):
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"Conv2D: input contains NaN or infinite values"):
        Conv2D(1, 2, 3).forward(x)
    with pytest.raises(ValueError, match=r"Sequential \(first layer Conv2D\): input contains NaN"):
        mnist_like_model().forward(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        SoftmaxCrossEntropy().forward(np.array([[0.0, bad]]), np.array([0]))


@pytest.mark.parametrize("x", [np.zeros((2, 1, 4, 4), np.int64), np.zeros((2, 1, 4, 4), bool),
                               np.zeros((2, 1, 4, 4), np.float16),
                               np.zeros((2, 1, 4, 4), object)])
def test_non_float_dtypes_are_refused(x):
    with pytest.raises(TypeError, match=r"Conv2D: expected a float32 or float64 array, got dtype"):
        Conv2D(1, 1, 3).forward(x)


def test_non_array_input():
    with pytest.raises(TypeError, match="expected a float32 or float64 array, got list"):
        ReLU().forward([[1.0, 2.0]])


def test_backward_errors():
    conv = Conv2D(1, 2, 3)
    with pytest.raises(RuntimeError, match="Conv2D: backward\\(\\) called before forward\\(\\)"):
        conv.backward(np.zeros((1, 2, 2, 2), np.float32))
    conv.forward(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"shaped like the last output \(1, 2, 2, 2\), got \(1, 2, 2\)"):
        conv.backward(np.zeros((1, 2, 2), np.float32))


def test_constructor_arguments_are_validated():
    with pytest.raises(ValueError, match="Conv2D: stride must be >= 1"):
        Conv2D(1, 1, 3, stride=0)
    with pytest.raises(TypeError, match="Conv2D: kernel_size must be an int or a pair"):
        Conv2D(1, 1, (3, 3, 3))
    with pytest.raises(ValueError, match="Conv2D: padding must be >= 0"):
        Conv2D(1, 1, 3, padding=-1)
    with pytest.raises(ValueError, match=r"Dropout: p must be a probability in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(TypeError, match="item 1 is a str"):
        mc.Sequential([ReLU(), "relu"])


@pytest.mark.parametrize("lr", [-1.0, float("nan"), float("inf")])
def test_bad_learning_rates(lr):
    params = mc.Sequential([Dense(2, 2)], seed=0).parameters()
    with pytest.raises(ValueError, match="learning rate must be finite and >= 0"):
        mc.optim.SGD(params, lr=lr)
    opt = mc.optim.Adam(params)
    with pytest.raises(ValueError, match="learning rate must be finite and >= 0"):
        opt.lr = lr


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'tpu'; expected one of 'numpy', 'numba', 'cupy'"):
        mc.set_backend("tpu")
