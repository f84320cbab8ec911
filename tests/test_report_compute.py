"""The report against compute (--x), the equal-compute table and the trade-off frontier, on real tiny
runs: nll_cd and minvi_mp, and a hybrid α sweep (0, 0.5, 1), all with the joint likelihood."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forked_cli import run_module
from mmvi.compare import compare, main
from mmvi.report.compute import against, value_at
from mmvi.report.curves import read_curves
from mmvi.report.frontier import CE_SUM, JOINT, ONE_ERROR, pareto_mask
from test_compare import dump_dom, env, images_in_browser

COMMON = [
    "data=mnist5k",
    "data.max_examples={train:300,val:100,test:100}",
    "model.n_hidden=12",
    "trainer.max_epochs=3",
    "evaluation.mf_steps=20",
    "evaluation.n_generation=0",
    "evaluation.likelihood.enabled=true",
    "logger=csv",
    "callbacks=none",
]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compute")
    for name, params in (
        ("objectives", ["objective=nll_cd,minvi_mp", "seed=0"]),
        ("alpha", ["objective=hybrid", "objective.alpha=0,0.5,1", "seed=0"]),
    ):
        proc = run_module(
            "mmvi.train", ["-m", *params, *COMMON, f"hydra.sweep.dir={root / name}"], root, env()
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def test_pareto_mask_known_answer():
    points = np.array(
        [[1, 5], [2, 3], [3, 4], [4, 1], [2, 3], [5, 5], [np.nan, 0], [1, 6], [0.5, 7]], dtype=float
    )
    # (3, 4) is dominated by (2, 3); (5, 5) by all of the front; (1, 6) by (1, 5); NaN never counts
    expected = [True, True, False, True, True, False, False, False, True]
    assert pareto_mask(points).tolist() == expected
    assert pareto_mask(np.empty((0, 2))).tolist() == []
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        pareto_mask(np.ones(3))


def test_value_at_interpolates_inside_the_curve_only():
    curve = pd.Series([10.0, 6.0, 5.0], index=[2.0, 4.0, 8.0])
    assert value_at(curve, 3.0) == 8.0 and value_at(curve, 6.0) == 5.5 and value_at(curve, 8.0) == 5.0
    assert np.isnan(value_at(curve, 1.0)) and np.isnan(value_at(curve, 9.0))


def final_values(sweeps: Path) -> dict[str, pd.DataFrame]:
    return {str(p.parent): read_curves(p.parent).frame for p in sorted(sweeps.glob("*/*/results.json"))}


def test_equal_compute_table_at_the_cheapest_budget(sweeps, tmp_path):
    # examples: every run saw 900 → the budget is every run's end, its value the last epoch's
    rep = compare([sweeps], tmp_path / "examples", x="examples")
    table = pd.read_csv(tmp_path / "examples" / "equal_compute.csv")
    assert len(table) == 5 and (table["budget"] == 900).all() and (table["total"] == 900).all()
    last = sorted(f["val/cond_ce/sum"].iloc[-1] for f in final_values(sweeps).values())
    np.testing.assert_allclose(sorted(table["val/cond_ce/sum mean"]), last, rtol=1e-9)
    assert all(p.axis == "examples" for p in rep.plots if p.kind == "curve")
    # FLOPs: nll_cd (CD-1, 3 products per step and example) is the cheapest; each value is its
    # interpolation on the run's own curve at that budget
    compare([sweeps], tmp_path / "flops", x="flops", figures=False)
    assert not (tmp_path / "flops" / "plots").exists()  # figures=False: tables and page only
    table = pd.read_csv(tmp_path / "flops" / "equal_compute.csv").set_index("configuration")
    assert table["cheapest"].sum() == 1 and bool(table.loc["nll_cd", "cheapest"])
    frames = list(final_values(sweeps).values())
    budget = min(f["train/flops"].iloc[-1] for f in frames)
    assert (table["budget"] == budget).all()
    for _, row in table.iterrows():  # runs of equal cost (minvi_mp, hybrid α = 1) are either one
        same_cost = [f for f in frames if f["train/flops"].iloc[-1] == row["total"]]
        wants = [value_at(against(f, "val/cond_ce/sum", "flops"), budget) for f in same_cost]
        if row["val/cond_ce/sum n"] == 0:
            assert all(np.isnan(w) for w in wants)
        else:
            assert any(row["val/cond_ce/sum mean"] == pytest.approx(w) for w in wants)
    cheapest = next(f for f in frames if f["train/flops"].iloc[-1] == budget)
    assert table.loc["nll_cd", "val/cond_ce/sum mean"] == pytest.approx(cheapest["val/cond_ce/sum"].iloc[-1])
    md = compare([sweeps], tmp_path / "epoch", figures=False).out_dir / "index.html"
    assert "Equal compute" in md.read_text() and "matmul FLOPs budget" in md.read_text()


def test_x_option_is_checked(sweeps, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(sweeps), "--x", "hours"])
    assert exc.value.code == 2 and "invalid choice: 'hours'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="x='hours'"):
        compare([sweeps], tmp_path / "bad", x="hours")


def test_frontier_and_equal_compute_render_in_headless_chromium(sweeps, tmp_path):
    out = tmp_path / "report"
    assert main([str(sweeps), "--out", str(out), "--x", "seconds"]) == 0
    points = pd.read_csv(out / "frontier.csv")
    assert len(points) == 5 and points[JOINT].notna().all() and points["alpha"].notna().sum() == 3
    for y in (ONE_ERROR, CE_SUM):
        np.testing.assert_array_equal(points[f"front {y}"], pareto_mask(points[[JOINT, y]].to_numpy()))
        assert points[f"front {y}"].any()
    png = out / "plots" / "frontier_mnist5k.png"
    assert png.stat().st_size > 10_000
    dom = dump_dom((out / "index.html").resolve().as_uri())
    for text in (
        '<h2 id="frontier">Trade-off frontier</h2>',
        '<table id="frontier">',
        '<h2 id="equal-compute">',
        '<table id="equal-compute">',
        "(cheapest)",
        "Drawn against seconds",
        "plots/frontier_mnist5k.png",
    ):
        assert text in dom, text
    front_rows = dom.split('<table id="frontier">', 1)[1].split("</table>", 1)[0].count("<tr>") - 1
    assert front_rows == int((points[f"front {ONE_ERROR}"] | points[f"front {CE_SUM}"]).sum())
    loaded = images_in_browser(out / "index.html", tmp_path)
    assert "plots/frontier_mnist5k.png" in loaded["images"] and loaded["broken"] == []
