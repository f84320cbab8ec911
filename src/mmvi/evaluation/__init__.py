"""Measures: likelihoods (exact, AIS), retrieval and classification, figures."""
