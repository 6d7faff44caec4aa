"""What several services share about features: the pure parts, no Kafka, no HTTP.

``definitions.py`` (names, windows, defaults of the built-in entity features;
a task's vector is its spec's),
``records.py`` (the batch feature record on ``rtml.features.batch``),
``reference.py`` (the plain-Python point-in-time reference) and ``batch.py``
(the batch features computed from an event log). The streaming service that
computes the live features is ``services/features``.
"""
