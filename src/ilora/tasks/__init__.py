"""The task names: each is registered in ``TASKS`` with the class that implements it.

This table is the one place a task name is defined. A task's module, and what it imports
(``transformers`` behind the text tasks), is imported only when that task is first looked up
(``TASKS.get``), so importing the engine, the CLI or a Flower ClientApp stays cheap.
"""

from ilora.tasks.catalog import TASKS

_TASK_CLASSES = {
    "fashion-mnist": "ilora.tasks.fashion_mnist:FashionMNIST",
    "healthnews": "ilora.tasks.healthnews:HealthNews",
    "image-npz": "ilora.tasks.image_npz:ImageNpz",
    "rotten-tomatoes": "ilora.tasks.rotten_tomatoes:RottenTomatoes",
    "text-csv": "ilora.tasks.text_csv:TextCSV",
    "tiny-image": "ilora.tasks.tiny:TinyImage",
    "tiny-text": "ilora.tasks.tiny_text:TinyText",
}

for _name, _target in _TASK_CLASSES.items():
    TASKS.register_lazy(_name, _target)
