"""The tasks rtml serves, one package per task (today ``recs``): the task's own code.

Services may import from here; nothing here imports a service.
"""
