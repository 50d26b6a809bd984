"""FSLoRA: clients train seeded sketches (random subsets of components) of global LoRA factors.

Fang, Han, Yuan, Hosseinalipour, Brinton, "Federated Sketching LoRA: A Flexible Framework for
Heterogeneous Collaborative Fine-Tuning of LLMs" (v1: "... On-Device Collaborative Fine-Tuning
of Large Language Models"), arXiv 2501.19389 (ICLR 2026 submission).

The server keeps one global pair ``B (d_out, r)``, ``A (r, d_in)`` per adapted layer at the
global rank ``r``; the global model is ``W0 + s(r)·B A``. One round, client ``i`` with budget
``k_i`` (its ``ClientInfo.rank``): per layer a sketch ``I_i`` of ``k_i`` of the ``r`` components
is drawn uniformly without replacement, ``S_i = (r/k_i) Σ_{j∈I_i} e_j e_jᵀ`` (``E[S_i] = I``).
The client trains the slices ``B̃ = B[:, I_i]`` ``(d_out, k_i)`` and ``Ã = A[I_i]``
``(k_i, d_in)`` (and the head) on ``W0 + s(r)·(r/k_i)·B̃ Ã`` = ``W0 + s(r)·B S_i A`` (eq. 4: the
gradients of ``B`` and ``A`` vanish outside ``I_i``) and uploads the trained slices. Server
(eq. 5): ``B ← B + Σ_i p_i Z_i(B̃_i − B[:, I_i])``, ``A ← A + Σ_i p_i Z_i(Ã_i − A[I_i])`` with
``Z_i`` the zero-fill of the unselected columns/rows; no per-column renormalisation (the
``r/k_i`` factor already makes the sketch unbiased). The head is FedAvg-ed.

Hooks: ``download`` draws the sketch from ``generator(seed, "fslora-sketch", round, cid,
module)`` and sends only the slices (and ``r`` in ``Payload.config``); ``client_init`` installs
the slices as the trainable factors; ``upload`` sends the trained slices; ``aggregate``
regenerates every participant's sketch from the same seed parts (no indices travel) and applies
eq. 5. The unselected components are never on the client, so no optimizer (weight decay,
moments) can move them: columns/rows outside every sketch of a round are bitwise unchanged.

Scaling, exactly: the layer applies ``LoRASpec.scale(k_i)`` to the installed rank-``k_i``
slices, while eq. 4 needs ``s(r)·r/k_i``. Their ratio ``c = s(r)·r / (k_i·s(k_i))`` is 1 for the
plain ``α/r`` scaling (the sketch factor and the LoRA scaling cancel) and then nothing is added;
otherwise (rsLoRA: ``c = sqrt(r/k_i)``; ``alpha_scales_with_rank``: ``c = r/k_i``) the client
also installs a frozen core ``lora_C = c·I_{k_i}`` (never trained, never uploaded), so the forward
is ``s(k_i)·B̃ (c I) Ã`` = eq. 4's and the trained parameters are B̃, Ã themselves (the gradient
of eq. 4, not a rescaled one).

Choices where the sources are silent or differ:

* The released code never sketches (ALGORITHMS.md §4.6: its ``'lora_B' == n`` name test never
  matches, so every client trains full rank-``r`` factors) and would draw B's columns and A's
  rows independently; we follow the paper: one index set per layer for B and A, drawn
  independently per layer, client and round.
* Server update: eq. 5 (server SGD with step 1), not the released server Adam on the
  pseudo-gradient. The weights are ``p_i = w_i / Σ w`` over the participants: with
  ``fed.weighting: uniform`` this is the paper's ``1/|S_t|``; the default example weights
  generalise it (still no per-column renormalisation).
* The client's model is eq. 4's sketched model ``W0 + s(r)·(r/k_i)·B̃ Ã`` (only the selected
  components, scaled up), not the global model; the download is the slices only.
* ``k_i`` is the client's rank (its resource budget); ``r`` is ``global_rank`` or, when 0, the
  largest client rank. Clients upload trained slices rather than deltas (same size); the server
  forms the deltas against the slices it sent.
* The standard LoRA init (seeded A, B = 0) at rank ``r`` (the paper uses PEFT's default).

``agg_error``: the new global update ``s(r)·B' A'`` against the weighted sum of the clients'
trained sketched adapters ``Σ_i p_i s(r)(r/k_i) B̃_i Ã_i``; it measures the sketching error
(unbiased, not zero) together with the error of averaging factors.

Heterogeneous ranks: native (the paper's purpose): every client trains a ``k_i``-subset of the
same ``r`` coordinates; no padding, SVD or stacking.

Bytes per client per round (float32), per adapted layer ``(d_out, d_in)`` at the client's rank
``k``: download ``4·k·(d_out + d_in)`` (the slices) and upload ``4·k·(d_out + d_in)``; plus
``4·n_head`` each way for the head's ``n_head`` floats. The sketch indices never travel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING

from ilora.algorithms import traffic
from ilora.algorithms._shared import FactorState
from ilora.algorithms._shared import agg_error
from ilora.algorithms._shared import head_of
from ilora.algorithms._shared import init_factors
from ilora.algorithms._shared import layer_shapes
from ilora.algorithms._shared import max_rank
from ilora.algorithms._shared import mean_extras
from ilora.algorithms._shared import normalized_weights
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import hyperparameter
from ilora.algorithms.base import register
from ilora.lora import keys
from ilora.lora.linalg import stack
from ilora.lora.spec import LoRASpec
from ilora.seeding import generator
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload

if TYPE_CHECKING:
    import torch

GLOBAL_RANK = "global_rank"  # Payload.config: the rank r of the global factors


def sketch_indices(seed: int, rnd: int, cid: int, module: str, r: int, k: int) -> torch.Tensor:
    """Return the sorted ``k`` of ``r`` components client ``cid`` trains in layer ``module``.

    Drawn uniformly without replacement from ``generator(seed, "fslora-sketch", rnd, cid,
    module)``: server and client regenerate it, it is never sent.
    """
    import torch

    perm = torch.randperm(r, generator=generator(seed, "fslora-sketch", rnd, cid, module))
    return perm[:k].sort().values


def sketch_correction(lora: LoRASpec, r: int, k: int) -> float:
    """Return ``c = s(r)·(r/k) / s(k)``: what the layer's ``s(k)`` lacks for eq. 4's scaling."""
    return lora.scale(r) * r / (k * lora.scale(k))


@register("fslora")
@dataclass(frozen=True)
class FSLoRA(Algorithm[FactorState]):
    """FSLoRA (see the module docstring).

    State: ``FactorState`` with the global factors at ``rank`` (``r``) and the head.
    """

    heterogeneous_ranks = True

    global_rank: int = hyperparameter(
        0,
        "ours",
        "rank r of the global factors (>= every client rank); 0 = the largest "
        "client rank (ours: as large as the other methods' global model; the paper's "
        "r=64 is twice its largest k_i)",
    )

    def __post_init__(self) -> None:
        if self.global_rank < 0:
            raise ValueError(
                f"global_rank must be >= 0 (0 = the largest client rank), got {self.global_rank}"
            )

    # ---- server
    def server_init(
        self, template: TensorDict, clients: Sequence[ClientInfo], lora: LoRASpec, seed: int
    ) -> FactorState:
        r = self.global_rank or max_rank(clients)
        if r < max_rank(clients):
            raise ValueError(
                f"global_rank must be >= the largest client rank {max_rank(clients)}, got {r}"
            )
        for module, (d_out, d_in) in layer_shapes(template).items():
            if r > min(d_out, d_in):
                raise ValueError(
                    f"global_rank {r} exceeds min(d_in, d_out) = {min(d_out, d_in)} of layer "
                    f"{module!r}; lower global_rank"
                )
        factors = init_factors(template, r, lora, seed, "lora-init")  # A random, B = 0
        head = {k: v.clone() for k, v in head_of(template).items()}
        return FactorState({**factors, **head}, lora, r)

    def download(self, state: FactorState, client: ClientInfo, rnd: RoundInfo) -> Payload:
        sent: TensorDict = {}
        for m in keys.modules(state.tensors):
            idx = sketch_indices(rnd.seed, rnd.round, client.cid, m, state.rank, client.rank)
            B, A = keys.make(m, "lora_B"), keys.make(m, "lora_A")
            sent[B] = state.tensors[B][:, idx].contiguous()  # (d_out, k)
            sent[A] = state.tensors[A][idx].contiguous()  # (k, d_in)
        return Payload({**sent, **head_of(state.tensors)}, {GLOBAL_RANK: state.rank})

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        p, r = normalized_weights(uploads), state.rank
        new: TensorDict = {}
        ideal, applied = {}, {}
        for m in keys.modules(keys.of_kind(state.tensors, "lora_A")):
            kB, kA = keys.make(m, "lora_B"), keys.make(m, "lora_A")
            B_old, A_old = state.tensors[kB], state.tensors[kA]
            B, A = B_old.double(), A_old.double()  # (d_out, r), (r, d_in)
            Bs, As, coeffs = [], [], []
            for cid in sorted(uploads):
                B_k, A_k = uploads[cid].tensors[kB], uploads[cid].tensors[kA]
                k = int(A_k.shape[0])
                idx = sketch_indices(rnd.seed, rnd.round, cid, m, r, k)
                B[:, idx] += p[cid] * (B_k.double() - B_old[:, idx].double())  # Z_i(ΔB_i)
                A[idx] += p[cid] * (A_k.double() - A_old[idx].double())  # Z_i(ΔA_i)
                Bs.append(B_k)
                As.append(A_k)
                coeffs.append(p[cid] * state.lora.scale(r) * r / k)  # p_i s(r) r/k_i
            new[kB], new[kA] = B.float(), A.float()
            ideal[m] = stack(Bs, As, coeffs)  # Σ p_i s(r)(r/k_i) B̃_i Ã_i
            applied[m] = (new[kB], state.lora.scale(r) * new[kA])
        tensors = {**new, **mean_extras(uploads)}
        return replace(state, tensors=tensors, metrics={"agg_error": agg_error(ideal, applied)})

    def export(self, state: FactorState) -> LocalSetup:
        return LocalSetup(factors=dict(state.tensors))

    # ---- client
    def client_init(self, ctx: ClientContext, cstate: TensorDict) -> tuple[LocalSetup, TensorDict]:
        import torch

        received = dict(ctx.payload.tensors)  # the slices and the head: what is trained
        r = int(ctx.payload.config[GLOBAL_RANK])
        cores: TensorDict = {}
        for key, A in keys.of_kind(received, "lora_A").items():
            k = int(A.shape[0])
            c = sketch_correction(ctx.lora, r, k)
            if not math.isclose(c, 1.0, rel_tol=1e-12, abs_tol=0.0):
                module = keys.parse(key)[0]  # type: ignore[index]
                cores[keys.make(module, "lora_C")] = c * torch.eye(k)  # (k, k), frozen
        return LocalSetup({**received, **cores}, trainable=frozenset(received)), cstate

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        sent = {k: v for k, v in trained.items() if keys.kind_of(k) != "lora_C"}
        return Upload(sent, float(ctx.client.num_examples)), cstate


# ---- bytes per client per round, float32 floats (down, up): the check of the hooks' traffic
traffic.formula(FSLoRA)(traffic.pair_both_ways)  # the k_i-component slices; seed shared
