"""The comparison report of a sweep: collect runs, aggregate over seeds, tables, plots, HTML.

Entry point: ``python -m mmvi.compare <multirun folder(s)>`` (:mod:`mmvi.compare`). Modules:
:mod:`.collect` (runs from ``results.json`` files or wandb: completed, running, skipped),
:mod:`.tables` (mean ± std per configuration), :mod:`.curves` (per-epoch learning curves),
:mod:`.plots` (PNG figures), :mod:`.stats` and :mod:`.paired` (paired
comparisons from per-item records: interval, p, d_z, Holm/BH; forest plots), :mod:`.paper` (the paper's figures and the Table 1 claim check),
:mod:`.html` (``index.html``), :mod:`.watch` (``--watch``), :mod:`.wandb_source` (optional wandb
API source). What the report holds: docs/workflow.md §2.
"""
