"""Evaluation: pure functions (``functional``: OKS, PVE, MPJPE, PA-MPJPE...) and registered metrics (``metrics``)."""
