"""Tasks: where each data set is parsed, which splits exist, and how submissions are written.

``get_task(name, data_root)`` returns a :class:`~fine_tune.tasks.task.Task`: an official one (``boolq qqp cola sst2
mrpc stsb mnli qnli rte wnli cb rte_superglue``) or one of your own, ``<data_root>/<name>/task.json``.
"""

from .example import Example
from .registry import TASKS, get_task
from .task import Task

__all__ = ["Example", "TASKS", "Task", "get_task"]
