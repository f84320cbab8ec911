"""The report's analysis sections on two real runs, rendered in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import mmvi
from helpers import SMALL_RUN
from mmvi.compare import compare
from test_compare import dump_dom, images_in_browser

ANALYSES = [
    "evaluation.likelihood.enabled=true",  # 16 hidden units: exact
    "evaluation.likelihood.n_examples=40",
    "+evaluation.likelihood.joint=false",
    "evaluation.inference_gap.enabled=true",
    "evaluation.inference_gap.per_epoch=true",
    "evaluation.inference_gap.n_chains=2",
    "evaluation.inference_gap.n_samples=4",
    "evaluation.inference_gap.val_items=50",
    "evaluation.observed.enabled=true",
    "evaluation.observed.fractions=[0,0.5,1]",
    "trainer.max_epochs=2",
]


def test_likelihood_vs_inference_and_observed_sections_render(tmp_path):
    for obj in ("nll_cd", "minvi_mp"):
        mmvi.run([*SMALL_RUN, *ANALYSES, f"objective={obj}"], run_dir=tmp_path / "runs" / obj)
    report = compare([tmp_path / "runs"], out=tmp_path / "report")
    index = Path(report.out_dir) / "index.html"
    dom = dump_dom(index.resolve().as_uri())
    assert '<h2 id="likelihood-vs-inference">Likelihood vs inference</h2>' in dom
    assert '<h2 id="robustness-to-the-observed-fraction">Robustness to the observed fraction</h2>' in dom
    section = dom.split("Likelihood vs inference</h2>", 1)[1].split("<h2", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>", 1)[1], re.S)
    assert len(rows) == 4  # 2 objectives x 2 directions
    assert all("right_given_left" in r or "left_given_right" in r for r in rows)
    assert "nll_cd" in section and "minvi_mp" in section and " ± " in section
    for curve in ("val-gibbs_gap-left_given_right", "val-cond_ce_native-right_given_left"):
        assert curve in section, curve
    observed = sorted(p.name for p in (Path(report.out_dir) / "plots" / "observed").glob("*.png"))
    # err and ce for each half and each pattern (random, and block: the halves are image pieces)
    assert len(observed) == 8 and "observed-err-left-block.png" in observed
    assert not list((Path(report.out_dir) / "plots").glob("bar_observed*"))
    loaded = images_in_browser(index, tmp_path)
    assert loaded["broken"] == []
    assert sum(src.startswith("plots/observed/") for src in loaded["images"]) == 8
