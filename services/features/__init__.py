"""The features service: streaming + batch features for online prediction (a faust app).

``python -m rtml.services.features`` runs a worker; ``app.py`` explains the design.
"""
