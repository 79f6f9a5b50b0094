#!/usr/bin/env python3
"""Fuzz the public API of cysoftmax: arbitrary buffers, dtypes, shapes, layouts, aliasing
and concurrent mutation.

    python tests/fuzz_api.py --seconds 60         # the known cases, then random ones for 60 s
    python tests/fuzz_api.py --replay 0:1234      # one random case again (seed:index)
    python tests/fuzz_api.py --replay known:weight-memoryview-of-out
    python tests/fuzz_api.py --list-known

Each case calls ``softmax_cross_entropy``, ``cross_entropy``, ``softmax`` or
``log_softmax``.  The inputs of random case ``SEED:INDEX`` come from a generator seeded
with (SEED, INDEX), so any failure is replayed from its id.  Shapes: 0 rows, one sample,
C = 1..70, N-D batches, batches large enough for several threads.  Containers: ndarrays
(C or Fortran order, strided, reversed, read-only, big-endian, unaligned, bytearray-backed),
memoryviews, ``array.array``, lists, object arrays; labels and weight that are views of
``out``'s memory, ``out`` that is ``scores`` or overlaps it; every option, and one invalid
argument at a time (wrong dtype, shape, value or type).

A case passes when the call

* does not crash or hang the interpreter: cases run in worker processes, and a worker that
  dies (a segfault, a sanitizer's abort) is reported with the case it was running and
  replaced by a new one;
* raises ``TypeError``, ``ValueError`` or ``IndexError`` whose message names the argument
  at fault when one argument is invalid, and returns a result for valid arguments (for
  inputs sharing memory with ``out`` and for unaligned buffers either is allowed);
* when it returns, returns what ``tests/reference.py`` computes in float64 from private
  copies of the inputs taken before the call (shape, dtype, ``out`` identity, values), and
  writes nothing outside ``out`` (guard elements around it);
* leaves every input that does not share memory with ``out`` byte-identical.

Concurrent cases change a label or a class weight from another Python thread, back and
forth between a valid and an invalid value, during long calls; for them each call must
only not crash and give a finite result or such an error, and a final undisturbed call
must match the reference.

Exit status 0 when every case passed, 1 when any failed.  ``--inject`` makes the harness
corrupt the API's answers on purpose; the test suite uses it to show that each kind of
failure is caught.
"""

from __future__ import annotations

import argparse
import array
import copy
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

import reference  # tests/reference.py: float64 NumPy, independent of the kernels

SECONDS_ENV = "CYSOFTMAX_FUZZ_SECONDS"  # the test suite's fuzzing time, when set
MISSING = object()  # an argument that is not passed at all
SCE = "softmax_cross_entropy"
CE = "cross_entropy"
ARG_NAMES = ("scores", "labels", "weight", "out", "reduction", "ignore_index",
             "label_smoothing", "num_threads")
ALLOWED_ERRORS = (TypeError, ValueError, IndexError)
GUARD = -7.25e30  # the value of the guard elements around out
CASE_TIMEOUT_S = 180.0  # a worker silent this long on one case is reported as hung


@dataclass
class Mutation:
    """Another thread flips ``array[index]`` between ``good`` and ``bad`` during the calls."""
    target: str
    array: np.ndarray
    index: int
    good: object
    bad: object


@dataclass
class Case:
    id: str
    func: str
    args: dict  # name -> object (MISSING: not passed)
    expect: str = "ok"  # "ok": must return; "error": must raise; "either"
    fault: str = ""  # the invalid argument when expect == "error"
    notes: list = field(default_factory=list)
    out_base: object = None  # the buffer out was cut from (guard elements around out)
    mutation: Mutation = None
    calls: int = 1
    questionable: set = field(default_factory=set)  # may be refused (see _questionable)

    def describe(self):
        return f"{self.func}: " + "; ".join(self.notes)


class CaseFailure(Exception):
    pass


# ------------------------------------------------------------------- containers

def _unaligned(a):
    """A copy of a whose data starts one byte past an aligned address."""
    buf = bytearray(a.nbytes + 1 + a.dtype.itemsize)
    u = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    u[...] = a
    return u


def _strided(a, rng):
    """a as a non-contiguous view (every other element along one axis) of a bigger array."""
    if a.ndim == 0:
        return a.copy()
    axis = int(rng.integers(0, a.ndim))
    shape = list(a.shape)
    shape[axis] *= 2
    big = np.zeros(shape, dtype=a.dtype)
    sl = [slice(None)] * a.ndim
    sl[axis] = slice(None, None, 2)
    view = big[tuple(sl)]
    view[...] = a
    return view


def _reversed(a):
    if a.ndim == 0:
        return a.copy()
    b = np.ascontiguousarray(a[::-1])
    return b[::-1]


def _readonly(a):
    b = a.copy()
    b.flags.writeable = False
    return b


ARRAY_TYPECODE = {np.dtype(np.float64): "d", np.dtype(np.float32): "f",
                  np.dtype(np.int64): "q", np.dtype(np.int32): "i", np.dtype(np.int16): "h",
                  np.dtype(np.int8): "b", np.dtype(np.uint8): "B"}


def container(rng, a, notes, name, allow_list=True):
    """The logical array a (values fixed) in a randomly chosen container."""
    kinds = ["plain"] * 6 + ["fortran", "strided", "reversed", "readonly", "bigendian",
                             "unaligned", "memoryview", "memoryview-strided", "bytearray"]
    if a.ndim == 1 and a.dtype in ARRAY_TYPECODE:
        kinds.append("array.array")
    if allow_list and 0 < a.size <= 64:
        kinds.append("list")
    kind = kinds[int(rng.integers(0, len(kinds)))]
    if kind == "fortran" and a.ndim < 2:
        kind = "plain"
    if kind == "plain":
        c = a.copy(order="C")
    elif kind == "fortran":
        c = np.asfortranarray(a)
    elif kind == "strided":
        c = _strided(a, rng)
    elif kind == "reversed":
        c = _reversed(a)
    elif kind == "readonly":
        c = _readonly(a)
    elif kind == "bigendian":
        c = a.astype(a.dtype.newbyteorder(">"))
    elif kind == "unaligned":
        c = _unaligned(a)
    elif kind == "memoryview":
        c = memoryview(a.copy(order="C"))
    elif kind == "memoryview-strided":
        c = memoryview(_strided(a, rng))
    elif kind == "bytearray":
        c = np.frombuffer(bytearray(a.tobytes()), dtype=a.dtype)
        c = c.reshape(a.shape)
    elif kind == "array.array":
        c = array.array(ARRAY_TYPECODE[a.dtype], a.tolist())
    else:
        c = a.tolist()
    notes.append(f"{name}={kind} {a.dtype} {a.shape}")
    return c


# ------------------------------------------------------------------- random cases

def _pick(rng, items):
    return items[int(rng.integers(0, len(items)))]


def _n_classes(rng):
    return int(_pick(rng, [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 64, 65, 70,
                           int(rng.integers(1, 71))]))


def _batch_shape(rng):
    r = rng.random()
    if r < 0.1:
        return ()  # one sample: scores (C,), labels a scalar
    if r < 0.2:
        return (0,) if rng.random() < 0.7 else (int(rng.integers(0, 4)), 0)
    if r < 0.35:
        return tuple(int(rng.integers(1, 5)) for _ in range(int(rng.integers(2, 4))))
    if r < 0.45:
        return (int(rng.integers(500, 4000)),)  # several blocks, threads
    return (int(rng.integers(1, 70)),)


def _out_buffer(rng, shape, dtype, notes, guard_after=None):
    """A fresh C-contiguous out, NaN-filled, inside a buffer with guard elements around it."""
    n = int(np.prod(shape))
    g0 = int(_pick(rng, [0, 1, 3, 8]))
    g1 = guard_after or int(_pick(rng, [1, 2, 8]))
    base = np.full(g0 + n + g1, GUARD, dtype=dtype)
    out = base[g0:g0 + n].reshape(shape)
    out[...] = np.nan
    notes.append(f"out=fresh at +{g0} elements")
    return out, base


def random_case(seed, index):
    rng = np.random.default_rng([seed, index])
    func = _pick(rng, [SCE, SCE, SCE, SCE, CE, CE, "softmax", "log_softmax"])
    case = Case(f"{seed}:{index}", func, {})
    if func in (SCE, CE) and rng.random() < 0.04:
        return _concurrent_case(rng, case)
    C, batch = _n_classes(rng), _batch_shape(rng)
    shape = batch + (C,)
    dtype = np.dtype(_pick(rng, [np.float32, np.float64]))
    scale, offset = _pick(rng, [1.0, 1.0, 4.0, 30.0]), _pick(rng, [0.0, 0.0, 50.0, -1e3])
    s = (rng.normal(scale=scale, size=shape) + offset).astype(dtype)
    a = case.args
    a["scores"] = container(rng, s, case.notes, "scores")
    if isinstance(a["scores"], np.ndarray) and not a["scores"].flags.aligned:
        _questionable(case, "scores")
    if func in (SCE, CE):
        _labels_and_options(rng, case, C, batch)
    dtype = np.asarray(a["scores"]).dtype.newbyteorder("=")  # (a list of float32: float64)
    if func != CE:
        _out(rng, case, shape, dtype)
    if rng.random() < 0.08:
        a["num_threads"] = _pick(rng, [None, 1, 2, 7])
    if rng.random() < 0.25:
        _corrupt(rng, case, C, batch, dtype)
    return case


def _labels_and_options(rng, case, C, batch):
    a = case.args
    n = int(np.prod(batch))
    y = rng.integers(0, C, size=batch) if batch else np.int64(rng.integers(0, C))
    ignore = MISSING
    if rng.random() < 0.3:
        ignore = int(_pick(rng, [-100, -1, 0, C - 1, C + 3, -(2**63)]))
        if n:
            flat = np.asarray(y).reshape(-1)
            flat[rng.random(n) < 0.3] = ignore
            y = flat.reshape(batch) if batch else np.int64(flat[0])
        a["ignore_index"] = ignore
    y = np.asarray(y, dtype=np.int64)
    lo = int(y.min()) if y.size else 0
    dtypes = [np.int64, np.int64, np.int32, np.int16, np.uint8, np.uint64, np.intp]
    if lo < -128:
        dtypes = [np.int64, np.int32, np.int16]
    elif lo < 0:
        dtypes = [np.int64, np.int32, np.int8, np.int16]
    ydt = np.dtype(_pick(rng, dtypes))
    if not batch and rng.random() < 0.5:
        a["labels"] = int(y) if rng.random() < 0.5 else ydt.type(y)
        case.notes.append(f"labels={type(a['labels']).__name__} scalar")
    elif rng.random() < 0.05 and y.size <= 64:
        a["labels"] = np.array([int(v) for v in y.reshape(-1)], dtype=object).reshape(batch)
        case.notes.append(f"labels=object {batch}")
    else:
        a["labels"] = container(rng, y.astype(ydt), case.notes, "labels")
    if rng.random() < 0.3:
        w = rng.uniform(0.2, 3.0, size=C)
        if rng.random() < 0.2:
            w[rng.random(C) < 0.3] = 0.0
        wdt = np.dtype(_pick(rng, [np.float64, np.float64, np.float32, np.float16]))
        if rng.random() < 0.15:
            w, wdt = np.round(w) + 1, np.dtype(np.int64)
        a["weight"] = container(rng, w.astype(wdt), case.notes, "weight")
        if isinstance(a["weight"], np.ndarray) and not a["weight"].flags.aligned:
            _questionable(case, "weight")
    if rng.random() < 0.3:
        a["label_smoothing"] = float(_pick(rng, [0.0, 0.05, 0.3, 1.0, rng.random()]))
    if rng.random() < 0.6:
        a["reduction"] = _pick(rng, ["mean", "sum", "none"])
    if isinstance(a["labels"], np.ndarray) and not a["labels"].flags.aligned:
        _questionable(case, "labels")


def _out(rng, case, shape, dtype):
    """No out, a fresh one, scores itself, a partly overlapping one, or an out whose memory
    labels and weight share."""
    a = case.args
    r = rng.random()
    if r < 0.4:
        return
    s = a["scores"]
    plain_scores = (isinstance(s, np.ndarray) and s.flags.c_contiguous and s.flags.writeable
                    and s.dtype == dtype and s.dtype.isnative and s.flags.aligned)
    if r < 0.5 and plain_scores:
        a["out"] = s
        case.notes.append("out=scores")
    elif r < 0.55 and plain_scores and s.size > 1:
        base = np.ascontiguousarray(np.concatenate([s.reshape(-1), s.reshape(-1)[:3]]))
        k = int(rng.integers(1, min(3, s.size) + 1))
        a["scores"] = base[:s.size].reshape(shape)
        a["out"] = base[k:k + s.size].reshape(shape)
        case.notes.append(f"out=scores' buffer shifted by {k} elements")
        _questionable(case, "out", "scores")
    else:
        a["out"], case.out_base = _out_buffer(rng, shape, dtype, case.notes)
    if case.func == SCE and rng.random() < 0.5:
        _alias_with_out(rng, case, shape)
    if case.func != SCE and rng.random() < 0.2 and case.out_base is not None:
        # scores read from out's own memory (the same place: an in-place call)
        out = a["out"]
        out[...] = np.asarray(a["scores"]).astype(dtype)
        a["scores"] = memoryview(out) if rng.random() < 0.5 else out
        case.notes.append("scores=out's memory (memoryview or the array)")
        _questionable(case, "out", "scores")


def _questionable(case, *names):
    """Arguments that the API may accept or refuse (memory shared with out, unaligned)."""
    case.questionable.update(names)
    if case.expect == "ok":
        case.expect = "either"


def _replace_note(case, name, note):
    case.notes = [n for n in case.notes if not n.startswith(name + "=")] + [note]


def _alias_with_out(rng, case, shape):
    """labels and/or weight moved into out's memory (their values kept)."""
    a = case.args
    out = a["out"]
    flat = out.reshape(-1)
    nbytes = flat.nbytes
    y = a.get("labels")
    batch = shape[:-1]
    which = _pick(rng, ["labels", "weight", "both"])
    used = 0
    if which in ("labels", "both") and batch and isinstance(y, (np.ndarray, memoryview, list,
                                                                  array.array)):
        yv = np.asarray(y).astype(np.int64)
        ldt = np.dtype(_pick(rng, [np.int64, np.int64, np.int32]))
        n = yv.size
        if n and n * ldt.itemsize <= nbytes:
            start = int(rng.integers(0, (nbytes - n * ldt.itemsize) // ldt.itemsize + 1))
            view = flat.view(np.uint8)[start * ldt.itemsize:(start + n) * ldt.itemsize]
            lab = view.view(ldt).reshape(batch)
            lab[...] = yv
            used = (start + n) * ldt.itemsize
            kind = _pick(rng, ["ndarray", "memoryview", "memoryview"])
            a["labels"] = lab if kind == "ndarray" else memoryview(lab)
            _replace_note(case, "labels", f"labels={kind} {ldt} of out's memory at byte "
                                          f"{start * ldt.itemsize}")
            _questionable(case, "labels", "out")
    w = a.get("weight", MISSING)
    if which in ("weight", "both"):
        C = shape[-1]
        w_values = (np.asarray(w, dtype=np.float64) if w is not MISSING
                    else rng.uniform(0.2, 3.0, size=C))
        first = -(-used // flat.itemsize)
        if w_values.shape == (C,) and first + C <= flat.size:
            view = flat[first:first + C]
            view[...] = w_values
            kind = _pick(rng, ["ndarray", "memoryview", "memoryview"])
            a["weight"] = view if kind == "ndarray" else memoryview(view)
            _replace_note(case, "weight", f"weight={kind} {flat.dtype} of out's memory at "
                                          f"element {first}")
            _questionable(case, "weight", "out")


def _corrupt(rng, case, C, batch, dtype):
    """Make exactly one argument invalid."""
    a = case.args
    options = ["scores", "reduction", "num_threads"]
    if case.func in (SCE, CE):
        options += ["labels", "labels", "weight", "label_smoothing", "ignore_index"]
    if case.func != CE:
        options += ["out"]
    name = _pick(rng, options)
    shape = batch + (C,)
    if name == "scores":
        kind = _pick(rng, ["int", "bool", "complex", "float16", "object", "bytes", "0-d", "C=0"])
        s = np.asarray(a["scores"])
        bad = {"int": lambda: s.astype(np.int64), "bool": lambda: s > 0,
               "complex": lambda: s.astype(np.complex128),
               "float16": lambda: s.astype(np.float16), "object": lambda: s.astype(object),
               "bytes": lambda: bytearray(8 * max(1, s.size)),
               "0-d": lambda: np.float64(1.0), "C=0": lambda: np.zeros(batch + (0,), dtype)}[kind]()
        # (out and weight, whose valid shape and dtype follow scores, are left out)
        a.pop("out", None)
        a.pop("weight", None)
        case.out_base = None
        if kind in ("bytes", "0-d") and case.func in (SCE, CE):
            kind = "int"
            bad = s.astype(np.int64)
    elif name == "labels":
        y = np.asarray(a["labels"]).astype(np.int64)
        kind = _pick(rng, ["float", "shape", "high", "negative", "huge"])
        if kind in ("high", "negative", "huge") and y.size == 0:
            kind = "shape"
        if kind == "float":
            bad = y.astype(np.float64)
        elif kind == "shape":
            bad = np.zeros(batch + (2,), dtype=np.int64) if rng.random() < 0.5 else \
                np.zeros((int(np.prod(batch)) + 1,), dtype=np.int64)
        else:
            flat = y.reshape(-1).copy()
            ignore = a.get("ignore_index", -100)
            value = {"high": C + int(rng.integers(0, 3)), "negative": -1 if ignore != -1 else -2,
                     "huge": _pick(rng, [2**40, -(2**40), 2**62])}[kind]
            flat[int(rng.integers(0, flat.size))] = value
            bad = flat.reshape(y.shape) if y.ndim else int(flat[0])
            if isinstance(bad, np.ndarray) and rng.random() < 0.5:
                bad = memoryview(bad)
    elif name == "weight":
        kind = _pick(rng, ["length", "nan", "inf", "complex", "2-d"])
        w = np.ones(C)
        bad = {"length": lambda: np.ones(C + 1), "nan": lambda: np.where(np.arange(C) == 0,
                                                                         np.nan, w),
               "inf": lambda: np.where(np.arange(C) == C - 1, -np.inf, w),
               "complex": lambda: w.astype(np.complex128), "2-d": lambda: w[:, None]}[kind]()
    elif name == "out":
        kind = _pick(rng, ["dtype", "shape", "fortran", "readonly", "memoryview", "list",
                           "strided"])
        other = np.float32 if dtype == np.float64 else np.float64
        bad = {"dtype": lambda: np.empty(shape, other), "shape": lambda: np.empty(shape + (1,), dtype),
               "fortran": lambda: np.empty(shape, dtype, order="F"),
               "readonly": lambda: _readonly(np.empty(shape, dtype)),
               "memoryview": lambda: memoryview(np.empty(shape, dtype)),
               "list": lambda: np.zeros(shape).tolist(),
               "strided": lambda: np.empty(shape[:-1] + (2 * C,), dtype)[..., ::2]}[kind]()
        if isinstance(bad, np.ndarray) and kind in ("fortran", "strided") and bad.flags.c_contiguous:
            return  # a shape where that layout is C-contiguous too: still valid
        case.out_base = None
    elif name == "reduction":
        kind = "value"
        bad = _pick(rng, ["avg", "MEAN", None, 1, ""])
    elif name == "label_smoothing":
        kind = "value"
        bad = _pick(rng, [-0.1, 1.5, float("nan"), float("inf"), "0.1", None, [0.1]])
    elif name == "ignore_index":
        kind = "value"
        bad = _pick(rng, [1.5, True, 2**70, "x", None])
    else:  # num_threads
        kind = "value"
        bad = _pick(rng, [0, -1, 2.0, True, "2"])
    a[name] = bad
    case.expect, case.fault = "error", name
    case.questionable = {n for n in case.questionable if a.get(n, MISSING) is not MISSING}
    case.notes.append(f"INVALID {name} ({kind}: {type(bad).__name__})")


def _concurrent_case(rng, case):
    """A long call while another thread flips a label or a class weight."""
    a = case.args
    C = int(_pick(rng, [3, 8, 16, 17, 33, 70]))
    N = 2_000_000 // C
    dtype = np.dtype(_pick(rng, [np.float32, np.float64]))
    a["scores"] = rng.normal(size=(N, C)).astype(dtype)
    y = rng.integers(0, C, size=N)
    target = "weight" if C <= 16 or rng.random() < 0.3 else "labels"
    a["labels"] = y if rng.random() < 0.6 else memoryview(y)
    if target == "weight" or rng.random() < 0.3:
        w = np.linspace(0.5, 2.0, C)
        a["weight"] = w
    if rng.random() < 0.3:
        a["label_smoothing"] = 0.1
    a["reduction"] = _pick(rng, ["mean", "sum", "none"])
    a["num_threads"] = int(_pick(rng, [1, 2]))
    if case.func == SCE and rng.random() < 0.5:
        a["out"], case.out_base = _out_buffer(rng, (N, C), dtype, case.notes, guard_after=16)
    if target == "labels":
        bad = int(_pick(rng, [C + 5, 2**40, -(2**40)]))
        case.mutation = Mutation("labels", y, N - 1, int(y[-1]), bad)
    else:
        k = int(y[-1])
        bad = float(_pick(rng, [np.inf, -np.inf, np.nan]))
        case.mutation = Mutation("weight", a["weight"], k, float(a["weight"][k]), bad)
    case.calls = 4
    case.expect = "either"
    case.notes.append(f"scores=({N}, {C}) {dtype}, labels {type(a['labels']).__name__}, "
                      f"{target}[{case.mutation.index}] flipped to {bad!r} by another thread")
    return case


# ------------------------------------------------------------------- known cases

def _known_labels_memoryview_of_out():
    s = np.zeros((64, 17))
    out = np.zeros((64, 17))
    lab = out.reshape(-1).view(np.int64)[:64]
    lab[:] = 1
    return Case("known:labels-memoryview-of-out", SCE,
                {"scores": s, "labels": memoryview(lab), "out": out}, expect="either",
                notes=["labels=memoryview int64 of out's first 512 bytes, C=17"])


def _known_weight_memoryview_of_out():
    C, N = 4, 64
    rng = np.random.default_rng(0)
    s = rng.normal(size=(N, C))
    y = rng.integers(0, C, N)
    out = np.zeros((N, C))
    out.reshape(-1)[:C] = 1.0
    return Case("known:weight-memoryview-of-out", SCE,
                {"scores": s, "labels": y, "weight": memoryview(out.reshape(-1)[:C]),
                 "out": out, "reduction": "sum"}, expect="either",
                notes=["weight=memoryview float64 of out's first C elements, C=4, sum"])


def _known_label_flipped_during_call():
    rng = np.random.default_rng(3)
    C, N = 33, 60_000
    y = rng.integers(0, C, size=N)
    case = Case("known:label-flipped-during-call", SCE,
                {"scores": rng.normal(size=(N, C)), "labels": y, "num_threads": 1},
                expect="either", calls=30,
                notes=["labels[-1] flipped between a class and 2**40 by another thread"])
    case.mutation = Mutation("labels", y, N - 1, int(y[-1]), 2**40)
    return case


KNOWN = {
    "labels-memoryview-of-out": _known_labels_memoryview_of_out,
    "weight-memoryview-of-out": _known_weight_memoryview_of_out,
    "label-flipped-during-call": _known_label_flipped_during_call,
}


def make_case(case_id):
    if case_id.startswith("known:"):
        return KNOWN[case_id[len("known:"):]]()
    seed, index = case_id.split(":")
    return random_case(int(seed), int(index))


# ------------------------------------------------------------------- checking

def _fingerprint(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return ("O", obj.shape, obj.tolist())
        return (obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, (memoryview, array.array)):
        return bytes(obj)
    return copy.deepcopy(obj)


def _shares(obj, out):
    if not isinstance(out, np.ndarray) or not isinstance(obj, (np.ndarray, memoryview)):
        return False
    return obj is out or np.may_share_memory(np.asarray(obj), out)


def _private(obj, dtype=None):
    """A copy of an input, as the reference reads it."""
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return np.array([int(v) for v in obj.reshape(-1)], dtype=np.int64).reshape(obj.shape)
    return np.array(obj, dtype=dtype, copy=True)


def _reference(case, snapshot):
    """What the call must return, from the private copies."""
    s = snapshot["scores"]
    if case.func in ("softmax", "log_softmax"):
        fn = reference.softmax if case.func == "softmax" else reference.log_softmax
        return fn(s), None
    a = case.args
    kw = {k: a[k] for k in ("reduction", "ignore_index", "label_smoothing") if k in a}
    loss, grad = reference.cross_entropy(s, snapshot["labels"], weight=snapshot.get("weight"),
                                         **kw)
    return loss, grad


def _tolerance(dtype):
    return (1e-4, 1e-5) if dtype == np.float32 else (1e-8, 1e-10)


def _compare(what, got, want, dtype, shape):
    got_arr = np.asarray(got)
    if got_arr.shape != shape:
        raise CaseFailure(f"wrong {what} shape {got_arr.shape}, expected {shape}")
    if got_arr.dtype != dtype:
        raise CaseFailure(f"wrong {what} dtype {got_arr.dtype}, expected {dtype}")
    rtol, atol = _tolerance(dtype)
    got64, want64 = got_arr.astype(np.float64), np.asarray(want, dtype=np.float64)
    ok = np.isclose(got64, want64, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        bad = np.argwhere(~ok)[0] if got64.ndim else ()
        idx = tuple(int(i) for i in bad)
        raise CaseFailure(f"wrong {what}: {got64[idx]!r} at {idx}, reference {want64[idx]!r} "
                          f"({int((~ok).sum())} of {ok.size} entries differ)")


def _check_result(case, result, snapshot):
    a = case.args
    s = snapshot["scores"]
    dtype = np.dtype(np.float32) if s.dtype.kind == "f" and s.dtype.itemsize == 4 \
        else np.dtype(np.float64)
    want_value, want_grad = _reference(case, snapshot)
    out = a.get("out", MISSING)
    if case.func == CE:
        loss, grad = result, None
    elif case.func == SCE:
        if not (isinstance(result, tuple) and len(result) == 2):
            raise CaseFailure(f"returned {type(result).__name__}, expected (loss, grad)")
        loss, grad = result
    else:
        loss, grad, want_grad = None, result, want_value
    if loss is not None:
        reduction = a.get("reduction", "mean")
        lshape = s.shape[:-1] if reduction == "none" else ()
        _compare("loss", loss, want_value, dtype, lshape)
    if grad is not None:
        if isinstance(out, np.ndarray) and grad is not out:
            raise CaseFailure("the result is not the out array passed")
        _compare("gradient" if case.func == SCE else case.func, grad, want_grad, dtype, s.shape)


def _check_inputs(case, snapshot):
    for name in ("scores", "labels", "weight"):
        key = "print:" + name
        if key in snapshot and _fingerprint(case.args[name]) != snapshot[key]:
            raise CaseFailure(f"the call modified {name}, an input that does not share memory "
                              f"with out")
    base, out = case.out_base, case.args.get("out")
    if base is not None:
        n = out.size
        start = (out.__array_interface__["data"][0] - base.__array_interface__["data"][0]) \
            // base.itemsize
        guard = np.concatenate([base[:start], base[start + n:]])
        if not (guard == GUARD).all():
            raise CaseFailure("the call wrote outside out (a guard element changed)")


def _check_error(case, exc):
    if not isinstance(exc, ALLOWED_ERRORS):
        raise CaseFailure(f"raised {type(exc).__name__}: {exc}")
    msg = str(exc)
    if case.expect == "ok":
        raise CaseFailure(f"valid arguments refused: {type(exc).__name__}: {msg}")
    if case.expect == "error":
        if not any(re.search(rf"\b{name}\b", msg) for name in {case.fault} | case.questionable):
            raise CaseFailure(f"the message does not name {case.fault}: "
                              f"{type(exc).__name__}: {msg}")
    elif not any(re.search(rf"\b{name}\b", msg) for name in ARG_NAMES):
        raise CaseFailure(f"the message names no argument: {type(exc).__name__}: {msg}")


def _call(api, case):
    kwargs = {k: v for k, v in case.args.items()
              if k not in ("scores", "labels") and v is not MISSING}
    fn = getattr(api, case.func)
    if case.func in (SCE, CE):
        return fn(case.args["scores"], case.args["labels"], **kwargs)
    return fn(case.args["scores"], **kwargs)


def take_snapshot(case):
    a = case.args
    out = a.get("out", MISSING)
    snap = {}
    for name in ("scores", "labels", "weight"):
        obj = a.get(name, MISSING)
        if obj is MISSING or obj is None:
            continue
        try:
            snap[name] = _private(obj)
        except Exception:  # an invalid input the reference cannot read
            snap[name] = None
        if not _shares(obj, out):
            snap["print:" + name] = _fingerprint(obj)
    return snap


def run_case(api, case):
    """Run one case; raise CaseFailure when a property does not hold."""
    if case.mutation is not None:
        return _run_concurrent(api, case)
    snapshot = take_snapshot(case)
    try:
        result = _call(api, case)
    except Exception as exc:  # noqa: BLE001  (every exception is judged)
        _check_inputs(case, snapshot)
        _check_error(case, exc)
        return
    if case.expect == "error":
        raise CaseFailure(f"invalid {case.fault} accepted (returned {type(result).__name__})")
    _check_result(case, result, snapshot)
    _check_inputs(case, snapshot)


def _flipper(m, stop):
    arr, i, good, bad = m.array, m.index, m.good, m.bad
    while not stop.is_set():
        arr[i] = bad
        arr[i] = good


def _run_concurrent(api, case):
    m = case.mutation
    stop = threading.Event()
    thread = threading.Thread(target=_flipper, args=(m, stop), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        for _ in range(case.calls):
            try:
                result = _call(api, case)
            except Exception as exc:  # noqa: BLE001
                if not isinstance(exc, ALLOWED_ERRORS) or not re.search(
                        rf"\b{m.target}\b", str(exc)):
                    raise CaseFailure(f"while {m.target} changed: {type(exc).__name__}: {exc}")
            else:
                parts = result if isinstance(result, tuple) else (result,)
                if not all(np.isfinite(np.asarray(p)).all() for p in parts):
                    raise CaseFailure(f"while {m.target} changed: a non-finite result")
            if time.monotonic() > deadline:
                break
    finally:
        stop.set()
        thread.join()
        m.array[m.index] = m.good
    _check_inputs(case, {})
    # undisturbed, the same arguments must give the reference values
    case.mutation, case.expect = None, "ok"
    if case.out_base is not None:
        case.out_base[...] = GUARD
    run_case(api, case)


# ------------------------------------------------------------------- fault injection

class _Injected:
    """The API with one kind of fault added (to show that the harness catches it)."""

    def __init__(self, api, kind, crash_at):
        self._api, self._kind, self._calls, self._crash_at = api, kind, 0, crash_at

    def __getattr__(self, name):
        fn = getattr(self._api, name)

        def wrapped(*args, **kwargs):
            self._calls += 1
            if self._kind == "crash" and self._calls == self._crash_at:
                import ctypes
                ctypes.string_at(1, 1)  # reads address 1: a segfault
            if self._kind == "unnamed-error":
                raise ValueError("bad input")
            result = fn(*args, **kwargs)
            if self._kind == "wrong-loss" and name in (SCE, CE):
                loss = result[0] if name == SCE else result
                loss = np.asarray(loss * 1.001).astype(np.asarray(loss).dtype)
                return (loss, result[1]) if name == SCE else loss
            if self._kind == "modify-input":
                s = args[0]
                if isinstance(s, np.ndarray) and s.flags.writeable and s.size \
                        and s is not kwargs.get("out"):
                    s.reshape(-1)[:1] = 0.5  # (a view when C-contiguous)
            return result
        return wrapped


def load_api(inject=None, crash_at=None):
    import cysoftmax
    return _Injected(cysoftmax, inject, crash_at) if inject else cysoftmax


# ------------------------------------------------------------------- worker, driver

def _emit(kind, case_id, text=""):
    sys.stdout.write(json.dumps([kind, case_id, text]) + "\n")
    sys.stdout.flush()


def worker(args):
    """Run cases in this process, reporting each on stdout (START before the call)."""
    import faulthandler
    faulthandler.enable()
    api = load_api(args.inject, crash_at=3 if args.start == 0 else None)  # one crash
    ids = [f"known:{k}" for k in args.known.split(",") if k]
    for case_id in ids:
        _run_one(api, case_id)
    index = args.start
    while time.time() < args.until:
        _run_one(api, f"{args.seed}:{index}")
        index += 1
    _emit("DONE", f"{args.seed}:{index}")


def _run_one(api, case_id):
    try:
        case = make_case(case_id)
    except Exception:  # noqa: BLE001  (a bug of the harness: reported, not hidden)
        _emit("START", case_id, "(could not be built)")
        _emit("FAIL", case_id, "harness error:\n" + traceback.format_exc())
        return
    _emit("START", case_id, case.describe())
    try:
        run_case(api, case)
    except CaseFailure as exc:
        _emit("FAIL", case_id, str(exc))
    except Exception:  # noqa: BLE001
        _emit("FAIL", case_id, "harness error:\n" + traceback.format_exc())
    else:
        _emit("PASS", case_id)


REPORT_LINE = re.compile(r"ERROR: AddressSanitizer|runtime error:|Fatal Python error|"
                         r"SUMMARY: |Segmentation fault|LeakSanitizer|WARNING: ThreadSanitizer|"
                         r"corrupted|double free|free\(\)|malloc\(\)")


def _worker_command(args, start, known, until_epoch):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--seed", str(args.seed),
           "--start", str(start), "--known", ",".join(known), "--until", repr(until_epoch)]
    if args.inject:
        cmd += ["--inject", args.inject]
    return cmd


def drive(args):
    """Run the known cases, then random ones until the time is up, in worker processes."""
    t0 = time.time()
    until = t0 + args.seconds
    known = [] if args.no_known else list(KNOWN)
    start = 0
    failures, n_cases, last_desc = [], 0, {}
    while True:
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(_worker_command(args, start, known, until),
                                    stdout=subprocess.PIPE, stderr=err, text=True)
            lines = queue.Queue()
            threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
            current, done_at, hung = None, None, False
            while True:
                try:
                    line = lines.get(timeout=CASE_TIMEOUT_S)
                except queue.Empty:
                    hung = True
                    proc.kill()
                    break
                if line is None:
                    break
                if not line.startswith("["):
                    continue  # not the harness's (something printed to stdout)
                kind, case_id, text = json.loads(line)
                if kind == "START":
                    current, last_desc[case_id] = case_id, text
                    n_cases += 1
                elif kind == "FAIL":
                    failures.append((case_id, "failed", text))
                    current = None
                elif kind == "PASS":
                    current = None
                elif kind == "DONE":
                    done_at = case_id
            rc = proc.wait()
            err.seek(0)
            stderr = err.read()
        if stderr:
            sys.stderr.write(stderr)
            sys.stderr.flush()
        if done_at is not None and rc == 0 and current is None:
            break
        if current is None:  # died between cases, or without starting one
            failures.append(("-", "worker died", f"exit status {rc}\n" + _report_lines(stderr)))
            break
        what = "hung" if hung else "crashed"
        failures.append((current, what, f"exit status {rc}\n" + _report_lines(stderr)))
        if current.startswith("known:"):
            known = known[known.index(current[len("known:"):]) + 1:]
        else:
            known, start = [], int(current.split(":")[1]) + 1
        if not known and time.time() >= until:
            break
    _print_summary(failures, n_cases, last_desc, time.time() - t0, args.show)
    return 1 if failures else 0


def _read_lines(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


def _report_lines(stderr, limit=12):
    hits = [ln for ln in stderr.splitlines() if REPORT_LINE.search(ln)]
    if not hits:
        hits = stderr.splitlines()[-limit:]
    return "\n".join(hits[:limit])


def _script_path():
    rel = os.path.relpath(os.path.abspath(__file__))
    return os.path.abspath(__file__) if rel.startswith("..") else rel


def fuzzed_package(stdout):
    """The cysoftmax package directory a run's summary names (None if there is none)."""
    found = re.search(r"^fuzz_api: cysoftmax at (.*), target", stdout, re.M)
    return found and os.path.realpath(found.group(1))


def _print_summary(failures, n_cases, last_desc, seconds, shown):
    import cysoftmax
    print(f"fuzz_api: cysoftmax at {os.path.dirname(cysoftmax.__file__)}, "
          f"target {cysoftmax.build_info()['target']}")
    print(f"fuzz_api: {n_cases} cases in {seconds:.1f} s, {len(failures)} failed")
    kinds = {}
    for case_id, what, text in failures:
        key = what + ": " + re.split(r"[:(\n]", text, maxsplit=1)[0].strip()
        kinds.setdefault(key, []).append(case_id)
    for key, ids in kinds.items():
        print(f"  {len(ids):5d} x {key} (e.g. {', '.join(ids[:3])})")
    for case_id, what, text in failures[:shown]:
        print(f"\n[{what}] {case_id}: {last_desc.get(case_id, '')}")
        for ln in text.splitlines():
            print(f"    {ln}")
        if case_id != "-":
            print(f"    replay: python {_script_path()} --replay {case_id}")
    if len(failures) > shown:
        print(f"\n... and {len(failures) - shown} more failures (--show to see them)")


def replay(args):
    api = load_api(args.inject)
    case = make_case(args.replay)
    print(case.describe())
    try:
        run_case(api, case)
    except CaseFailure as exc:
        print(f"FAILED: {exc}")
        return 1
    print("passed")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0,
                   help="time for random cases after the known ones (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cases (default 0)")
    p.add_argument("--no-known", action="store_true", help="skip the known cases")
    p.add_argument("--show", type=int, default=25, metavar="N",
                   help="failures shown in full (default 25)")
    p.add_argument("--replay", metavar="ID", help="run one case (SEED:INDEX or known:NAME)")
    p.add_argument("--list-known", action="store_true", help="list the known cases")
    p.add_argument("--inject", choices=["crash", "wrong-loss", "modify-input", "unnamed-error"],
                   help="add a fault to the API's answers (to test the harness)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--known", default="", help=argparse.SUPPRESS)
    p.add_argument("--until", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.list_known:
        for name, make in KNOWN.items():
            print(f"known:{name}: {make().describe()}")
        return 0
    if args.replay:
        return replay(args)
    if args.worker:
        worker(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    # cysoftmax: the installed package or PYTHONPATH's first, else this checkout (built in place)
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
