"""Tasks: where each data set is parsed, which splits exist, and how submissions are written.

``get_task("boolq")`` / ``get_task("qqp")`` return a :class:`~fine_tune.tasks.registry.Task`.
"""

from .example import Example
from .registry import TASKS, Task, get_task

__all__ = ["Example", "TASKS", "Task", "get_task"]
