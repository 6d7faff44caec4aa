"""Fraud scoring on rtml: the events (``events.py``), the task (``spec.py``) and a
seeded generator of card traffic (``generator.py``)."""
