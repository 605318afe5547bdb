"""Task recipes: a data set, how a batch is encoded into an input sequence, and its sizes."""
from .registry import TASKS as TASKS
from .registry import Task as Task
from .registry import load_task as load_task
