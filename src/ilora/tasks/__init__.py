"""Registered tasks: each module registers its task(s) in ``TASKS`` on import."""

from ilora.tasks import (
    fashion_mnist,
    healthnews,
    image_npz,
    rotten_tomatoes,
    text_csv,
    tiny,
    tiny_text,
)

__all__ = [
    "fashion_mnist",
    "healthnews",
    "image_npz",
    "rotten_tomatoes",
    "text_csv",
    "tiny",
    "tiny_text",
]
