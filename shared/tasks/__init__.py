"""The task layer: what a task is (``spec.py``), how a spec is checked (``check.py``)
and which tasks a process serves (``registry.py``). Services look every per-task
decision up here, by the task's name; none of them names a task.
"""
