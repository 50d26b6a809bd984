"""ILoRA: federated LoRA fine-tuning under heterogeneous ranks, data and reliability."""

__version__ = "0.1.0"
