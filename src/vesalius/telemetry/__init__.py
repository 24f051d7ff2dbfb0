"""Telemetry: the Prometheus metrics of a running server (``metrics.py``), shared by its
processes through prometheus-client's multiprocess mode (``shared.py``), fed by the services'
events (``events.py``) and by small hooks in the front doors, and exposed at ``/metrics``
(``exposition.py``)."""
