"""Measures of docs/design.md §4: partition functions (exact, AIS) and likelihoods, retrieval and
classification by linear probes, conditional cross-entropy, figures, and the evaluation protocol."""
