"""``ge.nn.functional``: the torch.nn.functional subset built on the op table."""
from __future__ import annotations

import math
import operator
import warnings

import numpy as np

from .. import api
from .. import functional as _ops
from ..composite import floating_only
from ..random import default_generator
from ..core import Tensor, mark_modified

relu = api.relu
sigmoid = api.sigmoid
tanh = api.tanh
softplus = api.softplus


def _implicit_softmax_dim(name, ndim):
    """PyTorch's deprecated choice of dim when none is given: 0 for 0-, 1- and 3-D input, else 1."""
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an argument.",
        UserWarning,
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None, dtype=None):
    """Softmax along ``dim``; without it, PyTorch's deprecated implicit dim (with its warning)."""
    return api.softmax(input, dim=_implicit_softmax_dim("softmax", input.ndim) if dim is None else dim, dtype=dtype)


def log_softmax(input, dim=None, dtype=None):
    """Log-softmax along ``dim``; without it, PyTorch's deprecated implicit dim (with its warning)."""
    return api.log_softmax(
        input, dim=_implicit_softmax_dim("log_softmax", input.ndim) if dim is None else dim, dtype=dtype
    )


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` (one op of the table with a bias, a matmul without).

    A 0-d bias broadcasts over the output features, as torch's.
    """
    if bias is None:
        return input @ weight.T
    if bias.ndim == 0:
        return input @ weight.T + bias
    return _ops.linear(input, weight, bias)


_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")


def legacy_reduction(size_average, reduce, reduction):
    """``reduction``, or what torch's deprecated ``size_average`` and ``reduce`` (either given) say, with torch's warning.

    ``reduce=False`` keeps every loss ('none'); otherwise ``size_average`` (default True) averages, else sums.
    """
    if size_average is None and reduce is None:
        return reduction
    reduction = "none" if reduce is False else ("sum" if size_average is False else "mean")
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
                  UserWarning, stacklevel=3)
    return reduction


def _divide(total, count):
    """``total / count``; nan (with a zero gradient) for a zero count, as torch's empty or all-ignored means."""
    return total / count if count else total * math.nan


def _reduce(losses, reduction, count=None):
    """``losses`` reduced by ``reduction`` (checked by the caller): as is, summed, or averaged over ``count``
    (by default the number of losses; nan when zero)."""
    if reduction == "none":
        return losses
    total = api.sum(losses)
    return total if reduction == "sum" else _divide(total, losses.array.size if count is None else count)


def _broadcast_target(name, input, target):
    """``input`` and ``target`` (made a tensor of the input's dtype) of one shape.

    A target of another shape is broadcast against the input with torch's warning (a shape mismatch
    is usually a bug); shapes that do not broadcast raise.
    """
    if not isinstance(target, Tensor):
        target = api.tensor(target, dtype=input.dtype)
    if input.shape == target.shape:
        return input, target
    try:
        shape = np.broadcast_shapes(input.shape, target.shape)
    except ValueError:
        raise ValueError(
            f"{name}: input has shape {input.shape} but target has shape {target.shape}, which do not broadcast"
        ) from None
    warnings.warn(
        f"Using a target size ({target.shape}) that is different to the input size ({input.shape}). This will "
        "likely lead to incorrect results due to broadcasting. Please ensure they have the same size.",
        UserWarning,
        stacklevel=3,
    )
    return api.broadcast_to(input, shape), api.broadcast_to(target, shape)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Squared error, reduced by ``reduction``; a target of another shape broadcasts with torch's warning."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    floating_only(input, "mse_loss", NotImplementedError)
    _check_reduction(reduction)
    input, target = _broadcast_target("mse_loss", input, target)
    if reduction == "mean" and input.array.size:
        return _ops.mse_loss(input, target)
    return _reduce(api.square(input - target), reduction)


def _class_dim(name, input):
    """The class axis of (C,), (N, C) or (N, C, d1, ...) ``input``."""
    if input.ndim == 0:
        raise ValueError(f"{name}: input must be (C,), (N, C) or (N, C, d1, ...), got shape ()")
    return 0 if input.ndim == 1 else 1


def _class_weights(name, weight, input, class_dim):
    """``weight`` as a constant array of one weight per class (None stays None)."""
    if weight is None:
        return None
    weights = weight.array if isinstance(weight, Tensor) else np.asarray(weight)
    classes = input.shape[class_dim]
    if weights.shape != (classes,):
        raise ValueError(f"{name}: weight must hold one weight per class, shape ({classes},), got {weights.shape}")
    return weights.astype(input.dtype)


def _class_indices(name, input, target, class_dim, ignore_index):
    """``target`` as an array of class indices for ``input``, checked like torch checks it, and whether
    any of its entries is ``ignore_index``."""
    target_data = target.array if isinstance(target, Tensor) else np.asarray(target)
    expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
    if target_data.shape != expected or target_data.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: target must hold {int(np.prod(expected))} integer class indices of shape {expected}, "
            f"got shape {target_data.shape} and dtype {target_data.dtype}"
        )
    classes = input.shape[class_dim]
    if not target_data.size:
        return target_data, False
    # Two reductions settle the usual case, every index in range (a training step's hot path).
    if target_data.min() >= 0 and target_data.max() < classes:
        return target_data, 0 <= ignore_index < classes and bool((target_data == ignore_index).any())
    ignored = target_data == ignore_index
    if (((target_data < 0) | (target_data >= classes)) & ~ignored).any():
        raise ValueError(f"{name}: class indices must lie in [0, {classes}), got {target_data}")
    return target_data, bool(ignored.any())


def _picked_losses(log_probs, target_data, class_dim, weights, ignore_index):
    """Per-element ``-weight[t] * log_probs[..., t, ...]`` (0 where t is ignore_index) and the summed weight."""
    kept = target_data != ignore_index
    safe_target = np.where(kept, target_data, 0)
    grids = tuple(np.indices(target_data.shape))
    picked = log_probs[grids[:class_dim] + (safe_target,) + grids[class_dim:]]
    if weights is None:
        target_weights = kept.astype(log_probs.dtype)
        losses = -picked
    else:
        target_weights = np.where(kept, weights[safe_target], 0).astype(log_probs.dtype)
        losses = -picked * _ops.constant(target_weights)
    # where, not a product with 0: an ignored entry may pick a -inf log-probability.
    return api.where(kept, losses, 0.0), float(target_weights.sum())


def _weights_along(weights, ndim, class_dim):
    """A constant of ``weights`` shaped to broadcast along ``class_dim`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[class_dim] = weights.shape[0]
    return _ops.constant(weights.reshape(shape))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log-likelihood of log-probabilities (after log_softmax) at class indices, as torch.

    ``input`` is (C,), (N, C) or (N, C, d1, ...) with ``target`` of the shape without C; ``weight``
    (a constant) scales each class, and entries whose target is ``ignore_index`` count for nothing;
    ``mean`` divides by the summed weight of the counted entries.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    class_dim = _class_dim("nll_loss", input)
    weights = _class_weights("nll_loss", weight, input, class_dim)
    target_data, _ = _class_indices("nll_loss", input, target, class_dim, ignore_index)
    losses, total_weight = _picked_losses(input, target_data, class_dim, weights, ignore_index)
    return _reduce(losses, reduction, total_weight)


def _check_label_smoothing(label_smoothing):
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: must lie in [0, 1], got {label_smoothing}")


def _cross_entropy_of_probabilities(log_probs, target, class_dim, weights, reduction, label_smoothing):
    classes = log_probs.shape[class_dim]
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    products = log_probs * target
    if weights is not None:
        products = products * _weights_along(weights, log_probs.ndim, class_dim)
    return _reduce(-api.sum(products, dim=class_dim), reduction)


def _cross_entropy_of_indices(log_probs, target_data, class_dim, weights, ignore_index, reduction, label_smoothing):
    losses, total_weight = _picked_losses(log_probs, target_data, class_dim, weights, ignore_index)
    loss = _reduce(losses, reduction, total_weight)
    if not label_smoothing:
        return loss
    spread = log_probs if weights is None else log_probs * _weights_along(weights, log_probs.ndim, class_dim)
    smooth = api.where(target_data != ignore_index, -api.sum(spread, dim=class_dim), 0.0)
    smooth = _reduce(smooth, reduction, total_weight)
    return loss * (1 - label_smoothing) + smooth * (label_smoothing / log_probs.shape[class_dim])


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    """Cross-entropy of logits against class indices or class probabilities, as torch.

    ``input`` is (C,), (N, C) or (N, C, d1, ...).  A floating ``target`` of the input's shape holds
    class probabilities (and is differentiated); otherwise it holds class indices, of the input's shape
    without C, and ``ignore_index`` marks entries that count for nothing.  ``weight`` (a constant)
    scales each class; ``label_smoothing`` mixes the target with the uniform distribution.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    floating_only(input, "cross_entropy", NotImplementedError)
    _check_reduction(reduction)
    _check_label_smoothing(label_smoothing)
    class_dim = _class_dim("cross_entropy", input)
    weights = _class_weights("cross_entropy", weight, input, class_dim)
    if (target.shape if isinstance(target, Tensor) else np.shape(target)) == input.shape:
        target = target if isinstance(target, Tensor) else api.tensor(target, dtype=input.dtype)
        if target.array.dtype.kind != "f":
            raise ValueError(
                "cross_entropy: a target of the input's shape holds class probabilities and must be floating, "
                f"got dtype {target.dtype}"
            )
        if ignore_index >= 0:
            raise ValueError(f"ignore_index: not supported with class-probability targets, got {ignore_index}")
        log_probs = api.log_softmax(input, dim=class_dim)
        return _cross_entropy_of_probabilities(log_probs, target, class_dim, weights, reduction, label_smoothing)
    target_data, ignores = _class_indices("cross_entropy", input, target, class_dim, ignore_index)
    plain = input.ndim == 2 and weights is None and not label_smoothing and not ignores
    if plain and reduction == "mean" and target_data.size:
        return _ops.cross_entropy(input, Tensor(target_data))
    log_probs = api.log_softmax(input, dim=class_dim)
    return _cross_entropy_of_indices(log_probs, target_data, class_dim, weights, ignore_index, reduction,
                                     label_smoothing)


def leaky_relu(input, negative_slope=0.01):
    """x where x > 0, else negative_slope * x (the slope at 0 is negative_slope, as torch)."""
    return api.where(input > 0, input, input * negative_slope)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the others by 1 / (1 - p) (identity unless training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    floating_only(input, "dropout")
    if p == 1.0:
        return input * Tensor(np.zeros((), input.dtype))
    # torch's draw and arithmetic: a Bernoulli(1 - p) mask divided by 1 - p in the input's dtype.
    keep = default_generator.source.bernoulli(1.0 - p, input.shape, input.dtype)
    return input * Tensor(keep / np.asarray(1.0 - p, input.dtype))


def _same_shape_target(name, input, target):
    """``target`` as a tensor of the input's dtype, required (as torch requires it) to have the input's shape."""
    if not isinstance(target, Tensor):
        target = api.tensor(target, dtype=input.dtype)
    if target.shape != input.shape:
        raise ValueError(f"{name}: target has shape {target.shape} but input has shape {input.shape}; they must match")
    return target


def _constant_like(name, value, input):
    """``value`` (a tensor, array or number, or None) as a tensor of the input's dtype."""
    if value is None or isinstance(value, Tensor):
        return value
    try:
        return api.tensor(value, dtype=input.dtype)
    except Exception as err:
        raise TypeError(f"{name}: expected a tensor or array, got {type(value).__name__}") from err


def logsigmoid(input):
    """``log(sigmoid(x))`` as ``-softplus(-x)``: finite for every x, where the composition underflows."""
    return -api.softplus(-input)


def silu(input):
    """``x * sigmoid(x)`` (also called swish)."""
    return input * api.sigmoid(input)


def elu(input, alpha=1.0):
    """``x`` for x > 0, else ``alpha * (exp(x) - 1)``."""
    # exp of the clipped input: exp of a large positive x would be inf and its zero cotangent times inf nan.
    return api.where(input > 0, input, alpha * (api.exp(api.clamp(input, max=0.0)) - 1))


def gelu(input, approximate="none"):
    """``x * Phi(x)``, Phi the standard normal CDF; ``approximate='tanh'`` uses torch's tanh formula."""
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)
        return 0.5 * input * (1 + api.tanh(inner))
    if approximate == "none":
        return 0.5 * input * (1 + api.erf(input * (1 / math.sqrt(2.0))))
    raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing ``normalized_shape`` axes (biased variance plus ``eps``), then scale and shift:
    the table's ``layer_norm`` op, with a weight of ones and a bias of zeros where they are None."""
    floating_only(input, "layer_norm", NotImplementedError)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    count = len(normalized_shape)
    if count == 0 or input.shape[input.ndim - count:] != normalized_shape:
        raise ValueError(
            f"normalized_shape: expected the trailing axes of the input, of shape {input.shape}, got {normalized_shape}"
        )
    weight = api.ones(normalized_shape, dtype=input.dtype) if weight is None else weight
    bias = api.zeros(normalized_shape, dtype=input.dtype) if bias is None else bias
    return _ops.layer_norm(input, weight, bias, normalized_shape=normalized_shape, eps=eps)


def _normalised(input, dims, eps):
    """``input`` centred and scaled over ``dims`` by its mean and biased variance plus ``eps``."""
    centred = input - api.mean(input, dim=dims, keepdim=True)
    return centred / api.sqrt(api.var(input, dim=dims, keepdim=True, correction=0) + eps)


def _blend_in_place(running, batch_value, momentum):
    """``running <- (1 - momentum) running + momentum batch_value``, in the running tensor's memory as torch."""
    running.array[...] = (1 - momentum) * running.array + momentum * batch_value
    mark_modified(running)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel (axis 1) over the batch and any trailing axes, then scale and shift.

    While ``training`` the batch's mean and biased variance normalise, and the running statistics given
    are blended in place with the batch mean and unbiased variance by ``momentum``; otherwise the
    running statistics normalise.
    """
    if input.ndim < 2:
        raise ValueError(f"input: expected at least 2 dims (N, C, ...), got shape {tuple(input.shape)}")
    channels = input.shape[1]
    dims = (0,) + tuple(range(2, input.ndim))
    along_channels = (channels,) + (1,) * (input.ndim - 2)
    if training:
        count = input.array.size // max(channels, 1)
        if count <= 1:
            raise ValueError(
                f"input: expected more than 1 value per channel when training, got shape {tuple(input.shape)}"
            )
        out = _normalised(input, dims, eps)
        if running_mean is not None:
            _blend_in_place(running_mean, input.array.mean(axis=dims), momentum)
        if running_var is not None:
            _blend_in_place(running_var, input.array.var(axis=dims, ddof=1), momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean, running_var: expected tensors when not training, got None")
        out = (input - api.reshape(running_mean, along_channels)) / api.sqrt(
            api.reshape(running_var, along_channels) + eps
        )
    if weight is not None:
        out = out * api.reshape(weight, along_channels)
    return out if bias is None else out + api.reshape(bias, along_channels)


def embedding(input, weight, padding_idx=None):
    """The rows of ``weight`` at the integer indices ``input``; the ``padding_idx`` row gets no gradient."""
    indices = input.array if isinstance(input, Tensor) else np.asarray(input)
    rows = weight.shape[0]
    if indices.dtype.kind not in "iu":
        raise TypeError(f"input: expected integer indices, got dtype {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= rows):
        raise IndexError(f"input: indices must lie in [0, {rows}), got values from {indices.min()} to {indices.max()}")
    out = weight[Tensor(indices)]
    if padding_idx is None:
        return out
    padded = (indices == padding_idx % rows)[..., None]
    return api.where(padded, out.detach(), out) if padded.any() else out


def one_hot(tensor, num_classes=-1):
    """An int64 tensor with one more axis, of length ``num_classes`` (max + 1 when -1), holding 1 at each index."""
    indices = tensor.array if isinstance(tensor, Tensor) else np.asarray(tensor)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"tensor: one_hot expects an integer tensor, got dtype {indices.dtype}")
    if num_classes == -1:
        if not indices.size:
            raise ValueError("num_classes: cannot be inferred (-1) from an empty tensor")
        num_classes = int(indices.max()) + 1
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        raise ValueError(f"tensor: class values must lie in [0, {num_classes}), got {indices.min()}..{indices.max()}")
    return Tensor((indices[..., None] == np.arange(num_classes)).astype(np.int64))


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """``input`` divided by its p-norm along ``dim``, the norm clamped below at ``eps``."""
    return input / api.clamp(api.norm(input, p=p, dim=dim, keepdim=True), min=eps)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Absolute error, reduced by ``reduction``; a target of another shape broadcasts with torch's warning."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    input, target = _broadcast_target("l1_loss", input, target)
    return _reduce(api.abs(input - target), reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (d = input - target); beta 0 is l1_loss."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if beta < 0:
        raise ValueError(f"beta: must be >= 0, got {beta}")
    input, target = _broadcast_target("smooth_l1_loss", input, target)
    diff = input - target
    size = api.abs(diff)
    if beta == 0:
        return _reduce(size, reduction)
    return _reduce(api.where(size < beta, 0.5 * diff * diff / beta, size - 0.5 * beta), reduction)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """``-(t log x + (1 - t) log(1 - x))`` for probabilities ``x``, each log clamped below at -100 as torch.

    The gradient is the derivative of that value, torch's ``(x - t) / (x (1 - x))``, except where
    ``x (1 - x) < 1e-12`` (saturated probabilities): there torch divides by 1e-12 instead.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    target = _same_shape_target("binary_cross_entropy", input, target)
    if input.array.size and (input.array.min() < 0 or input.array.max() > 1):
        raise ValueError("input: binary_cross_entropy expects probabilities, all elements between 0 and 1")
    losses = -(target * _clamped_log(input) + (1 - target) * _clamped_log(1 - input))
    weight = _constant_like("weight", weight, input)
    return _reduce(losses if weight is None else losses * weight, reduction)


def _clamped_log(x):
    """``max(log x, -100)``; where x is 0 the log of 1 is taken instead, so its gradient is 0 and not nan."""
    positive = x.array > 0
    return api.where(positive, api.clamp(api.log(api.where(positive, x, 1.0)), min=-100.0), -100.0)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    """Binary cross-entropy of ``sigmoid(input)`` as ``(1 - t) softplus(x) + p t softplus(-x)``, ``p`` the
    pos_weight.  Two terms of one sign: the textbook ``(1 - t) x + softplus(-x)`` cancels for t = 0 and x << 0
    (x = -20: a gradient 5e-8 off in float64; x < -37: 0 for e^x)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    target = _same_shape_target("binary_cross_entropy_with_logits", input, target)
    pos_weight = _constant_like("pos_weight", pos_weight, input)
    positive = target if pos_weight is None else pos_weight * target
    losses = (1 - target) * api.softplus(input) + positive * api.softplus(-input)
    weight = _constant_like("weight", weight, input)
    return _reduce(losses if weight is None else losses * weight, reduction)


def _pad_dim(input, dim, before, after, value):
    """``input`` with ``before``/``after`` entries of ``value`` added at the ends of ``dim``
    (cropped there when negative)."""
    size = input.shape[dim]
    index = [slice(None)] * input.ndim
    index[dim] = slice(max(-before, 0), size - max(-after, 0))
    kept = input[tuple(index)]

    def block(count):
        shape = list(kept.shape)
        shape[dim] = count
        return api.full(tuple(shape), value, dtype=input.dtype)

    pieces = ([block(before)] if before > 0 else []) + [kept] + ([block(after)] if after > 0 else [])
    return api.cat(pieces, dim) if len(pieces) > 1 else kept


def pad(input, pad, mode="constant", value=0.0):
    """``input`` padded with ``value``: ``pad`` holds (before, after) pairs for the last dim, then the one
    before it, and so on, as torch; negative sizes crop.  Only ``mode='constant'`` is implemented."""
    if mode != "constant":
        raise NotImplementedError(f"mode: only 'constant' padding is implemented, got {mode!r}")
    try:
        sizes = tuple(operator.index(s) for s in pad)
    except TypeError as err:
        raise TypeError(f"pad: expected a sequence of ints, got {pad!r}") from err
    if len(sizes) % 2 or len(sizes) // 2 > input.ndim:
        raise ValueError(
            f"pad: expected an even number of sizes, two per dim for at most the {input.ndim} dims of the input, "
            f"got {sizes}"
        )
    out = input
    for pair in range(len(sizes) // 2):
        dim = input.ndim - 1 - pair
        before, after = sizes[2 * pair], sizes[2 * pair + 1]
        if max(-before, 0) + max(-after, 0) > input.shape[dim] or input.shape[dim] + before + after < 0:
            raise ValueError(
                f"pad: sizes ({before}, {after}) crop more than the {input.shape[dim]} entries of dim {dim}"
            )
        out = _pad_dim(out, dim, before, after, value)
    return out
