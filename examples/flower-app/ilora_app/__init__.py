"""A Flower app of ILoRA (see ../README.md)."""
