"""Robust aggregation: a coordinate-wise median or trimmed mean in place of the weighted mean.

Config ``fed.robust: none | median | trimmed_mean`` (``fed.trim_fraction`` β). Against a
minority of Byzantine clients (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML 2018, arXiv 1803.01498): with ``n`` uploads
stacked ``X (n, ...)`` per tensor, for every coordinate separately

* ``median``: the middle value of the ``n`` (the mean of the two middle ones for even ``n``,
  numpy's convention);
* ``trimmed_mean``: drop the ``k = ⌊β·n⌋`` largest and the ``k`` smallest values, average the
  ``n − 2k`` others (β in [0, 0.5); β = 0 is the unweighted mean).

Both treat the clients equally (the aggregation weights are not used: a weight is the client's
own claim). Float64 arithmetic, float32 result.

Where the algorithm's math allows it: only an algorithm whose ``aggregate`` reads the uploads
through their weighted mean ``Σ_k p_k lift(u_k)`` (``Algorithm.mean_aggregation``; ``lift``
maps a rank-``r_k`` upload to the full-rank upload that adds the same term, e.g. FedIT's zero
padding, FFA-LoRA's scaled padding). The engine lifts every upload, takes the robust centre
``c`` of the lifted uploads and hands ``aggregate`` every client's upload replaced by ``c``:
since ``Σ_k p_k c = c`` (``Σ p_k = 1``) and ``lift(c) = c``, the algorithm aggregates exactly
``c`` where it would have aggregated the mean (up to float rounding), and its own code is
unchanged. Mixed ranks: the statistic is taken in the lifted (full-rank) space, where a
component a client does not train is zero for it, exactly as it enters the mean; the median of
a component fewer than half the sampled clients train is therefore zero (the trimmed mean keeps
it, diluted as in the mean). Methods whose aggregation is not such a mean (concatenation and
QR, SVD of the summed product, clustering, similarity or sparsity weights, server optimizers on
sparse deltas) refuse the option when the config is validated.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING
from typing import Any

from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import Algorithm
from ilora.config import ConfigError
from ilora.config import ExperimentConfig
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Return the coordinate-wise median of ``stack (n, ...)`` over its first axis (numpy's)."""
    import torch

    s = stack.to(torch.float64).sort(dim=0).values
    n = s.shape[0]
    return 0.5 * (s[(n - 1) // 2] + s[n // 2])


def trimmed_mean(stack: torch.Tensor, fraction: float) -> torch.Tensor:
    """Return the coordinate-wise mean of ``stack (n, ...)`` without its ``⌊β·n⌋`` extremes."""
    import torch

    if not 0.0 <= fraction < 0.5:
        raise ValueError(f"trim fraction must be in [0, 0.5), got {fraction}")
    s = stack.to(torch.float64).sort(dim=0).values
    n = s.shape[0]
    k = math.floor(fraction * n)
    return s[k : n - k].mean(dim=0)


def robust_centre(
    parts: Sequence[Mapping[str, torch.Tensor]], method: str, fraction: float
) -> TensorDict:
    """Return the robust centre of same-keyed, same-shaped tensor dicts, key by key.

    Raises:
        ValueError: for no parts, mismatched keys or shapes, a non-floating tensor or an
            unknown method.

    """
    import torch

    if not parts:
        raise ValueError("robust aggregation needs at least one upload")
    names = sorted(parts[0])
    out: TensorDict = {}
    for key in names:
        ref = parts[0][key]
        if any(set(p) != set(names) or p[key].shape != ref.shape for p in parts):
            raise ValueError(f"robust aggregation: the lifted uploads differ at {key!r}")
        if not ref.is_floating_point():
            raise ValueError(f"robust aggregation: {key!r} is not a floating tensor")
        stack = torch.stack([p[key] for p in parts])  # (n, ...)
        if method == "median":
            centre = coordinate_median(stack)
        elif method == "trimmed_mean":
            centre = trimmed_mean(stack, fraction)
        else:
            raise ValueError(f"unknown robust statistic {method!r}")
        out[key] = centre.to(ref.dtype).contiguous()
    return out


def robust_uploads(
    alg: Algorithm[Any],
    state: Any,
    uploads: Mapping[int, Upload],
    method: str,
    fraction: float,
) -> dict[int, Upload]:
    """Return the uploads ``aggregate`` receives under ``fed.robust`` (module docstring).

    Every upload's tensors become the robust centre of the lifted uploads; weights and metrics
    are kept.
    """
    cids = sorted(uploads)
    lifted = [alg.lift(state, uploads[c].tensors) for c in cids]
    centre = robust_centre(lifted, method, fraction)
    return {c: replace(uploads[c], tensors=dict(centre)) for c in cids}


def aggregate(
    cfg: ExperimentConfig,
    alg: Algorithm[Any],
    state: Any,
    uploads: Mapping[int, Upload],
    rnd: RoundInfo,
) -> Any:
    """Return the server's new state from the accepted uploads, under ``fed.robust``.

    The aggregation step of both runtimes: ``alg.aggregate`` as is when ``fed.robust`` is
    ``none``, else on :func:`robust_uploads`.
    """
    if cfg.fed.robust != "none":
        uploads = robust_uploads(alg, state, uploads, cfg.fed.robust, cfg.fed.trim_fraction)
    return alg.aggregate(state, uploads, rnd)


def mean_algorithms() -> list[str]:
    """Return the registered algorithms that accept robust aggregation."""
    return [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).mean_aggregation]


def check_robust(cfg: ExperimentConfig, alg: Algorithm[Any]) -> None:
    """Refuse ``fed.robust`` for an algorithm whose aggregation is not a weighted mean.

    Raises:
        ConfigError: naming the algorithm, its aggregation and the algorithms that accept it.

    """
    if cfg.fed.robust == "none" or alg.mean_aggregation:
        return
    what = _summary(alg)
    raise ConfigError(
        f"fed.robust: {cfg.fed.robust} replaces a weighted mean of the uploads, but the "
        f"aggregation of algorithm {cfg.algorithm!r} is not one ({what}); it works with "
        f"{', '.join(mean_algorithms())}. Set fed.robust: none (fed.clip_update_norm still "
        "bounds every update)"
    )


def _summary(alg: Algorithm[Any]) -> str:
    """Return the first line of the algorithm module's docstring (its method in one line)."""
    module = sys.modules.get(type(alg).__module__)
    text = (module.__doc__ if module is not None else None) or type(alg).__name__
    return text.strip().splitlines()[0].rstrip(".")
