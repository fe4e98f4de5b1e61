"""Corner cases where the engine must match torch: -1 sizes, legacy empty tensors in cat, and more."""
import numpy as np
import pytest
import torch

import gradverify.engine as ge


def _assert_like_torch(ours, theirs):
    expected = theirs.detach().numpy()
    assert ours.shape == tuple(theirs.shape)
    assert ours.data.dtype == expected.dtype
    np.testing.assert_allclose(ours.data, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape, sizes", [((3, 1), (-1, 5)), ((3, 1), (2, -1, 4)), ((2,), (3, -1)), ((2, 3), (-1, -1))])
def test_expand_and_broadcast_to_keep_the_size_at_minus_one(shape, sizes):
    values = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    x, t = ge.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    for ours, theirs in ((x.expand(*sizes), t.expand(*sizes)), (ge.broadcast_to(x, sizes), torch.broadcast_to(t, sizes))):
        _assert_like_torch(ours, theirs)
        weights = np.arange(ours.data.size, dtype=np.float64).reshape(ours.shape)
        (ours * ge.tensor(weights)).sum().backward()
        (theirs * torch.tensor(weights)).sum().backward()
    _assert_like_torch(x.grad, t.grad)


def test_minus_one_in_a_new_leading_dim_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        ge.ones(3, 1).expand(-1, -1, 4)


@pytest.mark.parametrize("shapes_and_dtypes, dim", [
    ([((2, 3), "float64"), ((0,), "float32")], 0),
    ([((2, 3), "float64"), ((0,), "float32"), ((2, 2), "float64")], 1),
    ([((0,), "float64"), ((2, 3), "float32")], 0),
    ([((2, 3), "float32"), ((0,), "float64")], 0),
    ([((0,), "float64"), ((0,), "float64")], 0),
    ([((3,), "float64"), ((0,), "float64")], 0),
])
def test_cat_skips_legacy_empty_tensors_as_torch(shapes_and_dtypes, dim):
    arrays = [np.arange(np.prod(s), dtype=d).reshape(s) for s, d in shapes_and_dtypes]
    _assert_like_torch(ge.cat([ge.tensor(a) for a in arrays], dim=dim),
                       torch.cat([torch.tensor(a) for a in arrays], dim=dim))
