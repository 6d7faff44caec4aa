"""Bandit policies, pure math (no Kafka, no HTTP): ``policies.py`` over model versions,
``contextual.py`` over items with a context. The router routes with them; the recs
offline evaluation and the research tools (``rtml experiment``, ``rtml evaluate
cb-bakeoff``) run them on logged and simulated data."""
