"""The comparison report of a sweep: collect runs, aggregate over seeds, tables, plots, HTML.

Entry point: ``python -m mmvi.compare <multirun folder(s)>`` (:mod:`mmvi.compare`).

* :mod:`.collect` — ``results.json`` files (or wandb runs) into completed, running and skipped runs,
  a configuration = the choices + the recorded result-defining settings;
* :mod:`.tables` — runs table, mean ± std over seeds per configuration, Markdown/CSV;
* :mod:`.curves` — per-epoch learning curves from each run's CSV log (deep-pipeline stages in order);
* :mod:`.plots` — bar plots by objective, line plots along swept numeric axes, learning curves (PNG);
* :mod:`.stats` — paired statistics: two-level bootstrap interval, p, d_z, Holm/BH;
* :mod:`.paired` — the paired-comparison table and forest plots from per-item records;
* :mod:`.paper` — the paper's figures beside ours and the Table 1 claim check;
* :mod:`.html` — one static ``index.html``;
* :mod:`.watch` — ``--watch``: follow a running sweep, rewrite the report when a run changes;
* :mod:`.wandb_source` — optional: runs read from the wandb API.
"""
