"""The exercises: what each one asks for, the cases it is graded on, the classic mistakes it
recognizes, and its hints.

Each exercise is one function the learner writes in a file of their folder (the template in
``templates/`` gives the signature, the derivation up to the step to write, and a TODO). The
grader calls it on drawn cases: every layout the layers meet (batch 1 and more; every pair of
sizes, kernels, strides and paddings non-square; windows that overlap, and windows that leave
pixels out between them and at the end) and values that hide nothing (non-integers where
integers would make a wrong formula right; ties, exact zeros, huge logits), and compares every
returned array with :mod:`.solutions`, whose functions the tests hold to minicnn's layers,
``minicnn.naive`` and central differences. A **mistake** is a planted wrong version of the
solution with the words that name it: when the learner's answer equals a mistake's answer on a
case, the grader says those words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import solutions


@dataclass(frozen=True)
class Case:
    """One call of the exercise's function: ``arguments`` by name, described for a person."""

    description: str
    arguments: dict


@dataclass(frozen=True)
class Mistake:
    """A classic mistake: ``answer`` computes what the mistaken code returns; ``words`` say what
    went wrong and what to do instead."""

    words: str
    answer: Callable


@dataclass(frozen=True)
class Exercise:
    number: int
    name: str                      # the function to write, and the exercise's name
    title: str
    outputs: tuple[str, ...]       # the names of the arrays it returns, in order
    draw_cases: Callable[[np.random.Generator], list[Case]]
    mistakes: tuple[Mistake, ...] = ()
    hints: tuple[str, ...] = ()

    @property
    def file_name(self) -> str:
        return f"{self.number:02d}_{self.name}.py"

    @property
    def solution(self) -> Callable:
        return getattr(solutions, self.name)

    def cases(self, seed: int = 0) -> list[Case]:
        return self.draw_cases(np.random.default_rng(seed))


def _normal(rng, *shape):
    return rng.standard_normal(shape)


# -- 1. Dense --------------------------------------------------------------------------------------

def _dense_cases(rng):
    cases = []
    for n, d, k in ((4, 5, 3), (1, 3, 2), (7, 2, 6)):
        cases.append(Case(f"x ({n}, {d}), W ({d}, {k}), dy ({n}, {k})",
                          {"x": _normal(rng, n, d), "W": _normal(rng, d, k),
                           "dy": _normal(rng, n, k)}))
    return cases


def _dense_mean_db(x, W, dy):
    dx, dW, db = solutions.dense_backward(x, W, dy)
    return dx, dW, dy.mean(axis=0)


def _dense_divided(x, W, dy):
    dx, dW, db = solutions.dense_backward(x, W, dy)
    return dx, dW / len(x), db / len(x)


def _dense_x_not_transposed(x, W, dy):
    dx, dW, db = solutions.dense_backward(x, W, dy)
    return dx, (dy.T @ x), db


DENSE = Exercise(
    1, "dense_backward", "Dense: dx, dW and db of z = x @ W + b", ("dx", "dW", "db"),
    _dense_cases,
    mistakes=(
        Mistake("db is the mean of dy over the batch; it is the sum: b was added to every row, so "
                "each row sends its dy back (the 1/N of the loss is already inside dy)",
                _dense_mean_db),
        Mistake("dW and db are divided by N: the loss's mean over the batch is already in dy, "
                "so the layer only sums", _dense_divided),
        Mistake("dW is dy.T @ x, shape (K, D): the transpose. dW has W's shape (D, K): "
                "dW = x.T @ dy", _dense_x_not_transposed),
    ),
    hints=(
        "Write z_nk = sum_d x_nd W_dk + b_k. Which z's does W_dk touch? All z_nk, for every n.",
        "So dW_dk = sum_n x_nd dy_nk: that is (x.T @ dy)[d, k]. Check the shape: (D, N) @ (N, K).",
        "dx_nd = sum_k dy_nk W_dk = (dy @ W.T)[n, d]; db_k = sum_n dy_nk = dy.sum(axis=0).",
    ),
)


# -- 2. ReLU ---------------------------------------------------------------------------------------

def _relu_cases(rng):
    cases = []
    for shape, integers in (((3, 4), True), ((2, 3, 5, 4), False), ((1, 5), False)):
        if integers:  # exact zeros: ReLU's kink
            x = rng.integers(-2, 3, shape).astype(np.float64)
            words = "integers from -2 to 2 (exact zeros included)"
        else:  # values between 0 and 1 too: a slope of min(x, 1) passes on integers alone
            x = _normal(rng, *shape)
            x.flat[::3] = 0.0
            words = "normal values, every third exactly 0"
        cases.append(Case(f"x {shape} of {words}", {"x": x, "dy": _normal(rng, *shape)}))
    return cases


RELU = Exercise(
    2, "relu_backward", "ReLU: dx of y = max(x, 0)", ("dx",), _relu_cases,
    mistakes=(
        Mistake("the mask is (x >= 0): at exactly 0 the slope is taken as 0, as PyTorch does "
                "(use x > 0)", lambda x, dy: dy * (x >= 0)),
        Mistake("the ReLU was applied to the gradient, max(dy, 0): the mask comes from the "
                "forward input x, not from dy", lambda x, dy: np.maximum(dy, 0)),
        Mistake("dx is dy * x: the slope of max(x, 0) is 1 or 0, not x",
                lambda x, dy: dy * np.maximum(x, 0)),
    ),
    hints=("max(x, 0) is x where x > 0 (slope 1) and 0 elsewhere (slope 0).",
           "dx = dy * slope: a boolean mask of x, multiplied into dy."),
)


# -- 3. Softmax cross-entropy ---------------------------------------------------------------------

def _softmax_cases(rng):
    cases = []
    for n, k, scale in ((4, 3, 1.0), (1, 5, 1.0), (6, 10, 1.0), (3, 4, 1000.0)):
        words = "huge logits (about 1000)" if scale > 1 else "normal logits"
        cases.append(Case(f"logits ({n}, {k}), {words}",
                          {"logits": _normal(rng, n, k) * scale,
                           "labels": rng.integers(0, k, n)}))
    return cases


def _softmax_not_mean(logits, labels):
    return solutions.softmax_cross_entropy_backward(logits, labels) * len(logits)


def _softmax_no_onehot(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return p / len(logits)


SOFTMAX = Exercise(
    3, "softmax_cross_entropy_backward", "Softmax cross-entropy: dL/dlogits",
    ("dlogits",), _softmax_cases,
    mistakes=(
        Mistake("dlogits is exactly N times too large: the loss is a mean over the batch, so "
                "divide by N", _softmax_not_mean),
        Mistake("the sign is flipped: dL/dz = softmax(z) - onehot(label), not onehot - softmax",
                lambda logits, labels: -solutions.softmax_cross_entropy_backward(logits, labels)),
        Mistake("the one-hot label is not subtracted: dL/dz = (softmax(z) - onehot(label)) / N",
                _softmax_no_onehot),
    ),
    hints=("For one sample, dL/dz_j = p_j - t_j with p = softmax(z) and t the one-hot label: "
           "derive it from the Jacobian dp_i/dz_j = p_i (delta_ij - p_j) if you doubt it.",
           "exp(1000) overflows: subtract each row's maximum before exp; softmax does not change.",
           "The loss is the mean over N samples: divide by N."),
)


# -- 4. Max pooling --------------------------------------------------------------------------------

#: (x shape, kernel, stride) of the pooling cases: overlapping windows, non-square ones, and
#: windows that leave pixels uncovered (a gap between them, and rows and columns at the end)
_POOL_SHAPES = (((2, 2, 4, 4), (2, 2), (2, 2)), ((1, 1, 5, 5), (3, 3), (1, 1)),
                ((2, 3, 6, 5), (2, 3), (2, 1)), ((1, 2, 4, 4), (2, 2), (1, 1)),
                ((1, 2, 5, 7), (2, 2), (2, 3)))


def coverage(x_shape, kernel, stride, padding=(0, 0)) -> np.ndarray:
    """How many windows cover each pixel of an (H, W) image: 0 where none does (its gradient
    is zero), more than 1 where windows overlap (gradients add up)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    height, width = x_shape[-2:]
    count = np.zeros((height + 2 * ph, width + 2 * pw), dtype=int)
    for oh in range((height + 2 * ph - kh) // sh + 1):
        for ow in range((width + 2 * pw - kw) // sw + 1):
            count[oh * sh:oh * sh + kh, ow * sw:ow * sw + kw] += 1
    return count[ph:ph + height, pw:pw + width]


def _windows(x_shape, kernel, stride, padding=(0, 0)) -> str:
    covered = coverage(x_shape, kernel, stride, padding)
    words = [", overlapping windows"] if covered.max() > 1 else []
    if covered.min() == 0:
        words.append(", pixels no window covers")
    return "".join(words)


def _maxpool_cases(rng):
    cases = []
    for number, (shape, kernel, stride) in enumerate(_POOL_SHAPES):
        if number < 4:
            x = rng.integers(0, 3, shape).astype(np.float64)  # few values: many ties
            words = "of integers 0-2 (ties)"
        else:
            x = _normal(rng, *shape)
            words = "of normal values"
        out = ((shape[2] - kernel[0]) // stride[0] + 1, (shape[3] - kernel[1]) // stride[1] + 1)
        cases.append(Case(f"x {shape} {words}, kernel {kernel}, stride {stride}"
                          f"{_windows(shape, kernel, stride)}",
                          {"x": x, "dy": _normal(rng, *shape[:2], *out), "kernel": kernel,
                           "stride": stride}))
    return cases


def _pool_backward_with(x, dy, kernel, stride, send):
    """The max-pool backward's loop, with what each window sends back left to ``send(into,
    window, g)``: ``into`` is the window's view of dx, ``g`` its dy."""
    (kh, kw), (sh, sw) = kernel, stride
    dx = np.zeros_like(x)
    for n, c, oh, ow in np.ndindex(*dy.shape):
        rows, cols = slice(oh * sh, oh * sh + kh), slice(ow * sw, ow * sw + kw)
        send(dx[n, c, rows, cols], x[n, c, rows, cols], dy[n, c, oh, ow])
    return dx


def _first_max(window):
    return np.unravel_index(np.argmax(window), window.shape)


def _maxpool_assign(x, dy, kernel, stride):
    def send(into, window, g):
        into[_first_max(window)] = g  # overwrites what an overlapping window sent
    return _pool_backward_with(x, dy, kernel, stride, send)


def _maxpool_all_ties(x, dy, kernel, stride):
    def send(into, window, g):
        into += g * (window == window.max())
    return _pool_backward_with(x, dy, kernel, stride, send)


def _maxpool_last_max(x, dy, kernel, stride):
    def send(into, window, g):
        last = window.size - 1 - np.argmax(window.ravel()[::-1])
        into[np.unravel_index(last, window.shape)] += g
    return _pool_backward_with(x, dy, kernel, stride, send)


MAXPOOL = Exercise(
    4, "maxpool_backward", "Max pooling: dx", ("dx",), _maxpool_cases,
    mistakes=(
        Mistake("overlapping windows lose gradient: a pixel that wins several windows must "
                "collect all their gradients; use += where windows overlap", _maxpool_assign),
        Mistake("every tied maximum receives the window's gradient: give it to one winner, the "
                "first maximum (np.argmax), as the forward pass picked one value",
                _maxpool_all_ties),
        Mistake("ties go to the last maximum of the window; minicnn and PyTorch give them to the "
                "first (np.argmax returns the first)", _maxpool_last_max),
    ),
    hints=("max is locally the identity on the winning element and flat in the others.",
           "Loop over the output: for each window find the winner (np.argmax, then "
           "np.unravel_index) and send it that window's dy.",
           "With stride < kernel one pixel can win several windows: add (+=), do not assign."),
)


# -- 5. im2col -----------------------------------------------------------------------------------

#: (x shape, kernel, stride, padding) of the convolution cases: overlapping windows; every
#: pair different (N, C, H and W; KH and KW; SH and SW; PH and PW) with an OW that rounding
#: would get wrong; gaps between windows and uncovered rows and columns at the end; 1x1
_CONV_SHAPES = (((2, 1, 5, 5), (3, 3), (1, 1), (0, 0)),
                ((1, 2, 6, 5), (3, 2), (2, 1), (1, 0)),
                ((2, 3, 4, 4), (2, 2), (2, 2), (1, 1)),
                ((1, 1, 3, 3), (1, 1), (1, 1), (0, 0)),
                ((1, 2, 7, 6), (3, 2), (2, 3), (1, 2)),
                ((2, 1, 7, 7), (2, 2), (3, 3), (0, 0)))


def _out_size(shape, kernel, stride, padding):
    return tuple((size + 2 * p - k) // s + 1
                 for size, k, s, p in zip(shape[2:], kernel, stride, padding))


def _conv_words(shape, kernel, stride, padding):
    return (f"x {shape}, kernel {kernel}, stride {stride}, padding {padding}"
            f"{_windows(shape, kernel, stride, padding)}")


def _im2col_cases(rng):
    return [Case(_conv_words(shape, kernel, stride, padding),
                 {"x": _normal(rng, *shape), "kernel": kernel, "stride": stride,
                  "padding": padding}) for shape, kernel, stride, padding in _CONV_SHAPES]


def _im2col_no_padding(x, kernel, stride, padding):
    return solutions.im2col(x, kernel, stride, (0, 0))


def _im2col_rows_ijc(x, kernel, stride, padding):
    cols = solutions.im2col(x, kernel, stride, padding)
    c, (kh, kw) = x.shape[1], kernel
    return cols.reshape(c, kh * kw, -1).transpose(1, 0, 2).reshape(c * kh * kw, -1)


IM2COL = Exercise(
    5, "im2col", "im2col: every window as a column", ("cols",), _im2col_cases,
    mistakes=(
        Mistake("the padding is ignored: pad x with PH rows and PW columns of zeros on each "
                "side first (np.pad)", _im2col_no_padding),
        Mistake("the rows are in (i, j, c) order; minicnn's W2 = W.reshape(F, -1) reads them as "
                "(c, i, j): row c*KH*KW + i*KW + j", _im2col_rows_ijc),
    ),
    hints=("OH = (H + 2*PH - KH) // SH + 1. cols has one row per (c, i, j) and one column per "
           "(n, oh, ow).",
           "Row c*KH*KW + i*KW + j, column n*OH*OW + oh*OW + ow holds xpad[n, c, oh*SH + i, "
           "ow*SW + j].",
           "For one (c, i, j), every window's element is the strided slice "
           "xpad[:, c, i:i + SH*OH:SH, j:j + SW*OW:SW], shape (N, OH, OW): reshape it into the row."),
)


# -- 6. The convolution through the columns -------------------------------------------------------

def _conv_cols_cases(rng):
    cases = []
    for shape, kernel, stride, padding in _CONV_SHAPES:
        f = int(rng.integers(1, 4))
        out_h, out_w = _out_size(shape, kernel, stride, padding)
        rows, columns = shape[1] * kernel[0] * kernel[1], shape[0] * out_h * out_w
        cases.append(Case(f"cols ({rows}, {columns}), W2 ({f}, {rows}), dout ({f}, {columns})",
                          {"cols": _normal(rng, rows, columns), "W2": _normal(rng, f, rows),
                           "dout": _normal(rng, f, columns)}))
    return cases


CONV_COLS = Exercise(
    6, "conv_backward_cols", "The convolution's backward through the columns: dW2 and dcols",
    ("dW2", "dcols"), _conv_cols_cases,
    mistakes=(
        Mistake("dW2 is divided by the number of columns (N*OH*OW): each column is one use of "
                "the weights, and uses add up; no mean here",
                lambda cols, W2, dout: (dout @ cols.T / cols.shape[1], W2.T @ dout)),
    ),
    hints=("out = W2 @ cols is a Dense layer in disguise: every column is a sample.",
           "dW2 = dout @ cols.T (W2's shape); dcols = W2.T @ dout (cols' shape)."),
)


# -- 7. col2im -----------------------------------------------------------------------------------

def _col2im_cases(rng):
    cases = []
    for shape, kernel, stride, padding in _CONV_SHAPES:
        out_h, out_w = _out_size(shape, kernel, stride, padding)
        rows, columns = shape[1] * kernel[0] * kernel[1], shape[0] * out_h * out_w
        cases.append(Case(f"dcols ({rows}, {columns}) back to "
                          f"{_conv_words(shape, kernel, stride, padding)}",
                          {"dcols": _normal(rng, rows, columns), "x_shape": shape,
                           "kernel": kernel, "stride": stride, "padding": padding}))
    return cases


def _col2im_assign(dcols, x_shape, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c_in, height, width = x_shape
    out_h, out_w = _out_size(x_shape, kernel, stride, padding)
    dxpad = np.zeros((n, c_in, height + 2 * ph, width + 2 * pw))
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                row = dcols[c * kh * kw + i * kw + j].reshape(n, out_h, out_w)
                dxpad[:, c, i:i + sh * out_h:sh, j:j + sw * out_w:sw] = row
    return dxpad[:, :, ph:ph + height, pw:pw + width]


COL2IM = Exercise(
    7, "col2im", "col2im: the columns' gradient back onto the image", ("dx",), _col2im_cases,
    mistakes=(
        Mistake("overlapping windows lose gradient: a pixel copied into several columns must "
                "collect every copy's gradient; use += where windows overlap", _col2im_assign),
    ),
    hints=("col2im is im2col run backwards: each entry of dcols goes back to the pixel of xpad "
           "it was copied from.",
           "A pixel copied into several columns receives the sum of their gradients (+=).",
           "Work on a zero-padded dxpad, then cut the padding off: dxpad[:, :, PH:PH + H, "
           "PW:PW + W]."),
)


# -- 8, 9. BatchNorm -----------------------------------------------------------------------------

def _batchnorm_cases(rng):
    cases = []
    for shape in ((4, 2, 3, 3), (1, 3, 4, 2), (5, 1, 1, 1), (2, 4, 2, 3)):
        c = shape[1]
        cases.append(Case(f"x {shape}", {"x": _normal(rng, *shape) * 2 + 1,
                                         "gamma": rng.uniform(0.5, 1.5, c),
                                         "dy": _normal(rng, *shape), "eps": 1e-5}))
    return cases


def _bn_without_mean_path(x, gamma, dy, eps):
    axes = (0, 2, 3)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mu = x.mean(axis=axes, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    dx, dgamma, dbeta = solutions.batchnorm_backward_staged(x, gamma, dy, eps)
    dxhat = dy * gamma.reshape(1, -1, 1, 1)
    return dx + (dxhat / sigma).sum(axis=axes, keepdims=True) / m, dgamma, dbeta


def _bn_without_var_path(x, gamma, dy, eps):
    axes = (0, 2, 3)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mu = x.mean(axis=axes, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    dxhat = dy * gamma.reshape(1, -1, 1, 1)
    _, dgamma, dbeta = solutions.batchnorm_backward_staged(x, gamma, dy, eps)
    return dxhat / sigma - (dxhat / sigma).sum(axis=axes, keepdims=True) / m, dgamma, dbeta


def _bn_as_constants(x, gamma, dy, eps):
    axes = (0, 2, 3)
    mu = x.mean(axis=axes, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    _, dgamma, dbeta = solutions.batchnorm_backward_staged(x, gamma, dy, eps)
    return dy * gamma.reshape(1, -1, 1, 1) / sigma, dgamma, dbeta


def _bn_m_is_n(x, gamma, dy, eps):
    axes = (0, 2, 3)
    m = x.shape[0]  # N instead of N*H*W
    mu = x.mean(axis=axes, keepdims=True)
    sigma = np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mu) / sigma
    dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    dx = gamma.reshape(1, -1, 1, 1) / (m * sigma) * (
        m * dy - dbeta.reshape(1, -1, 1, 1) - xhat * dgamma.reshape(1, -1, 1, 1))
    return dx, dgamma, dbeta


_BN_MISTAKES = (
    Mistake("the path through the mean is missing: mu depends on every x of the channel, so "
            "each x also receives dmu / M with dmu = -sum(dxhat) / sigma", _bn_without_mean_path),
    Mistake("the path through the variance is missing: var depends on every x too; "
            "dvar = sum(dxhat * (x - mu)) * -1/2 * sigma**-3, and each x receives "
            "dvar * 2 (x - mu) / M", _bn_without_var_path),
    Mistake("mu and var were treated as constants (dx = dy * gamma / sigma): that is the "
            "inference-mode gradient; in training they depend on x (two more paths)",
            _bn_as_constants),
    Mistake("M is the batch size N; the statistics are over N*H*W values per channel",
            _bn_m_is_n),
)

BATCHNORM_STAGED = Exercise(
    8, "batchnorm_backward_staged", "BatchNorm, staged: the three paths of dx",
    ("dx", "dgamma", "dbeta"), _batchnorm_cases, mistakes=_BN_MISTAKES,
    hints=("dbeta = sum(dy), dgamma = sum(dy * xhat) over (N, H, W); dxhat = dy * gamma.",
           "Path 1, direct: dxhat / sigma. Path 2, through mu: dmu = -sum(dxhat) / sigma, each x "
           "gets dmu / M.",
           "Path 3, through var: dvar = sum(dxhat * (x - mu)) * -0.5 * sigma**-3, each x gets "
           "dvar * 2 * (x - mu) / M. Add the three."),
)

BATCHNORM_COMPACT = Exercise(
    9, "batchnorm_backward_compact", "BatchNorm, compact: the three paths in one line",
    ("dx", "dgamma", "dbeta"), _batchnorm_cases, mistakes=_BN_MISTAKES,
    hints=("Start from your staged answer and write x - mu = sigma * xhat in paths 2 and 3.",
           "Path 2 becomes -sum(dxhat) / (M sigma); path 3 becomes -xhat * sum(dxhat * xhat) / "
           "(M sigma).",
           "dx = gamma / (M sigma) * (M dy - sum(dy) - xhat * sum(dy * xhat))."),
)


# -- 10. The convolution's forward through im2col ------------------------------------------------

def _conv_forward_cases(rng):
    cases = []
    for shape, kernel, stride, padding in _CONV_SHAPES:
        f = int(rng.integers(2, 5))
        cases.append(Case(f"{_conv_words(shape, kernel, stride, padding)}, {f} filters",
                          {"x": _normal(rng, *shape), "W": _normal(rng, f, shape[1], *kernel),
                           "b": _normal(rng, f), "stride": stride, "padding": padding}))
    return cases


def _conv_forward_no_transpose(x, W, b, stride, padding):
    y = solutions.conv_forward(x, W, b, stride, padding)
    return np.ascontiguousarray(y.transpose(1, 0, 2, 3)).reshape(y.shape)


def _conv_forward_weights_transposed(x, W, b, stride, padding):
    f = W.shape[0]
    W_read_wrong = W.reshape(-1, f).T.reshape(W.shape)
    return solutions.conv_forward(x, W_read_wrong, b, stride, padding)


CONV_FORWARD = Exercise(
    10, "conv_forward", "The convolution's forward pass through im2col", ("y",),
    _conv_forward_cases,
    mistakes=(
        Mistake("out (F, N*OH*OW) was reshaped straight to (N, F, OH, OW): its columns run over "
                "(n, oh, ow) and its rows over f, so reshape to (F, N, OH, OW), then "
                "transpose(1, 0, 2, 3)", _conv_forward_no_transpose),
        Mistake("the weights are read in the wrong order: W2 = W.reshape(F, -1) (one row per "
                "filter, in im2col's (c, i, j) order), not W.reshape(-1, F).T",
                _conv_forward_weights_transposed),
    ),
    hints=("cols = im2col(x, (KH, KW), stride, padding) has one column per output pixel "
           "(n, oh, ow); W2 = W.reshape(F, -1) has one row per filter.",
           "out = W2 @ cols + b[:, None] is (F, N*OH*OW): row f, column n*OH*OW + oh*OW + ow.",
           "y = out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3), with OH and OW as in im2col."),
)


# -- 11. Average pooling -------------------------------------------------------------------------

def _avgpool_cases(rng):
    cases = []
    for shape, kernel, stride in _POOL_SHAPES:
        out = ((shape[2] - kernel[0]) // stride[0] + 1, (shape[3] - kernel[1]) // stride[1] + 1)
        cases.append(Case(f"dy {(*shape[:2], *out)} back to x {shape}, kernel {kernel}, "
                          f"stride {stride}{_windows(shape, kernel, stride)}",
                          {"dy": _normal(rng, *shape[:2], *out), "x_shape": shape,
                           "kernel": kernel, "stride": stride}))
    return cases


def _avgpool_not_divided(dy, x_shape, kernel, stride):
    return solutions.avgpool_backward(dy, x_shape, kernel, stride) * (kernel[0] * kernel[1])


def _avgpool_assign(dy, x_shape, kernel, stride):
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = dy.shape[2:]
    dx = np.zeros(x_shape)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + sh * out_h:sh, j:j + sw * out_w:sw] = dy / (kh * kw)
    return dx


AVGPOOL = Exercise(
    11, "avgpool_backward", "Average pooling: dx", ("dx",), _avgpool_cases,
    mistakes=(
        Mistake("every element of a window received the window's whole dy: the mean divides "
                "by KH*KW, so each element receives dy / (KH*KW)", _avgpool_not_divided),
        Mistake("overlapping windows lose gradient: a pixel in several windows must collect a "
                "share from each; use += where windows overlap", _avgpool_assign),
    ),
    hints=("y is (1/(KH*KW)) times a sum: every element of the window has slope 1/(KH*KW).",
           "For each (i, j) inside the window, dx[:, :, i:i + SH*OH:SH, j:j + SW*OW:SW] is that "
           "element of every window at once: add dy / (KH*KW) into it.",
           "Start from np.zeros(x_shape, dtype=dy.dtype): pixels no window covers stay 0."),
)


# -- 12, 13. Optimizers --------------------------------------------------------------------------

_PARAMETER_SHAPES = ((4, 3, 3, 3), (5,), (6, 4))  # a convolution's weights, a bias, a Dense's


def _sgd_cases(rng):
    cases = []
    for number, (shape, lr, momentum) in enumerate(zip(_PARAMETER_SHAPES, (0.1, 0.03, 0.5),
                                                       (0.9, 0.5, 0.99))):
        first = number == 0  # the first step: the velocity starts at zero
        cases.append(Case(f"w {shape}, lr {lr}, momentum {momentum}"
                          + (", the first step (velocity 0)" if first else ""),
                          {"w": _normal(rng, *shape), "grad": _normal(rng, *shape),
                           "velocity": np.zeros(shape) if first else _normal(rng, *shape),
                           "lr": lr, "momentum": momentum}))
    return cases


def _sgd_lr_inside(w, grad, velocity, lr, momentum):
    velocity = momentum * velocity - lr * grad
    return w + velocity, velocity


def _sgd_dampened(w, grad, velocity, lr, momentum):
    velocity = momentum * velocity + (1 - momentum) * grad
    return w - lr * velocity, velocity


def _sgd_old_velocity(w, grad, velocity, lr, momentum):
    return w - lr * velocity, momentum * velocity + grad


SGD_MOMENTUM = Exercise(
    12, "sgd_momentum_step", "SGD with momentum: one step", ("w", "velocity"), _sgd_cases,
    mistakes=(
        Mistake("this is the other convention (velocity = momentum * velocity - lr * grad; "
                "w + velocity); minicnn and PyTorch keep the velocity without the learning "
                "rate: velocity = momentum * velocity + grad, w - lr * velocity",
                _sgd_lr_inside),
        Mistake("the gradient was weighed by (1 - momentum): that is a running mean (Adam's m); "
                "SGD's momentum adds the whole gradient", _sgd_dampened),
        Mistake("w moved with the old velocity: update the velocity first, then step with it",
                _sgd_old_velocity),
    ),
    hints=("Two lines: the new velocity from the old one and the gradient, then w from the new "
           "velocity.",
           "velocity = momentum * velocity + grad; w = w - lr * velocity. Return new arrays."),
)


def _adam_cases(rng):
    cases = []
    draws = ((1, 1e-3, 1e-8, 1.0, "the first step (m and v 0)"),
             (5, 1e-2, 1e-8, 1.0, "step 5"),
             (1000, 1e-3, 1e-8, 1.0, "step 1000 (the correction near 1)"),
             (3, 1e-3, 1e-3, 1e-3, "step 3, small gradients where eps counts"))
    for (t, lr, eps, scale, words), shape in zip(draws, (*_PARAMETER_SHAPES, (2, 3))):
        first = t == 1
        m = np.zeros(shape) if first else _normal(rng, *shape) * 0.1 * scale
        v = np.zeros(shape) if first else rng.uniform(0.1, 1.0, shape) * scale ** 2
        cases.append(Case(f"w {shape}, {words}, lr {lr}, eps {eps:g}",
                          {"w": _normal(rng, *shape), "grad": _normal(rng, *shape) * scale,
                           "m": m, "v": v, "t": t, "lr": lr, "beta1": 0.9, "beta2": 0.999,
                           "eps": eps}))
    return cases


def _adam_uncorrected(w, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return w - lr * m / (np.sqrt(v) + eps), m, v


def _adam_eps_inside(w, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return w - lr * m_hat / np.sqrt(v_hat + eps), m, v


def _adam_t_from_zero(w, grad, m, v, t, lr, beta1, beta2, eps):
    return solutions.adam_step(w, grad, m, v, t + 1, lr, beta1, beta2, eps)


ADAM = Exercise(
    13, "adam_step", "Adam with bias correction: one step", ("w", "m", "v"), _adam_cases,
    mistakes=(
        Mistake("the bias correction is missing: m and v start at 0, so early on they are too "
                "small by a factor 1 - beta**t; divide m by 1 - beta1**t and v by 1 - beta2**t",
                _adam_uncorrected),
        Mistake("eps is inside the square root: the step is m_hat / (sqrt(v_hat) + eps)",
                _adam_eps_inside),
        Mistake("the correction used t + 1: t is this step's number, 1 on the first step",
                _adam_t_from_zero),
    ),
    hints=("m and v are running means: m = beta1 * m + (1 - beta1) * grad; v the same with "
           "beta2 and grad ** 2.",
           "They started at 0, which still holds a part beta**t of their weight: m_hat = m / "
           "(1 - beta1**t), v_hat = v / (1 - beta2**t).",
           "w = w - lr * m_hat / (np.sqrt(v_hat) + eps); return (w, m, v), new arrays."),
)


EXERCISES: tuple[Exercise, ...] = (DENSE, RELU, SOFTMAX, MAXPOOL, IM2COL, CONV_COLS, COL2IM,
                                   BATCHNORM_STAGED, BATCHNORM_COMPACT, CONV_FORWARD, AVGPOOL,
                                   SGD_MOMENTUM, ADAM)
BY_NAME = {exercise.name: exercise for exercise in EXERCISES}
