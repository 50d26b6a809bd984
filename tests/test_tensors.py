import torch
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from ilora.tensors import add
from ilora.tensors import canonical
from ilora.tensors import num_bytes
from ilora.tensors import select
from ilora.tensors import strip_prefix
from ilora.tensors import weighted_mean
from ilora.tensors import with_prefix

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3)


def _dict(seed: int, shape: list[int]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(shape, generator=g), "b.lora_A": torch.randn(shape, generator=g)}


@settings(max_examples=30, deadline=None)
@given(shape=shapes, k=st.integers(1, 5), seed=st.integers(0, 1000))
def test_weighted_mean_of_identical_dicts_is_identity(shape: list[int], k: int, seed: int) -> None:
    d = _dict(seed, shape)
    out = weighted_mean([d] * k, [float(i + 1) for i in range(k)])
    assert all(torch.allclose(out[key], d[key], atol=1e-6) for key in d)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 1000), perm_seed=st.integers(0, 1000))
def test_weighted_mean_is_permutation_invariant(
    shape: list[int], seed: int, perm_seed: int
) -> None:
    ds = [_dict(seed + i, shape) for i in range(4)]
    ws = [1.0, 2.0, 3.0, 4.0]
    order = torch.randperm(4, generator=torch.Generator().manual_seed(perm_seed)).tolist()
    a = weighted_mean(ds, ws)
    b = weighted_mean([ds[i] for i in order], [ws[i] for i in order])
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)


def test_weighted_mean_matches_numpy_average() -> None:
    import numpy as np

    ds = [{"x": torch.tensor([1.0, 2.0])}, {"x": torch.tensor([3.0, 6.0])}]
    out = weighted_mean(ds, [1.0, 3.0])
    assert np.allclose(out["x"].numpy(), np.average([[1, 2], [3, 6]], axis=0, weights=[1, 3]))


def test_canonical_is_contiguous_detached_sorted() -> None:
    t = torch.randn(3, 4, requires_grad=True).t()
    out = canonical({"z": t, "a": t})
    assert list(out) == ["a", "z"] and out["a"].is_contiguous() and not out["a"].requires_grad


def test_prefix_helpers_and_bytes() -> None:
    d = {"k": torch.zeros(2, 3)}
    assert strip_prefix(with_prefix(d, "cv/"), "cv/").keys() == d.keys()
    assert num_bytes(d) == 24
    assert select(add(d, d), ["k"])["k"].shape == (2, 3)
