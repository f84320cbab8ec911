"""Run the authors' MATLAB MRBM code under GNU Octave on an IDX image set; score it with mmvi.

    nice -n 15 python scripts/reference_run.py --ref /tmp/ref --data-dir /work/shared/data/mnist \\
        --preset pcd --epochs 2 --hidden 100 --n-train 5000 --out runs/reference/mnist_pcd_tiny --mmvi

``--ref`` is a clone of the public repository ``kihyuks/nips2014_multimodal_learning`` (kept out
of this repository). Its code runs unmodified: the script writes, into a scratch folder of its own
under ``--out``,

* ``work/mnist/data/mnist_train.mat`` and ``mnist_test.mat`` — the ``digits`` (784 × N,
  column-major images, [0, 1]) and ``labels`` (1…10) their ``mnist/load_mnist.m`` loads instead of
  downloading; the training file holds mmvi's training split followed by its validation split, so
  their columns 1…50,000 / 50,001… are mmvi's train / val;
* ``work/utils`` and ``work/mrnn`` — links to the clone's folders, which their ``mnist/startup.m``
  adds as ``../utils`` and ``../mrnn``;
* ``work/shim/gather.m`` — ``gather`` (MATLAB's GPU-to-host copy, absent from Octave), the identity;
* ``work/mnist/run_reference.m`` — the driver: their ``startup`` and ``load_mnist``, the first
  ``--n-train`` training columns, ``demo_mnist.m``'s halves and parameter struct with the preset's
  arguments of ``mnist/scripts.m`` (epochs and hidden units replaced), then their ``mrbm_filename``,
  ``mrbm_train`` (which seeds ``rng('default')``) and ``mrbm_infer_bin_bin`` on the test set.
  (``demo_mnist`` itself fixes the training set at 50,000 and ends with liblinear, so the driver
  repeats its set-up lines instead of calling it.)

The weights they save (``work/mnist/results/<name>_iter_<epochs>.mat``) are copied into an
``mmvi.models.MultimodalRBM`` and evaluated by mmvi's evaluation protocol on the same data, with the
settings of ``python -m mmvi.train experiment=paper_mnist_<preset>`` and the same overrides
(:func:`mmvi.reference.score_reference`); their own test representations are compared with mmvi's
inference of the same weights (``check/max_abs_diff_*``). ``--mmvi`` also trains mmvi with those
overrides. Output: ``<out>/results.json`` and ``<out>/table.md`` (one row per source).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# mnist/scripts.m: demo_mnist(dataset, optgpu, traintype, numhid, epsilon, eps_decay, sp_reg, sp_target,
# l2reg, maxiter, batchsize, stdinit, upfactor_x, upfactor_z, downfactor, usepcd, kcd, negchain, nmf,
# nstop, px, pz, alpha); demo_mnist's defaults fill what a call leaves out.
COMMON = dict(eps=0.01, eps_decay=0.005, l2reg=0.0001, batchsize=100, stdinit=0.01)
COMMON.update(upfactor_x=1, upfactor_z=1, downfactor=1)
DEMO_DEFAULTS = dict(usepcd=1, kcd=1, negchain=10, nmf=10, nstop=1, px=0.0, pz=None, alpha=1.0)
PRESETS = {
    "pcd": dict(traintype="pcd", sp_reg=0.3, sp_target=0.05, usepcd=1, kcd=10, negchain=500),
    "cdpl": dict(traintype="cdpl", sp_reg=0.1, sp_target=0.1, usepcd=0, kcd=10),
    "mp": dict(
        traintype="mrnn",
        sp_reg=0.1,
        sp_target=0.1,
        usepcd=1,
        kcd=5,
        negchain=500,
        nmf=5,
        nstop=5,
        px=0.25,
        pz=0.25,
        alpha=1.0,
    ),
    "hybrid": dict(
        traintype="hybrid",
        sp_reg=0.1,
        sp_target=0.1,
        usepcd=1,
        kcd=10,
        negchain=500,
        nmf=5,
        nstop=5,
        px=0.1,
        pz=0.1,
        alpha=0.5,
    ),
}
NAMES = {"pcd": "NLL-PCD", "cdpl": "MinVI CD-PercLoss", "mp": "MinVI MP", "hybrid": "hybrid"}
COLUMNS = (
    ("err both", "classify/err_multimodal"),
    ("left only", "classify/err_left"),
    ("right only", "classify/err_right"),
    ("CE right \\| left", "cond_ce/right_given_left"),
    ("CE left \\| right", "cond_ce/left_given_right"),
)
GATHER_M = "function x = gather (x)\nend\n"


def preset_params(preset: str, epochs: int, hidden: int) -> dict:
    """The preset's ``demo_mnist`` arguments (``scripts.m``) with its defaults filled in."""
    p = {**COMMON, **DEMO_DEFAULTS, **PRESETS[preset], "numhid": hidden, "maxiter": epochs}
    if p["pz"] is None:
        p["pz"] = p["px"]
    p["nstop"] = min(p["nstop"], p["nmf"])
    return p


def octave_value(v) -> str:
    return f"'{v}'" if isinstance(v, str) else repr(v)


def driver(params: dict, n_train: int, ref: Path, shim: Path) -> str:
    """The Octave script run in ``work/mnist`` (module docstring)."""
    p = {k: octave_value(v) for k, v in params.items()}
    return f"""% written by mmvi's scripts/reference_run.py; calls the reference code unmodified
more off;
save_default_options('-mat7-binary');  % their save() calls write files scipy reads
addpath('{shim}');
addpath('{ref}/mnist');
startup;                                % their startup: ../utils, ../mrnn, data/ log/ results/
[xtr, ytr, xval, yval, xts, yts, dim] = load_mnist;
xtr = xtr(:, 1:{n_train});
% demo_mnist.m: left/right halves
xtr = reshape(xtr, [dim, size(xtr, 2)]);
ztr = xtr(:, 15:end, :);
xtr = xtr(:, 1:14, :);
xtr = reshape(xtr, [prod(dim)/2, numel(xtr)/(prod(dim)/2)]);
ztr = reshape(ztr, [prod(dim)/2, numel(ztr)/(prod(dim)/2)]);
xts = reshape(xts, [dim, size(xts, 2)]);
zts = xts(:, 15:end, :);
xts = xts(:, 1:14, :);
xts = reshape(xts, [prod(dim)/2, numel(xts)/(prod(dim)/2)]);
zts = reshape(zts, [prod(dim)/2, numel(zts)/(prod(dim)/2)]);
% demo_mnist.m: the parameter struct
params = struct('dataset', 'mnist_orig', 'optgpu', 0, 'savedir', savedir, 'traintype', {p["traintype"]}, ...
    'typeinx', 'binary', 'typeinz', 'binary', 'typeout', 'binary', ...
    'numvx', size(xtr, 1), 'numvz', size(ztr, 1), 'numhid', {p["numhid"]}, ...
    'eps', {p["eps"]}, 'eps_decay', {p["eps_decay"]}, 'sp_type', 'exact', 'sp_reg', {p["sp_reg"]}, ...
    'sp_target', {p["sp_target"]}, 'l2reg', {p["l2reg"]}, 'maxiter', {p["maxiter"]}, ...
    'batchsize', {p["batchsize"]}, 'normalize', false, 'stdinit', {p["stdinit"]}, ...
    'momentum_change', 5, 'momentum_init', 0.33, 'momentum_final', 0.47, ...
    'upfactor_x', {p["upfactor_x"]}, 'upfactor_z', {p["upfactor_z"]}, 'downfactor', {p["downfactor"]}, ...
    'usepcd', {p["usepcd"]}, 'kcd', {p["kcd"]}, 'negchain', {p["negchain"]}, 'nmf', {p["nmf"]}, ...
    'nstop', {p["nstop"]}, 'px', {p["px"]}, 'pz', {p["pz"]}, 'alpha', {p["alpha"]}, ...
    'saveiter', 20, 'verbose', 1);
[fname, params] = mrbm_filename(params);
[weights, params, history] = mrbm_train(xtr, ztr, params);
weights_file = sprintf('%s/%s_iter_%d.mat', savedir, params.fname, params.maxiter);
save(weights_file, 'weights', 'params', 'history');
if params.nmf > 0, nmf_test = params.nmf; else, nmf_test = 10; end
h_both = mrbm_infer_bin_bin(xts, zts, weights, params, nmf_test);
h_left = mrbm_infer_bin_bin(xts, [], weights, params, nmf_test);
h_right = mrbm_infer_bin_bin([], zts, weights, params, nmf_test);
save('representations.mat', 'h_both', 'h_left', 'h_right', 'nmf_test', 'weights_file');
"""


def mmvi_overrides(args) -> list[str]:
    """The training/evaluation overrides both sides share."""
    out = [
        f"experiment=paper_mnist_{args.preset}",
        f"data.data_dir={Path(args.data_dir).resolve()}",
        "data.sha256=null",
        f"model.n_hidden={args.hidden}",
        f"trainer.max_epochs={args.epochs}",
        f"seed={args.seed}",
        "evaluation.classifier.refit=train",
        "logger=none",
    ]
    if args.n_train < 50000:
        out.append(f"data.max_examples={{train:{args.n_train}}}")
    return out + list(args.override)


def write_data(cfg_overrides: list[str], mnist_dir: Path) -> tuple[object, int]:
    """The ``data/mnist_{train,test}.mat`` files ``load_mnist.m`` loads (module docstring), from the
    data module of ``cfg_overrides`` (without the training cap). Returns (data module, #train)."""
    from scipy.io import savemat

    from mmvi.api import compose_config
    from mmvi.instantiate import instantiate_checked
    from mmvi.reference import images_to_reference

    overrides = [o for o in cfg_overrides if not o.startswith("data.max_examples")]
    cfg = compose_config("train", overrides, run_dir=mnist_dir / "data")
    dm = instantiate_checked(cfg.data)
    dm.setup()
    if (
        dm.image_cut is None
        or dm.image_cut.cut != "columns"
        or (dm.image_cut.height, dm.image_cut.width)
        != (
            28,
            28,
        )
    ):
        raise SystemExit("the reference's MNIST code needs 28x28 images cut into left/right columns")
    n_train = len(dm.splits["train"])
    if n_train != 50000:
        raise SystemExit(
            f"load_mnist.m takes 50,000 training images; the data's training split has {n_train}"
        )
    (mnist_dir / "data").mkdir(parents=True, exist_ok=True)
    for name, parts in (("train", ("train", "val")), ("test", ("test",))):
        images = np.concatenate([dm.example_images(dm.splits[k].modalities).numpy() for k in parts])
        labels = np.concatenate([dm.splits[k].labels.argmax(1).numpy() for k in parts]) + 1
        savemat(
            mnist_dir / "data" / f"mnist_{name}.mat",
            {"digits": images_to_reference(images), "labels": labels.astype(np.float64)[:, None]},
            do_compression=True,
        )
    return dm, n_train


def run_octave(args, out: Path) -> Path:
    """Set up ``out/work`` and run the driver; return the folder it ran in. A finished run of the
    same driver there (its ``representations.mat``) is reused, not run again."""
    ref = Path(args.ref).resolve()
    for needed in ("mnist/load_mnist.m", "mnist/startup.m", "mrnn/mrbm_train.m", "utils/sigmoid.m"):
        if not (ref / needed).is_file():
            raise SystemExit(
                f"--ref {ref}: no {needed}; give a clone of kihyuks/nips2014_multimodal_learning"
            )
    work = out / "work"
    mnist_dir = work / "mnist"
    shim = work / "shim"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "gather.m").write_text(GATHER_M)
    for sub in ("utils", "mrnn"):
        link = work / sub
        if not link.exists():
            link.symlink_to(ref / sub)
    params = preset_params(args.preset, args.epochs, args.hidden)
    script = driver(params, args.n_train, ref, shim.resolve())
    done = mnist_dir / "representations.mat"
    if done.is_file() and (mnist_dir / "run_reference.m").read_text() == script:
        print(f"reusing the finished reference run in {mnist_dir}", flush=True)
        return mnist_dir
    write_data(mmvi_overrides(args), mnist_dir)
    (mnist_dir / "run_reference.m").write_text(script)
    done.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with open(out / "octave.log", "w") as log:
        proc = subprocess.run(
            [args.octave, "--no-gui", "--no-window-system", "--quiet", "--eval", "run_reference"],
            cwd=mnist_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise SystemExit(f"octave exited {proc.returncode}; see {out / 'octave.log'}")
    print(f"reference trained in {time.perf_counter() - t0:.0f} s", flush=True)
    for name in ("mnist_train.mat", "mnist_test.mat"):  # derived from the IDX files; large
        (mnist_dir / "data" / name).unlink(missing_ok=True)
    return mnist_dir


def compare_representations(weights: dict, reps_file: Path, overrides: list[str], run_dir: Path) -> dict:
    """max |h_reference − h_mmvi| over the test set for both / left / right queries (same weights)."""
    import torch
    from scipy.io import loadmat

    from mmvi.api import compose_config
    from mmvi.instantiate import instantiate_checked
    from mmvi.lifecycle import complete_modalities
    from mmvi.models.mrbm import MultimodalRBM
    from mmvi.reference import set_reference_weights

    reps = loadmat(str(reps_file))
    steps = int(np.asarray(reps["nmf_test"]).item())
    cfg = compose_config("train", overrides, run_dir=run_dir)
    dm = instantiate_checked(cfg.data)
    dm.setup()
    complete_modalities(cfg, dm)
    model = MultimodalRBM(cfg.model.modalities, n_hidden=weights["hidbias"].shape[0]).double()
    set_reference_weights(model, weights)
    test = {m: x.double() for m, x in dm.splits["test"].modalities.items()}
    out = {}
    with torch.no_grad():
        for key, given in (("both", ("left", "right")), ("left", ("left",)), ("right", ("right",))):
            h = model.representation({m: test[m] for m in given}, steps=steps, tol=1e-5).numpy()
            out[f"check/max_abs_diff_{key}"] = float(np.abs(h - reps[f"h_{key}"].T).max())
    return out


def table(rows: list[dict]) -> str:
    head = "| objective | source | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "| --- | --- |" + " ---: |" * len(COLUMNS)]
    for r in rows:
        vals = " | ".join(f"{r['metrics'].get(k, float('nan')):.2f}" for _, k in COLUMNS)
        lines.append(f"| {r['objective']} | {r['source']} | {vals} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="clone of kihyuks/nips2014_multimodal_learning")
    ap.add_argument("--data-dir", required=True, help="folder of the four IDX files (28x28, 60k/10k)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="pcd")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=1000)
    ap.add_argument("--n-train", type=int, default=50000, help="first n training images (<= 50000)")
    ap.add_argument("--seed", type=int, default=0, help="mmvi's seed (the reference seeds rng('default'))")
    ap.add_argument("--out", required=True, help="output folder (a scratch work/ folder inside)")
    ap.add_argument("--mmvi", action="store_true", help="also train mmvi with the same overrides")
    ap.add_argument("--mmvi-only", action="store_true", help="train mmvi only (no Octave)")
    ap.add_argument("--override", action="append", default=[], help="extra override for both sides")
    ap.add_argument("--mmvi-override", action="append", default=[], help="extra override, mmvi's run only")
    ap.add_argument("--label", default="", help="text added to the mmvi row's source")
    ap.add_argument("--octave", default="octave")
    args = ap.parse_args(argv)
    if not 0 < args.n_train <= 50000 or args.epochs < 1 or args.hidden < 1:
        ap.error("--n-train in 1..50000, --epochs >= 1, --hidden >= 1")
    if not args.mmvi_only and shutil.which(args.octave) is None:
        ap.error(f"{args.octave} not found: apt-get install octave")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    rows = json.loads(results_file.read_text())["rows"] if results_file.is_file() else []
    overrides = mmvi_overrides(args)
    setting = dict(preset=args.preset, epochs=args.epochs, hidden=args.hidden, n_train=args.n_train)
    if not args.mmvi_only:
        from mmvi.reference import load_reference_weights, score_reference

        mnist_dir = run_octave(args, out)
        reps_file = mnist_dir / "representations.mat"
        from scipy.io import loadmat

        wfile = str(np.asarray(loadmat(str(reps_file))["weights_file"]).item())
        weights = load_reference_weights(wfile)
        metrics = score_reference(weights, overrides, out / "score")
        metrics.update(compare_representations(weights, reps_file, overrides, out / "score"))
        rows.append(
            dict(
                objective=NAMES[args.preset],
                source="reference code (Octave)",
                **setting,
                weights=wfile,
                overrides=overrides,
                metrics=metrics,
            )
        )
    if args.mmvi or args.mmvi_only:
        from mmvi.api import run

        mm_over = overrides + list(args.mmvi_override)
        tag = "_".join(
            [f"mmvi_s{args.seed}", *(o.replace("=", "-").replace(".", "-") for o in args.mmvi_override)]
        )
        res = run(mm_over, run_dir=out / tag)
        source = f"mmvi `experiment=paper_mnist_{args.preset}`" + (f" {args.label}" if args.label else "")
        source += f" (seed {args.seed})"
        rows.append(
            dict(
                objective=NAMES[args.preset],
                source=source,
                **setting,
                run_dir=res["run_dir"],
                overrides=mm_over,
                metrics=res["metrics"],
            )
        )
    results_file.write_text(json.dumps({"rows": rows}, indent=1, default=float))
    (out / "table.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
