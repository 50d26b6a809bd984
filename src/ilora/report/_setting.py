"""The setting of a comparison in words, computed from a stored config (``meta.json``).

:func:`describe` turns a config mapping (``config.yaml`` as a dict, ``algorithm``/``seed``
removed) into the sentences RESULTS.md prints above a table, so the description can never
drift from what ran. The model and data of a packaged task are named by its class (read, not
imported: :mod:`ilora.report._code_facts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ilora.report._code_facts import class_facts
from ilora.report._code_facts import task_target

OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD"}


def targets_text(lora: Mapping[str, Any]) -> str:
    """Return the explicit LoRA targets, if the config names any."""
    targets = lora.get("targets") or []
    return f" on {', '.join(f'`{t}`' for t in targets)}" if targets else ""


def model_text(task: str, task_args: Mapping[str, Any]) -> str:
    """Return the model and data of ``task`` in words (the task name for unknown tasks).

    The words and the defaults of the options they name are read from the task's class.
    """
    target = task_target(task)
    facts = class_facts(target) if target else {}
    if "model_words" not in facts or "data_words" not in facts:
        return f"task `{task}`"
    template = f"{facts['model_words']} + a fresh linear head on {facts['data_words']}"
    return template.format(**{**facts, **task_args})


def ranks_text(lora: Mapping[str, Any], num_clients: int) -> str:
    """Return the clients' LoRA ranks under the config's rank policy."""
    policy, ranks = lora.get("rank_policy", "uniform"), list(lora.get("ranks", []))
    if policy == "uniform":
        return f"rank {lora.get('rank', 8)} for every client"
    shown = ", ".join(str(r) for r in ranks)
    if policy == "cycle":
        return f"LoRA ranks {shown} (cycled over the {num_clients} clients)"
    if policy == "tiers":
        return f"LoRA ranks {shown} (seeded tiers {lora.get('tier_fractions')})"
    return f"LoRA ranks {shown} (one per client)"


def partition_text(data: Mapping[str, Any]) -> str:
    """Return the data partition in words."""
    args = data.get("partition_args", {})
    if data.get("partition") == "dirichlet":
        return f"Dirichlet({args.get('alpha')}) label skew"
    if data.get("partition") == "dirichlet-clients":
        return f"per-client Dirichlet({args.get('alpha')}) label skew, equal client sizes"
    return f"partition `{data.get('partition')}` {dict(args)}"


def data_text(facts: Mapping[str, Any]) -> str:
    """Return the sizes of the task's splits, if known."""
    if not facts:
        return ""
    return (
        f" ({facts['train']:,} training examples, a seeded {facts['test']:,}-example test "
        f"subset, {facts['classes']} classes; the majority class is "
        f"{100 * facts['majority_test']:.1f}% of that subset)"
    )


def centred_text(train: Mapping[str, Any]) -> str:
    """Return ", the head's input centred ..." when ``train.center_head`` is on, else ""."""
    center = int(train.get("center_head", 0) or 0)  # engine.headcenter
    return f", the head's input centred on its mean over {center} examples" if center else ""


def precision_text(train: Mapping[str, Any]) -> str:
    """Return ", forward and backward in bf16 ..." unless ``train.precision`` is fp32 (default)."""
    precision = str(train.get("precision", "fp32") or "fp32")  # engine.compute.autocast
    if precision == "fp32":
        return ""
    where = "" if precision == "bf16" else " where the CPU has native bf16 (`auto`)"
    return f", forward and backward in bf16 autocast{where} (factors and optimizer in fp32)"


def describe(
    setting: Mapping[str, Any],
    facts: Mapping[str, Any] | None = None,
    vary: str = "",
    lr_words: str = "",
) -> str:
    """Return the setting as a paragraph; ``vary`` names what the grid varies on top of it.

    ``lr_words`` replaces ``LoRA lr <train.lr>`` where the runs' rates differ.
    """
    data, fed, train = setting["data"], setting["fed"], setting["train"]
    lora, ev = setting["lora"], setting["eval"]
    n, frac = int(data["num_clients"]), float(fed["fraction"])
    per_round = max(1, round(n * frac))
    text = [
        f"{model_text(setting['task'], setting.get('task_args', {}))}"
        f"{data_text(facts or {})}; {n} clients with {ranks_text(lora, n)}"
        f"{targets_text(lora)}, LoRA alpha {lora.get('alpha')}, {partition_text(data)}"
    ]
    if float(data.get("local_test_fraction", 0)) > 0:
        share = 100 * float(data["local_test_fraction"])
        text.append(f", each client holding out {share:g}% of its data as its own test share")
    optimizer = OPTIMIZERS.get(train.get("optimizer", "adamw"), "optimizer")
    lr_text = lr_words or f"LoRA lr {train['lr']:g}"
    text.append(
        f"; {per_round} of {n} clients per round, {fed['rounds']} rounds x {train['steps']} local "
        f"{optimizer} steps (batch {train['batch_size']}, {lr_text}, head lr "
        f"{train['head_lr']:g}{centred_text(train)}{precision_text(train)}). Per-round accuracy "
        f"is measured on a fixed seeded subset of {ev['subset']} test examples"
    )
    cap = int(setting.get("task_args", {}).get("max_test", 0) or 0)
    split = (
        f"the whole test split (a seeded {cap}-example subset)" if cap else "the whole test split"
    )
    text.append(f"; the final accuracy on {split}." if ev.get("final_full") else ".")
    text.append(
        " The centralized line trains one model on the pooled data at the largest rank, for as "
        f"many steps per round as all sampled clients together ({per_round} x {train['steps']})."
    )
    extras = [
        f"`{alg}`: " + ", ".join(f"{k} {v}" for k, v in args.items())
        for alg, args in sorted(setting.get("per_algorithm", {}).items())
        if args
    ]
    if extras:
        text.append(" Method options: " + "; ".join(extras) + ".")
    if vary:
        text.append(f" {vary}")
    return "".join(text)
