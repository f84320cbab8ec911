"""Every command the README shows runs as written (small overrides appended for size).

:data:`COMMANDS` says, for each command line of the README's ``bash`` blocks, how it is run here:
the overrides appended (one epoch, a few hundred examples, a 16-unit model, the CSV logger) and
the placeholders (``<folder>``, ``<...>``) filled with what an earlier command made; or why it
is run elsewhere (the CI's own install and test commands, the SLURM cluster tests, a GPU). A
README command that matches no entry fails :func:`test_every_readme_command_is_covered`, so a
new command cannot go untested. The runs are marked ``readme`` (``make test-readme``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import SMALL_RUN

REPO = Path(__file__).resolve().parents[1]
SMALL = SMALL_RUN
DEEP = [
    "data.max_examples={train:300,val:100,test:100}",
    "stages.pathway.epochs=1",
    "stages.top.epochs=1",
    "stages.joint.epochs=1",
    "stages.finetune.recurrent.epochs=1",
    "logger=csv",
]
LIKELIHOOD = [
    "evaluation.likelihood.n_examples=10",
    "evaluation.likelihood.n_ais_runs=2",
    "evaluation.likelihood.n_betas=20",
    "evaluation.likelihood.joint_ais_runs=2",
    "evaluation.likelihood.joint_betas=20",
]


@dataclass
class How:
    """How one README command is run: ``append`` to its overrides (``make``: into ``ARGS``),
    ``fill`` its placeholders, or ``elsewhere`` (why it is not run here)."""

    append: list[str] = field(default_factory=list)
    fill: dict[str, str] = field(default_factory=dict)
    elsewhere: str = ""
    expect: str = ""  # a file (glob, under the folder) the command must leave
    env: dict[str, str] = field(default_factory=dict)  # e.g. SWEEP_DIR for scripts/sweep.sh


SWEEP = "logs/train/multiruns/sweep_mnist_objectives/readme"
COMMANDS: dict[str, How] = {
    "make install": How(elsewhere="the CI's first step (.ci/run)"),
    "make test": How(elsewhere="the CI's second step (.ci/run)"),
    "make train": How(append=SMALL, expect="logs/train/runs/*/*/results.json"),
    ".venv/bin/python -m mmvi.train experiment=paper_mnist_mp": How(append=SMALL),
    ".venv/bin/python -m mmvi.train -m objective=nll_pcd,minvi_cdpl,minvi_mp,hybrid data=mnist": How(
        append=SMALL, expect="logs/train/multiruns/mnist-mrbm/*/3/results.json"
    ),
    ".venv/bin/python -m mmvi.eval ckpt_path=logs/train/runs/<...>/checkpoints/last.ckpt": How(
        append=["evaluation.n_generation=0", *LIKELIHOOD],
        fill={"logs/train/runs/<...>/checkpoints/last.ckpt": "last_checkpoint"},
        expect="logs/eval/runs/*/*/results.json",
    ),
    "mkdir -p my_data": How(elsewhere="the own-data example: tests/test_readme_own_data.py runs its block"),
    ".venv/bin/python - <<'EOF'": How(elsewhere="the own-data example: tests/test_readme_own_data.py"),
    ".venv/bin/python -m mmvi.train -m data=arrays": How(elsewhere="the own-data example"),
    ".venv/bin/python -m mmvi.compare logs/my_data": How(elsewhere="the own-data example"),
    ".venv/bin/python -m mmvi.train data=idx_images": How(append=SMALL, fill={"<folder>": "mnist_folder"}),
    "make sweep-mnist": How(
        append=[*SMALL, "seed=0"], env={"SWEEP_DIR": SWEEP}, expect=f"{SWEEP}/report/index.html"
    ),
    "make sweep-alpha": How(append=[*SMALL, "seed=0"]),
    "make sweep-mask": How(append=[*SMALL, "seed=0"]),
    "make compare SWEEP=logs/train/multiruns/<name>/<time>": How(
        fill={"logs/train/multiruns/<name>/<time>": SWEEP}
    ),
    "make compare-watch": How(fill={"[SWEEP=...]": f"SWEEP={SWEEP}", "[EVERY=30]": "EVERY=1"}),
    ".venv/bin/python -m mmvi.compare <folder> [<folder> ...]": How(
        fill={"<folder> [<folder> ...] [--out DIR] [--wandb entity/project]": f"{SWEEP} --out logs/report_a"}
    ),
    ".venv/bin/python -m mmvi.compare --watch 30 <folder>": How(
        fill={"--watch 30 <folder>": f"--watch 1 {SWEEP}"}
    ),
    ".venv/bin/python -m mmvi.compare <folder> --baseline": How(fill={"<folder>": SWEEP}),
    ".venv/bin/python -m mmvi.compare <folder> --x flops": How(fill={"<folder>": SWEEP}),
    ".venv/bin/python -m mmvi.train -m experiment=theorem21": How(
        append=["trainer.max_epochs=1", "hydra.sweep.dir=logs/theorem21"],
        expect="logs/theorem21/theorem21.md",
    ),
    ".venv/bin/python -m mmvi.deep.pipeline experiment=wikipedia_deep objective=minvi_mp": How(append=DEEP),
    ".venv/bin/python -m mmvi.deep.pipeline experiment=mfeat_deep": How(append=DEEP),
    ".venv/bin/python -m mmvi.deep.pipeline experiment=flickr_offline": How(append=DEEP),
    ".venv/bin/python -m mmvi.deep.pipeline -m experiment=paper_flickr": How(
        elsewhere="needs the original MIR-Flickr feature release, which is not available offline "
        "(its loader is tested on generated shards: tests/test_mirflickr_features.py)"
    ),
    ".venv/bin/python -m mmvi.deep.pipeline experiment=wikipedia_deep model=mdbm": How(append=DEEP),
    ".venv/bin/python -m mmvi.deep.pipeline experiment=wikipedia_deep stop_after=top": How(
        append=DEEP, fill={"<new folder>": "logs/deep/stopped"}, expect="logs/deep/stopped/results.json"
    ),
    ".venv/bin/python -m mmvi.train trainer=ddp trainer.devices=2": How(append=SMALL),
    ".venv/bin/python -m mmvi.train trainer=ddp trainer=gpu": How(elsewhere="needs GPUs (make gpu-check)"),
    ".venv/bin/python -m mmvi.train -m hydra/launcher=joblib": How(append=SMALL),
    ".venv/bin/python -m mmvi.train -m hydra/launcher=slurm": How(
        elsewhere="the SLURM cluster tests (make test-cluster)"
    ),
    "make cluster-up": How(elsewhere="the SLURM cluster tests start the cluster with the same script"),
    "export SLURM_CONF=": How(elsewhere="the SLURM cluster tests (make test-cluster)"),
    ".venv/bin/python -m mmvi.compare logs/train/multiruns/mnist5k-mrbm/<time>": How(
        elsewhere="the SLURM cluster tests build the report of a SLURM sweep"
    ),
    "make cluster-down": How(elsewhere="the SLURM cluster tests stop the cluster with the same script"),
    "make test-cluster": How(elsewhere="the CI's step after make test (.ci/run)"),
    "make test-readme": How(elsewhere="the CI's last step (.ci/run): these tests"),
    "make gpu-check": How(expect=""),
    "make bench-train": How(elsewhere="a benchmark (make bench), not a test"),
    "make bench-eval": How(elsewhere="a benchmark (make bench), not a test"),
    "make bench-growth": How(elsewhere="a benchmark (make bench), not a test"),
}


def readme_commands() -> list[str]:
    """Every command line of the README's ``bash`` blocks (continuations joined, comments cut,
    the lines of a here-document left out)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        heredoc = None
        for line in block.replace("\\\n", " ").splitlines():
            if heredoc is not None:
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            text = line.split("  #")[0].strip()
            if not text or text.startswith("#"):
                continue
            out.append(" ".join(text.split()))
            if "<<'" in text:
                heredoc = text.split("<<'")[1].split("'")[0]
    return out


def how(command: str) -> tuple[str, How]:
    matches = [(k, h) for k, h in COMMANDS.items() if command.startswith(k)]
    longest = max((len(k) for k, _ in matches), default=0)
    found = [(k, h) for k, h in matches if len(k) == longest]
    assert len(found) == 1, f"README command with no (or no single) entry in COMMANDS: {command}"
    return found[0]


def test_every_readme_command_is_covered():
    commands = readme_commands()
    assert len(commands) >= 25, commands
    covered = {how(c)[0] for c in commands}
    assert covered == set(COMMANDS), (
        f"entries for commands the README no longer shows: {set(COMMANDS) - covered}"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shared_data) -> Path:
    """A folder laid out like the repository root for the commands (.venv, Makefile, scripts)."""
    root = tmp_path_factory.mktemp("readme")
    for name in (".venv", "Makefile", "scripts"):
        (root / name).symlink_to(REPO / name)
    return root


def filled(command: str, h: How, folder: Path, shared_data: Path) -> str:
    values = {
        "last_checkpoint": lambda: str(sorted(folder.glob("logs/train/runs/*/*/checkpoints/last.ckpt"))[0]),
        "mnist_folder": lambda: str(shared_data / "mnist"),
    }
    for placeholder, value in h.fill.items():
        assert placeholder in command, (placeholder, command)
        command = command.replace(placeholder, values[value]() if value in values else value)
    extra = " ".join(shlex.quote(x) for x in h.append)
    if not extra:
        return command
    if command.startswith("make "):
        # make pastes ARGS into its shell line: each override quoted inside (braces, commas)
        if " ARGS=" in command:  # the README's own ARGS, then ours (the last value of a key wins)
            head, args = command.split(" ARGS=", 1)
            return f"{head} ARGS={shlex.quote(' '.join(shlex.quote(x) for x in [*shlex.split(args), *h.append]))}"
        return f"{command} ARGS={shlex.quote(extra)}"
    return f"{command} {extra}"


def runnable(command: str) -> bool:
    """A command run here (one with no entry is reported by the coverage test, not at collection)."""
    try:
        return not how(command)[1].elsewhere
    except AssertionError:
        return False


RUN = [c for c in readme_commands() if runnable(c)]


@pytest.mark.readme
@pytest.mark.parametrize("command", RUN, ids=[c[:60] for c in RUN])
def test_readme_command_runs_as_written(command, folder, shared_data):
    _, h = how(command)
    line = filled(command, h, folder, shared_data)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_SILENT": "true",
        "MMVI_DATA_DIR": str(shared_data),
        "MMVI_SHARED_DATA": str(shared_data),
        **h.env,
    }
    proc = subprocess.run(
        ["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if h.expect:
        made = sorted(folder.glob(h.expect))
        assert made, f"{line}: nothing at {h.expect}"
        if made[-1].name == "results.json":
            assert json.loads(made[-1].read_text())["status"] == "completed"
