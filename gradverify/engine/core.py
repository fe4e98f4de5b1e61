"""The engine's core: its tensor, the recording of the graph, and reverse accumulation.

A :class:`Tensor` holds a numpy array (``.array``).  Every op goes through :func:`apply`,
which runs the op table's forward on the arrays and, when gradients are
wanted, records ``(op, inputs, attrs)`` on the output: the computation graph
is built as the program runs.  When tangents are attached (forward mode), the
op's JVP rule runs right after the forward.
"""
from __future__ import annotations

import functools
import itertools
import weakref
from heapq import heappop, heappush, heapreplace

import numpy as np

from gradverify.ops import TABLE
from gradverify.ops.spec import FROM_VJP, LINEAR


class _Mode:
    """Process-wide autograd switches, as torch's grad mode (the engine is not thread-safe)."""

    grad_enabled = True
    forward_levels: tuple = ()  # ids of the active jvp calls, outermost first
    in_backward = False
    default_dtype = np.dtype(np.float32)
    latest_modification = 0  # number of the last in-place change (0: none yet)

    def __init__(self):
        # The switches as instance attributes: Python specialises reads of those (apply reads two at
        # every op), not reads that fall through to the class.
        for name in ("grad_enabled", "forward_levels", "in_backward", "default_dtype", "latest_modification"):
            setattr(self, name, getattr(_Mode, name))


MODE = _Mode()
_NO_ATTRS: dict = {}


# Every recorded node gets the next number, so a node's number exceeds its inputs': reverse
# accumulation visits nodes by decreasing number, and no separate topological sort is needed.
_next_sequence_number = itertools.count(1).__next__


# In-place changes, by the memory they changed: id(owning array) -> (weak reference to it, number).
# Numbers come from the same counter as the nodes', so a node numbered below a change of memory it
# reads was recorded before it, and would differentiate stale values (PyTorch's version counters).
_MODIFIED: dict = {}


def _owner(array):
    return array if array.base is None else array.base


def mark_modified(t):
    """Record that ``t``'s memory (shared with its views) has just been changed in place."""
    owner = _owner(t.array)
    key = id(owner)
    number = _next_sequence_number()
    _MODIFIED[key] = (weakref.ref(owner, lambda _ref, key=key: _MODIFIED.pop(key, None)), number)
    MODE.latest_modification = number


def _changed_since(t, number):
    """Whether ``t``'s memory was changed in place after node ``number`` was recorded."""
    owner = _owner(t.array)
    entry = _MODIFIED.get(id(owner))
    return entry is not None and entry[1] > number and entry[0]() is owner


def _refuse_if_changed(t, op, parents):
    """Raise PyTorch's error when a tensor the backward of node ``t`` reads was changed in place after ``t`` was made.

    The node reads its inputs, and its output ``t`` where PyTorch's op saves its result (``op.saves_output``).
    """
    saved = [("output 0", t)] if op.saves_output else []
    for role, tensor in saved + [(f"input {i}", x) for i, x in enumerate(parents)]:
        if _changed_since(tensor, t._seq):
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace operation: "
                f"{role} of {op.name!r}, of shape {tensor.array.shape} and dtype {tensor.array.dtype}, was changed "
                "by an in-place operation after it was saved; compute the gradient first, or change a copy "
                "(x.clone())"
            )


# Hooks and retain_grad, by tensor: id(tensor) -> _Hooks.  Empty until a tensor gets one, so a
# backward without hooks pays one truthiness check of it per node.
_HOOKS: dict = {}
_next_hook_key = itertools.count().__next__


class _Hooks:
    """A tensor's gradient hooks (in registration order) and whether it retains its gradient."""

    __slots__ = ("tensor", "functions", "retains_grad")

    def __init__(self, t):
        key = id(t)
        self.tensor = weakref.ref(t, lambda _ref: _HOOKS.pop(key, None))
        self.functions = {}
        self.retains_grad = False


def _live_hooks(t):
    """``t``'s entry in ``_HOOKS``, or None (an entry left by a dead tensor whose id ``t`` reuses is not ``t``'s)."""
    entry = _HOOKS.get(id(t))
    return entry if entry is not None and entry.tensor() is t else None


def _hooks_of(t):
    """``t``'s entry in ``_HOOKS``, made on first use."""
    entry = _live_hooks(t)
    if entry is None:
        entry = _HOOKS[id(t)] = _Hooks(t)
    return entry


class RemovableHandle:
    """What ``register_hook`` returns: ``remove()`` unregisters the hook (a second call does nothing)."""

    def __init__(self, tensor_id, entry):
        self.key, self._tensor_id, self._entry = _next_hook_key(), tensor_id, entry

    def remove(self):
        entry = self._entry
        entry.functions.pop(self.key, None)
        if not entry.functions and not entry.retains_grad and _HOOKS.get(self._tensor_id) is entry:
            del _HOOKS[self._tensor_id]


def _run_hooks(t, g, create_graph):
    """``t``'s cotangent ``g`` after its hooks (each may return a replacement), retained as ``t.grad`` if asked."""
    entry = _live_hooks(t)
    if entry is None:
        return g
    for function in list(entry.functions.values()):
        replacement = function(g)
        if replacement is None:
            continue
        if not isinstance(replacement, Tensor) or replacement.array.shape != g.array.shape:
            raise RuntimeError(
                f"hook {getattr(function, '__name__', function)!r} must return None or a Tensor of shape "
                f"{g.array.shape}, got {getattr(replacement, 'shape', type(replacement).__name__)}"
            )
        g = replacement
    if entry.retains_grad:
        if t.grad is None:
            t.grad = g.clone() if create_graph else _wrap(g.array.copy())
        else:
            t.grad = t.grad + g if create_graph else _wrap(t.grad.array + g.array)
    return g


def is_floating(dtype) -> bool:
    """True for the floating dtypes the engine differentiates."""
    return np.dtype(dtype).kind == "f"


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    Construct with :func:`gradverify.engine.tensor`; the interface follows
    ``torch.Tensor`` (``.backward()``, ``.grad``, ``.item()``, operators ...).
    """

    __slots__ = ("array", "requires_grad", "grad", "_ctx", "_seq", "_tangent", "__weakref__")
    # Make numpy defer to Tensor's reflected operators (ndarray + Tensor -> Tensor).
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        if type(data) is np.ndarray:
            self.array = data
        elif isinstance(data, (list, tuple)):
            # torch.Tensor([...]), the legacy constructor: the numbers in the default float dtype, whatever they are.
            self.array = np.array(data, dtype=MODE.default_dtype)
        else:
            self.array = np.asarray(data)
        if requires_grad and not is_floating(self.array.dtype):
            raise RuntimeError(
                f"only floating-point tensors can require gradients; this tensor has dtype {self.array.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._tangent = None

    # ------------------------------------------------------------ properties
    @property
    def data(self):
        """This tensor's values as a tensor cut from the graph, sharing its memory (torch's ``.data``).

        Its in-place changes (``p.data += -lr * p.grad``) change this tensor's values without being recorded;
        assigning ``p.data = other`` makes this tensor hold ``other``'s values (its memory, as torch).
        """
        return _wrap(self.array)

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"data: expected a Tensor to take the values of, got {type(value).__name__}")
        self.array = value.array

    @property
    def shape(self):
        return self.array.shape

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def is_leaf(self):
        """True for tensors created by the user rather than by an op that records gradients."""
        return self._ctx is None

    @property
    def grad_fn(self):
        """Name of the op that produced this tensor, or None for a leaf."""
        ctx = self._ctx
        if ctx is None:
            return None
        return ctx[0].name

    def __repr__(self):
        body = np.array2string(self.array, separator=", ", precision=4, prefix="tensor(")
        extra = ""
        if self.array.dtype not in (MODE.default_dtype, np.dtype(np.int64), np.dtype(np.bool_)):  # torch's defaults
            extra += f", dtype={self.array.dtype}"
        if self.grad_fn is not None:
            extra += f", grad_fn=<{self.grad_fn}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __len__(self):
        if self.array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        if self.array.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.array.size} elements is ambiguous; use .any() or .all()"
            )
        return bool(self.array)

    def __float__(self):
        return float(self.item())

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype, copy=False)

    __hash__ = object.__hash__

    # ----------------------------------------------------- leaves and values
    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.array.size != 1:
            raise ValueError(f"item() needs a tensor with one element; this one has shape {self.array.shape}")
        return self.array.item()

    def numpy(self):
        """The underlying numpy array (shares memory, like torch's .numpy())."""
        if self.requires_grad:
            raise RuntimeError("can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()")
        return self.array

    def tolist(self):
        return self.array.tolist()

    def detach(self):
        """A tensor sharing this one's data, cut from the graph."""
        return Tensor(self.array)

    def clone(self):
        """A differentiable copy (the copy is recorded in the graph)."""
        out = apply(TABLE["reshape"], (self,), {"shape": self.array.shape})
        out.array = out.array.copy()
        return out

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place on a leaf and return the tensor."""
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only change leaf tensors; use detach() first")
        if requires_grad and not is_floating(self.array.dtype):
            raise RuntimeError(
                f"only floating-point tensors can require gradients; this tensor has dtype {self.array.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        return self

    @property
    def retains_grad(self):
        """True for a non-leaf whose ``.grad`` is kept by :meth:`retain_grad`."""
        entry = _live_hooks(self)
        return entry is not None and entry.retains_grad

    def retain_grad(self):
        """Keep this non-leaf tensor's gradient in ``.grad`` after backward (a leaf keeps it anyway)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad, so it gets no gradient to keep")
        if self._ctx is not None:
            _hooks_of(self).retains_grad = True

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor replaces the gradient.

        Returns a handle whose ``remove()`` unregisters the hook.
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook: this tensor does not require grad, so no gradient will reach a hook")
        if not callable(hook):
            raise TypeError(f"hook: expected a function of the gradient, got {type(hook).__name__}")
        entry = _hooks_of(self)
        handle = RemovableHandle(id(self), entry)
        entry.functions[handle.key] = hook
        return handle

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d self / d leaf into each leaf's ``.grad`` (reverse accumulation).

        ``gradient`` is the cotangent; it may be omitted only for a one-element
        output.  The graph's saved tensors are released afterwards unless
        ``retain_graph`` (default: ``create_graph``) is true, as in PyTorch.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation had "
                "requires_grad=True (or it ran under no_grad())"
            )
        seed = _seed_gradient(self, gradient, "gradient")
        retain = create_graph if retain_graph is None else retain_graph
        run_backward([self], [seed], create_graph=create_graph, retain_graph=retain, accumulate=True)


def _seed_gradient(output, gradient, argname):
    if gradient is None:
        if output.array.size != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs; this output has shape "
                f"{output.array.shape}, so pass {argname}= with that shape"
            )
        return _wrap(np.ones(output.array.shape, output.array.dtype))
    seed = gradient if isinstance(gradient, Tensor) else Tensor(np.asarray(gradient, dtype=output.array.dtype))
    if seed.array.shape != output.array.shape:
        raise RuntimeError(
            f"{argname} has shape {seed.array.shape} but the output has shape {output.array.shape}; they must match"
        )
    return seed


_new_tensor = Tensor.__new__
_ndarray = np.ndarray
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def _wrap(value):
    """A plain tensor around an op's result, built without ``__init__``'s checks (the hot path)."""
    out = _new_tensor(Tensor)
    out.array = value if type(value) is np.ndarray else np.asarray(value)
    out.requires_grad = False
    out.grad = out._ctx = out._tangent = None
    return out


_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2}


def promote(a, b, floating_result=False):
    """``a`` and ``b`` cast as PyTorch casts the operands of a binary op, where numpy widens.

    Across kinds (bool < integer < float) the lower kind takes the other's
    dtype: int64 times float32 is float32.  Within a kind, a 0-d tensor takes
    the dtype of an operand with dimensions: a float32 vector times a float64
    0-d tensor is float32.  Otherwise numpy's promotion is PyTorch's.  With
    ``floating_result`` (true division) integers become the default dtype.
    """
    rank_a, rank_b = _KIND_RANK.get(a.array.dtype.kind, 3), _KIND_RANK.get(b.array.dtype.kind, 3)
    if floating_result and max(rank_a, rank_b) < _KIND_RANK["f"]:
        return _cast(a, MODE.default_dtype), _cast(b, MODE.default_dtype)
    if rank_a < rank_b or (rank_a == rank_b and a.array.ndim == 0 and b.array.ndim):
        return _cast(a, b.array.dtype), b
    if rank_b < rank_a or (rank_a == rank_b and b.array.ndim == 0 and a.array.ndim):
        return a, _cast(b, a.array.dtype)
    return a, b


def _promote_types(a, b):
    """PyTorch's promote_types: across kinds the higher kind's dtype (int64 with float32 is float32)."""
    rank_a, rank_b = _KIND_RANK.get(a.kind, 3), _KIND_RANK.get(b.kind, 3)
    if rank_a != rank_b:
        return a if rank_a > rank_b else b
    return np.promote_types(a, b)


def promote_all(tensors):
    """``tensors`` cast to the one dtype PyTorch gives a join of them (cat, stack), where numpy widens."""
    dtype = functools.reduce(_promote_types, [t.array.dtype for t in tensors])
    return [t if t.array.dtype == dtype else _cast(t, dtype) for t in tensors]


def _cast(t, dtype):
    """``t`` as ``dtype``: through the recorded astype op when derivatives must flow through the cast."""
    if t.requires_grad or t._tangent is not None:
        return apply(TABLE["astype"], (t,), {"dtype": dtype})
    return _wrap(t.array.astype(dtype))


def apply(op, inputs, attrs=_NO_ATTRS):
    """Run ``op`` on engine tensors, recording the graph and forward tangents as needed.

    Every op goes through here but the elementwise ones without attributes, which have their
    :func:`fast_function`.
    """
    # One and two inputs are spelled out: matmul, linear, reductions and shape ops come through here
    # at every step.  (Calling without ``**attrs`` when there are none saves building an empty keyword dict.)
    try:
        if len(inputs) == 2:
            first, second = inputs
            if op.broadcasts and (first.array.dtype is not second.array.dtype or op.floating_result):
                inputs = first, second = promote(first, second, op.floating_result)
            data = op.forward(first.array, second.array, **attrs) if attrs else op.forward(first.array, second.array)
        elif len(inputs) == 1:
            if op.floating_result:
                dtype = inputs[0].array.dtype
                if dtype is not _FLOAT32 and dtype is not _FLOAT64 and dtype.kind != "f":
                    inputs = (_cast(inputs[0], MODE.default_dtype),)
            data = op.forward(inputs[0].array, **attrs) if attrs else op.forward(inputs[0].array)
        else:
            data = op.forward(*[t.array for t in inputs], **attrs)
    except (ValueError, IndexError, TypeError) as err:
        raise _with_shapes(err, op, inputs) from None
    recorded = False
    if MODE.grad_enabled:
        for t in inputs:
            if t.requires_grad:
                recorded = True
                break
    return _output(op, data, inputs, attrs, recorded)


def _output(op, data, inputs, attrs, recorded):
    """The tensor holding ``op``'s result ``data`` (computed from ``inputs``): a node of the graph when
    ``recorded`` (an input requires grad, in grad mode) and the result is floating; with its tangents
    when forward levels are active.  Every op's output is made here."""
    out = _new_tensor(Tensor)
    out.array = data = data if type(data) is _ndarray else np.asarray(data)
    out.requires_grad = False
    out.grad = out._ctx = out._tangent = None
    if recorded:
        # float32 and float64 are told by identity first.
        dtype = data.dtype
        if dtype is _FLOAT32 or dtype is _FLOAT64 or dtype.kind == "f":
            out.requires_grad = True
            out._ctx = (op, inputs, attrs)
            out._seq = _next_sequence_number()
    if MODE.forward_levels:
        _propagate_tangents(op, out, inputs, attrs)
    return out


def fast_function(op):
    """The engine function of a unary or binary op of the table (one or two inputs, no attributes).

    ``apply`` specialised to the op: the op's fields are read once, here, and the call from an
    operator or ``F.<op>`` to the kernel is one Python frame.  Elementwise ops are most of what a
    program runs, so this saves about a fifth of the engine's time per op.
    """
    forward, broadcasts, floating_result = op.forward, op.broadcasts, op.floating_result
    mode, output, constants = MODE, _output, _CONSTANTS

    if len(op.domains) == 1:

        def run(x):
            if not isinstance(x, Tensor):
                (x,) = lift_all((x,))
            if floating_result:
                dtype = x.array.dtype
                if dtype is not _FLOAT32 and dtype is not _FLOAT64 and dtype.kind != "f":
                    x = _cast(x, mode.default_dtype)
            try:
                data = forward(x.array)
            except (ValueError, IndexError, TypeError) as err:
                raise _with_shapes(err, op, (x,)) from None
            return output(op, data, (x,), _NO_ATTRS, x.requires_grad and mode.grad_enabled)

    else:

        def run(first, second):
            # A Python number next to a tensor (``y * 1.01 + 0.1``, as programs write it) is made a constant
            # directly, looked up when made before: lift_all's general path costs as much as the op itself,
            # and a call to constant_of a tenth of it.  Two tensors, the common case, are told by two checks.
            if not isinstance(second, Tensor):
                if (type(second) is float or type(second) is int) and isinstance(first, Tensor):
                    constant = constants.get((second, first.array.dtype))
                    second = constant_of(second, first.array.dtype) if constant is None else constant
                else:
                    first, second = lift_all((first, second))
            elif not isinstance(first, Tensor):
                if type(first) is float or type(first) is int:
                    constant = constants.get((first, second.array.dtype))
                    first = constant_of(first, second.array.dtype) if constant is None else constant
                else:
                    first, second = lift_all((first, second))
            if broadcasts and (first.array.dtype is not second.array.dtype or floating_result):
                first, second = promote(first, second, floating_result)
            try:
                data = forward(first.array, second.array)
            except (ValueError, IndexError, TypeError) as err:
                raise _with_shapes(err, op, (first, second)) from None
            return output(op, data, (first, second), _NO_ATTRS,
                          (first.requires_grad or second.requires_grad) and mode.grad_enabled)

    run.__name__ = run.__qualname__ = op.name
    run.__doc__ = op.doc or f"The table's {op.name!r} op on engine tensors."
    return run


def _with_shapes(err, op, inputs):
    """``err`` of ``op``'s forward, its message naming the op and the input shapes."""
    shapes = ", ".join(str(t.array.shape) for t in inputs)
    message = str(err).removeprefix(f"{op.name}: ")
    return type(err)(f"{op.name}: {message} (input shapes {shapes})")


def _propagate_tangents(op, out, inputs, attrs):
    """Give ``out`` its tangent at each active forward level where an input has one.

    A tensor's ``_tangent`` maps a level (the id of a jvp call) to its tangent.
    The rule of a level runs with only the levels outside it active: its ops do
    not propagate that level again (which would recurse forever), and its
    result carries the outer levels' tangents, which nested jvp calls read.
    Outer levels go first, as the rules read ``out``'s tangents.  Rules run as
    outside a backward pass, so a VJP giving a tangent computes every cotangent.
    """
    levels = MODE.forward_levels
    for depth, level in enumerate(levels):
        tangents = [None if t._tangent is None else t._tangent.get(level) for t in inputs]
        for t in tangents:
            if t is not None:
                break
        else:  # no input has a tangent at this level
            continue
        in_backward = MODE.in_backward
        MODE.forward_levels, MODE.in_backward = levels[:depth], False
        try:
            tangent = _tangent(op, tangents, out, inputs, attrs)
            if tangent is not None and tangent.array.shape != out.array.shape:
                tangent = apply(TABLE["broadcast_to"], (tangent,), {"shape": out.array.shape})
        finally:
            MODE.forward_levels, MODE.in_backward = levels, in_backward
        if tangent is not None:
            if out._tangent is None:
                out._tangent = {}
            out._tangent[level] = tangent


def _tangent(op, tangents, out, inputs, attrs):
    """``op``'s output tangent from its inputs' ``tangents`` (None: no tangent), by the rule ``op.jvp`` declares.

    Per-input rules (a tuple, or the VJP's for FROM_VJP) give one term per input with a tangent, and
    the terms are summed, as JAX's ``standard_jvp``; other rules (LINEAR: the op itself; a function
    of all tangents, as an autograd.Function's) get zeros for the missing tangents and the
    ``nondiff`` inputs as they are.
    """
    rule = op.jvp
    from_vjp = rule is FROM_VJP
    if not from_vjp and type(rule) is not tuple:
        nondiff = op.nondiff
        tangents = [x if i in nondiff else Tensor(np.zeros_like(x.array)) if t is None else t
                    for i, (t, x) in enumerate(zip(tangents, inputs))]
        return apply(op, tuple(tangents), attrs) if rule is LINEAR else rule(tangents, out, *inputs, **attrs)
    total = None
    for i, t in enumerate(tangents):
        if t is None:
            continue
        if from_vjp:
            term = op.vjp(t, out, *inputs, **attrs)[i]
        elif rule[i] is not None:
            term = rule[i](t, out, *inputs, **attrs)
        else:
            continue
        if term is not None:
            total = term if total is None else total + term
    return total


def fit_cotangent(grad, target):
    """Reduce a broadcast cotangent to ``target``'s shape and cast it to ``target``'s dtype."""
    if grad.array.shape != target.array.shape:
        grad = apply(TABLE["sum_to"], (grad,), {"shape": target.array.shape})
    if grad.array.dtype != target.array.dtype:
        grad = apply(TABLE["astype"], (grad,), {"dtype": target.array.dtype})
    return grad


def needs_cotangent(t):
    """Whether a VJP rule must compute the cotangent of its input ``t``.

    During the engine's backward pass, an input that does not require grad
    gets none (so ``x @ W.T`` skips the product that would go to ``x``);
    a rule called directly, outside a backward pass, computes them all.
    """
    return t.requires_grad or not MODE.in_backward


def run_backward(roots, seeds, create_graph=False, retain_graph=False, accumulate=True, inputs=None):
    """Reverse accumulation from ``roots`` with cotangents ``seeds``.

    With ``accumulate`` the leaves' ``.grad`` receive the result (``backward``);
    otherwise the cotangents of ``inputs`` are returned in order (``autograd.grad``),
    None for an input the roots do not depend on.  Leaves are written only once
    every node has run, so an error half-way leaves every ``.grad`` as it was.
    """
    wanted = {} if inputs is None else {t: i for i, t in enumerate(inputs)}
    results = [None] * (0 if inputs is None else len(inputs))
    hooked = _HOOKS

    def deliver(t, g):
        """``t``'s cotangent after its hooks, noted in ``results`` when ``t`` is one of ``inputs``."""
        if hooked:
            g = _run_hooks(t, g, create_graph)
        slot = wanted.get(t)
        if slot is not None:
            results[slot] = g
        return g

    # grads: the cotangent summed so far, by tensor (tensors hash by identity: no id() call per lookup).
    # A node enters `pending` (a heap on its negated number) with its first cotangent term, and runs
    # when every later node has.
    grads, pending, leaves = {}, [], []
    incoming = zip(roots, seeds)  # (tensor, cotangent term) pairs to add in: the seeds, then each node's
    latest_change = MODE.latest_modification
    saved_modes = MODE.grad_enabled, MODE.in_backward
    MODE.grad_enabled, MODE.in_backward = create_graph, True
    try:
        # Rules run with numpy's overflow warnings off, as PyTorch's backward never warns: a
        # derivative that overflows shows as inf, and tanh's backward divides by cosh(x) = inf.
        with np.errstate(over="ignore"):
            while True:
                # Of the nodes that got their first term just now, the latest stays out of the heap and
                # its cotangent out of `grads`: in a chain it runs next, and the heap's push and pop and
                # the dict's store and removal are saved.
                latest = None
                for parent, gp in incoming:
                    if gp is None or not parent.requires_grad:
                        continue
                    got, wanted_array = gp.array, parent.array
                    if got.shape != wanted_array.shape or (
                        got.dtype is not wanted_array.dtype and got.dtype != wanted_array.dtype
                    ):
                        gp = fit_cotangent(gp, parent)
                    if parent is latest:
                        latest_g = latest_g + gp
                        continue
                    prev = grads.get(parent)
                    if prev is not None:
                        grads[parent] = prev + gp
                    elif parent._ctx is None:
                        grads[parent] = gp
                        leaves.append(parent)
                    elif latest is None:
                        latest, latest_g = parent, gp
                    else:
                        if parent._seq > latest._seq:
                            parent, latest, gp, latest_g = latest, parent, latest_g, gp
                        grads[parent] = gp
                        heappush(pending, (-parent._seq, parent))
                if latest is not None and (not pending or latest._seq > -pending[0][0]):
                    t, g = latest, latest_g
                else:
                    if latest is not None:
                        grads[latest] = latest_g
                        t = heapreplace(pending, (-latest._seq, latest))[1]
                    elif pending:
                        t = heappop(pending)[1]
                    else:
                        break
                    g = grads.pop(t)
                if hooked or wanted:
                    g = deliver(t, g)
                op, parents, attrs = t._ctx
                if parents is None:
                    raise RuntimeError(
                        f"trying to backward through the graph a second time (at {op.name!r}): its saved tensors "
                        "were released by the previous backward; pass retain_graph=True to the first backward() "
                        "or grad() call"
                    )
                if t._seq < latest_change:
                    _refuse_if_changed(t, op, parents)
                # The common cases are called without unpacking (a third of a node's cost).
                if attrs:
                    incoming = zip(parents, op.vjp(g, t, *parents, **attrs))
                elif len(parents) == 2:
                    incoming = zip(parents, op.vjp(g, t, parents[0], parents[1]))
                elif len(parents) == 1:
                    incoming = zip(parents, op.vjp(g, t, parents[0]))
                else:
                    incoming = zip(parents, op.vjp(g, t, *parents))
                if not retain_graph:
                    t._ctx = (op, None, None)  # released: the op stays for grad_fn and the error above
    finally:
        MODE.grad_enabled, MODE.in_backward = saved_modes
    # Memory a leaf may not keep as its .grad without a copy: the seeds', and what other leaves got.
    shared = {id(s.array if s.array.base is None else s.array.base) for s in seeds}
    for leaf in leaves:
        g = grads.pop(leaf)
        if hooked or wanted:
            g = deliver(leaf, g)
        if accumulate:
            _accumulate_grad(leaf, g, create_graph, shared)
    return results


def _accumulate_grad(leaf, g, create_graph, shared):
    """Add cotangent ``g`` into ``leaf.grad`` as PyTorch's AccumulateGrad does.

    Without ``create_graph`` an existing ``.grad`` is added to in place, so a
    reference taken to it earlier sees the sum (as one the user assigned does);
    a new ``.grad`` is a writable C-contiguous array whose memory no other leaf
    and no seed shares (a copy is made only when ``g``'s array falls short of
    that).  With ``create_graph`` the sum is out of place and stays in the
    graph, and a new ``.grad`` is a recorded copy of ``g``: a later in-place
    accumulation must not change a tensor the graph holds.
    """
    grad = leaf.grad
    if create_graph:
        leaf.grad = g.clone() if grad is None else grad + g
    elif grad is None:
        array = g.array
        owner = id(array if array.base is None else array.base)
        if owner in shared or not (array.flags.c_contiguous and array.flags.writeable):
            array = array.copy()
            owner = id(array)
        shared.add(owner)
        leaf.grad = _wrap(array)
    elif grad.array.flags.writeable and grad.array.shape == g.array.shape:
        np.add(grad.array, g.array, out=grad.array)
        mark_modified(grad)
    else:
        leaf.grad = grad + g


_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def _scalar_dtype(value, like_dtype):
    """The dtype PyTorch gives ``tensor op scalar``: the tensor's, unless the scalar's kind is higher."""
    if like_dtype.kind == "f":
        return like_dtype
    if isinstance(value, (float, np.floating)):
        return MODE.default_dtype
    if like_dtype.kind == "b" and not isinstance(value, (bool, np.bool_)):
        return np.dtype(np.int64)
    return like_dtype


# Floating constants made by constant_of, by (number, dtype): a loop's ``y * 1.01`` makes one.  Read-only, as
# they are shared; zeros are left out (0.0 == -0.0 would share a key), and a program of many numbers clears it.
_CONSTANTS: dict = {}


def constant_of(number, like_dtype):
    """A Python float or int as a constant 0-d tensor beside a tensor of dtype ``like_dtype`` (torch's dtype rule)."""
    if like_dtype.kind != "f" or number == 0:
        return _wrap(np.asarray(number, _scalar_dtype(number, like_dtype)))
    key = (number, like_dtype)
    constant = _CONSTANTS.get(key)
    if constant is None:
        if len(_CONSTANTS) >= 1024:
            _CONSTANTS.clear()
        array = np.asarray(number, like_dtype)
        array.flags.writeable = False
        constant = _CONSTANTS[key] = _wrap(array)
    return constant


def lift_all(inputs):
    """``inputs`` as tensors; numbers take the dtype of the first tensor among them."""
    like = next((x for x in inputs if isinstance(x, Tensor)), None)
    if like is None:
        like = Tensor(np.asarray(inputs[0]))
    return tuple(lift(x, like) for x in inputs)


def lift(value, like):
    """Turn a Python or numpy number, or an array, into a constant tensor next to ``like``.

    A scalar takes ``like``'s dtype as in PyTorch, so a float32 graph stays
    float32; arrays keep their own dtype.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, _SCALARS):
        return _wrap(np.asarray(value, dtype=_scalar_dtype(value, like.array.dtype)))
    if isinstance(value, (np.ndarray, list, tuple)):
        return _wrap(np.asarray(value))
    raise TypeError(f"expected a Tensor, a number or an array, got {type(value).__name__}")
