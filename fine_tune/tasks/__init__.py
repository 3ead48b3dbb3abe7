"""Tasks: where each data set is parsed, which splits exist, and how submissions are written.

``get_task(name)`` returns a :class:`~fine_tune.tasks.registry.Task` (``boolq qqp cola sst2 mrpc mnli qnli rte
wnli cb``).
"""

from .example import Example
from .registry import TASKS, Task, get_task

__all__ = ["Example", "TASKS", "Task", "get_task"]
