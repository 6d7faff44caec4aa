"""eta: delivery-time regression on the simulated food marketplace (``spec.py``)."""
