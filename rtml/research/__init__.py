"""Offline research tools, run from the command line and never by a service:
``rtml experiment ab-vs-bandit`` (``experiment.py``) and ``rtml evaluate
cb-bakeoff`` (``bakeoff.py``)."""
