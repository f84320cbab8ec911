"""The comparison report of a sweep: collect runs, aggregate over seeds, tables, plots, HTML.

Entry point: ``python -m mmvi.compare <multirun folder(s)>`` (:mod:`mmvi.compare`).

* :mod:`.collect` — ``results.json`` files (or wandb runs) into completed runs and skipped ones;
* :mod:`.tables` — runs table, mean ± std over seeds per configuration, Markdown/CSV;
* :mod:`.plots` — bar plots by objective and line plots along swept numeric axes (PNG);
* :mod:`.paper` — the paper's figures beside ours and the Table 1 claim check;
* :mod:`.html` — one static ``index.html``;
* :mod:`.wandb_source` — optional: runs read from the wandb API.
"""
