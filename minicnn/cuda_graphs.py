"""A call recorded once as a CUDA graph and replayed (the cupy backend).

A pass of a small network on a GPU is hundreds of short kernels, and Python launching them one
by one paces it, not the GPU. A pass of minicnn is the same kernels on arrays of the same
shapes every time, so it can be recorded once (CuPy's ``Stream.begin_capture`` /
``end_capture``: the kernels are recorded, not run) and replayed with one launch
(``Graph.launch``). :class:`RecordedCall` records one call; :class:`RecordedLoop` decides, for
a loop over batches (``Sequential.predict``, ``training.evaluate``), which batches are
recorded, replayed or run as written. The training step's records, which also hold the
weights they update, are :mod:`minicnn.capture`.

What a record needs: its inputs are copied into arrays made before the recording (the
recorded kernels read those addresses); every array the call makes comes from a memory pool of
the record's own, kept as long as the record, so that no other array is ever given the
addresses a replay writes; nothing inside the call reads a value back to the host.
"""

from __future__ import annotations

import re
import warnings

from . import backend


class RecordedCall:
    """``fn(*inputs)`` recorded once as a CUDA graph, for inputs shaped like ``inputs``; ``fn``
    returns a tuple of arrays. Recording runs nothing: :meth:`run` copies new inputs in,
    launches the graph and returns copies of the outputs (the next launch overwrites the
    record's own)."""

    def __init__(self, fn, inputs):
        cp = backend.xp("cupy")
        self.stream = cp.cuda.Stream(non_blocking=False)  # ordered with the default stream
        self.pool = cp.cuda.MemoryPool()  # the record's own: its addresses stay the record's
        with self.stream:
            self.inputs = [cp.empty_like(a) for a in inputs]
            with cp.cuda.using_allocator(self.pool.malloc):
                self.stream.begin_capture()
                try:
                    self.outputs = fn(*self.inputs)
                finally:
                    self.graph = self.stream.end_capture()

    def operations(self) -> int:
        """How many operations (kernels, copies, fills) the record holds: what the call as
        written launches one by one, and a replay launches at once."""
        return graph_operations(self.graph.debug_dot_str())

    def run(self, *inputs) -> tuple:
        with self.stream:
            for mine, given in zip(self.inputs, inputs):
                mine[...] = given
            self.graph.launch()
            return tuple(output.copy() for output in self.outputs)


class ReplayedSeed:
    """The seed a GPU kernel draws its random numbers from (Dropout's mask), a 0-d array on the
    GPU: drawn from the layer's generator on the host for each step as written. A step being
    recorded reads it without drawing (the record would hold that one number); :meth:`draw`,
    called before each replay (``Layer.draw_for_replay``), draws what the step would have."""

    def __init__(self):
        self.array = None

    def for_step(self, rng, xp):
        if self.array is None:
            self.array = xp.zeros((), dtype=xp.float64)
        if not xp.cuda.get_current_stream().is_capturing():
            self.draw(rng)
        return self.array

    def draw(self, rng) -> None:
        if self.array is not None:  # on the GPU: one draw per step, as the step as written
            self.array.fill(float(rng.integers(2**53)))


def recorded_or_warned(record, asked: bool, what: str):
    """``record()``, or None where CUDA refuses to record (nothing ran then, and the caller
    runs as written): a warning naming ``what`` and the reason, or, where the caller ``asked``
    for a record, the error itself."""
    try:
        return record()
    except Exception as err:
        if asked:
            raise
        warnings.warn(f"{what} could not be recorded as a CUDA graph ({type(err).__name__}: "
                      f"{err}); it runs as written", RuntimeWarning, stacklevel=5)
        return None


def graph_operations(dot: str) -> int:
    """The number of nodes of a CUDA graph in CUDA's DOT description of it: its statements that
    declare a node (``"graph_1_node_0"[...]``), not the edges (``"a" -> "b"``) nor the
    subgraphs' settings."""
    return sum(1 for line in dot.splitlines() if re.match(r'\s*"[^"]+"\s*\[', line))


class RecordedLoop:
    """The records of one inference loop: ``fn`` (the forward pass and what the loop makes of
    the logits) per shape of its inputs. The first batch of a shape runs as written (it
    compiles the kernels and makes their workspaces), the second is recorded and launched, the
    later ones are replays; the records go with the loop (an inference pass updates nothing, so
    no record goes stale while it runs). ``record``: None records on the cupy backend, False
    never; a recording CUDA refuses is a warning, then every batch as written (with True, an
    error)."""

    def __init__(self, model, fn, record: bool | None = None, where: str = "predict"):
        self.fn, self.asked, self.where, self.records = fn, bool(record), where, {}
        self.active = record is not False and model.backend == "cupy"
        if record and not self.active:
            raise ValueError(f"{where}: record=True, but recording a pass is a CUDA feature "
                             f"(the cupy backend; this model is on {model.backend})")

    def __call__(self, *inputs) -> tuple:
        if not self.active:
            return self.fn(*inputs)
        shape = tuple((tuple(a.shape), a.dtype) for a in inputs)
        if shape not in self.records:
            self.records[shape] = None
            return self.fn(*inputs)
        record = self.records[shape]
        if record is None:
            record = self.records[shape] = recorded_or_warned(
                lambda: RecordedCall(self.fn, inputs), self.asked, f"{self.where}: the pass")
            if record is None:  # CUDA refused to record (nothing ran): run as written
                self.active = False
                return self.fn(*inputs)
        return record.run(*inputs)


__all__ = ["RecordedCall", "RecordedLoop", "graph_operations", "recorded_or_warned"]
