"""Layers inside layers, and models on their own backends.

Sequential is a Layer and Residual is built from two of them: whatever walks a network (model
files, checkpoints, seeding, moving between backends) reaches layers at any depth through
``children()``. Each model computes with its own backend's kernels.
"""

import numpy as np
import pytest

import minicnn as mc
from minicnn import backend
from minicnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, ReLU, Residual, Sequential
from minicnn.training import fit


def nested_model(seed=0):
    """Dropout and BatchNorm inside a Residual inside a Sequential inside the model."""
    # (no bias before the BatchNorm, which cancels it: its gradient would be rounding noise,
    # which Adam turns into steps of size lr in random directions)
    block = Residual([Conv2D(2, 2, 3, padding=1, bias=False), BatchNorm2D(2), ReLU(), Dropout(0.3)])
    return mc.Sequential([Sequential([block, ReLU()]), Flatten(), Dropout(0.2), Dense(2 * 6 * 6, 3)],
                         seed=seed)


def data(n=48, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2, 6, 6)).astype(np.float32), rng.integers(0, 3, n)


def test_arrays_and_generators_are_named_by_their_path():
    model = nested_model()
    names = list(model.named_arrays())
    assert names[:2] == ["0.0.body.0.weight", "0.0.body.1.gamma"]
    assert "0.0.body.1.running_var" in names and names[-1] == "3.bias"
    assert list(model.named_generators()) == ["0.0.body.3", "2"]
    assert len(model.parameters()) == 5 and len(model.buffers()) == 2


def test_save_and_load_keep_every_nested_array(tmp_path):
    model = nested_model()
    x, y = data()
    model.forward(x, training=True)  # running statistics away from 0 / 1
    model.save(tmp_path / "nested.safetensors")
    loaded = mc.load_model(tmp_path / "nested.safetensors")
    assert loaded.config() == model.config()
    for name, array in model.named_arrays().items():
        np.testing.assert_array_equal(loaded.named_arrays()[name].data, array.data)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_resuming_a_checkpoint_repeats_the_uninterrupted_run_with_nested_dropout(tmp_path):
    """The random state of a Dropout nested two containers deep is part of the checkpoint, so
    a resumed run draws the same masks as an uninterrupted one: bit-identical weights."""
    x, y = data()

    def run(epochs, checkpoint=None, resume=False):
        model = nested_model()
        opt = mc.optim.Adam(model.parameters(), lr=1e-2)
        fit(model, mc.losses.SoftmaxCrossEntropy(), opt, (x, y), epochs=epochs, batch_size=16,
            verbose=0, checkpoint=checkpoint, resume=resume, seed=3)
        return model

    straight = run(4)
    ckpt = tmp_path / "ckpt.safetensors"
    run(2, checkpoint=ckpt)
    resumed = run(4, checkpoint=ckpt, resume=True)
    for name, array in straight.named_arrays().items():
        np.testing.assert_array_equal(resumed.named_arrays()[name].data, array.data, err_msg=name)


def test_to_moves_one_model_and_leaves_the_default_alone():
    if not backend.backend_available("numba"):
        pytest.skip("numba is not installed")
    from minicnn.kernels import numba_kernels, numpy_kernels

    mc.set_backend("numpy")
    reference, fast = nested_model(), nested_model().to("numba")
    assert mc.get_backend() == "numpy"  # model.to does not change the default
    assert all(layer.backend == "numpy" for layer in reference._walk())
    assert all(layer.backend == "numba" for layer in fast._walk())
    assert reference.layers[0].layers[0].body.layers[0].kernels is numpy_kernels
    assert fast.layers[0].layers[0].body.layers[0].kernels is numba_kernels
    assert all(p.backend == "numba" for p in fast.parameters())
    x, y = data()
    for model in (reference, fast):  # both live in one process, each on its own kernels
        opt = mc.optim.Adam(model.parameters(), lr=1e-2)
        loss_fn = mc.losses.SoftmaxCrossEntropy()
        for _ in range(3):
            loss_fn.forward(model.forward(x, training=True), y)
            model.backward(loss_fn.backward())
            opt.step()
    for name, array in reference.named_arrays().items():
        np.testing.assert_allclose(fast.named_arrays()[name].data, array.data, rtol=1e-4,
                                   atol=1e-5, err_msg=name)
    assert Conv2D(1, 1, 1).backend == "numpy"  # new layers start on the default


def test_containers_index_iterate_and_describe():
    model = nested_model()
    inner = model.layers[0]
    assert isinstance(inner, Sequential) and len(inner) == 2 and isinstance(inner[1], ReLU)
    assert [type(layer).__name__ for layer in inner[0].body] == ["Conv2D", "BatchNorm2D", "ReLU",
                                                                 "Dropout"]
    assert "Residual[Conv2D(2->2" in model.summary(input_shape=(2, 6, 6), print_fn=None)
    with pytest.raises(TypeError, match="expected a list of minicnn layers"):
        Sequential(Dense(2, 2))


def test_a_layer_used_twice_is_refused_where_the_model_is_built():
    """A layer keeps what its last forward pass saw for its backward pass, so one object in two
    places would get silently wrong gradients: refused, with why and what to do instead."""
    dense = Dense(3, 3)
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(3->3\)\) is the same object as "
                                         r"layer 0.*wrong gradients.*copy.deepcopy"):
        Sequential([dense, mc.layers.Tanh(), dense])
    relu = ReLU()  # no weights, but a mask from the last pass: just as wrong
    with pytest.raises(ValueError, match=r"layer 2.body.1 \(ReLU\(\)\) is the same object as "
                                         r"layer 1"):
        Sequential([Conv2D(1, 1, 3, padding=1), relu,
                    Residual([Conv2D(1, 1, 3, padding=1), relu])])
    # two copies with the same starting weights are two layers: their gradients are right
    import copy

    model = Sequential([dense, mc.layers.Tanh(), copy.deepcopy(dense)])
    x = np.random.default_rng(0).standard_normal((4, 3))
    errors = mc.gradcheck.check_layer(model, x)
    assert max(errors.values()) < 1e-6, errors


def test_a_forward_that_skips_remember_is_named_at_once():
    class Twice(mc.layers.Layer):
        def _forward(self, x, training):
            return 2 * x  # forgot self._remember(...)

        def _backward(self, dy, input_grad):
            return 2 * dy

    with pytest.raises(RuntimeError, match=r"Twice: _forward must return its output through "
                                           r"self._remember"):
        mc.gradcheck.check_layer(Twice(), np.ones((2, 3)))
