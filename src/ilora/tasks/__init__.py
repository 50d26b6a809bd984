"""Registered tasks: each module registers its task(s) in ``TASKS`` on import."""

from ilora.tasks import fashion_mnist, image_npz, text, tiny

__all__ = ["fashion_mnist", "image_npz", "text", "tiny"]
