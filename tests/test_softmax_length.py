"""Replicated softmax trains stably at the default settings whatever the document length.

Real word counts: the licence texts every Debian system ships (/usr/share/common-licenses, package
base-files), cut into documents of 400 words (stop words removed), the first 200 words one
replicated-softmax modality and the last 200 the other, over the 300 most frequent words
(scikit-learn's CountVectorizer). Data, model, objective and optimiser settings are the defaults
of ``conf/train.yaml`` (MinVI-MP, paper SGD) with ``data=arrays`` and 16 hidden units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import quiet_trainer
from mmvi.data.arrays import ArrayFiles
from mmvi.lit.module import MultimodalLitModule
from mmvi.models.mrbm import MultimodalRBM

CONF = Path(__file__).resolve().parents[1] / "conf"
LICENSES = Path("/usr/share/common-licenses")
WORDS = 400


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    from sklearn.feature_extraction.text import CountVectorizer

    if not LICENSES.is_dir():
        pytest.fail(f"{LICENSES} not found: the test needs a Debian system (package base-files)")
    analyse = CountVectorizer(stop_words="english").build_analyzer()
    docs = []
    for path in sorted(p for p in LICENSES.iterdir() if p.is_file()):
        words = analyse(path.read_text(errors="replace"))
        docs += [words[i : i + WORDS] for i in range(0, len(words) - WORDS + 1, WORDS)]
    vec = CountVectorizer(max_features=300, analyzer=str.split).fit(" ".join(d) for d in docs)
    out = tmp_path_factory.mktemp("licences")
    for name, part in (("head", slice(0, WORDS // 2)), ("tail", slice(WORDS // 2, WORDS))):
        counts = vec.transform(" ".join(d[part]) for d in docs).toarray().astype(np.float32)
        np.save(out / f"{name}.npy", counts)
    return out


def test_default_training_on_long_documents_keeps_the_hidden_units_informative(documents, tmp_path):
    """Before the per-word gradient scale, the D-scaled hidden bias grew ~D times too fast and every
    hidden probability saturated (all in [0, 0.01] ∪ [0.99, 1]) within 3 epochs."""
    dm = ArrayFiles(
        root=str(documents),
        files={"head": "head.npy", "tail": "tail.npy"},
        units={"head": "softmax", "tail": "softmax"},
        batch_size=20,
    )
    dm.setup()
    lengths = dm.splits["train"].modalities["head"].sum(1)
    assert len(dm.splits["train"]) >= 30 and float(lengths.mean()) > 100  # long documents
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train"), resolve=False)
    model = {"_target_": "mmvi.models.MultimodalRBM", "modalities": dm.modality_specs(), "n_hidden": 16}
    lit = MultimodalLitModule(model=model, objective=cfg["objective"], optim=cfg["optim"])
    lit.model.init_visible_bias_from_data(dm.modality_means())
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(lit, datamodule=dm)
    with torch.no_grad():
        h = lit.model.hidden_probs(dm.splits["train"].modalities)
    saturated = float(((h < 0.01) | (h > 0.99)).float().mean())
    assert saturated < 0.5, saturated
    assert float(h.std(0).mean()) > 1e-3  # the representation differs between documents


def test_length_gradient_scale_divides_by_the_mean_length():
    """W, b of each replicated-softmax modality and c: divided by the batch's mean length D̄; the
    Bernoulli modality's gradients are unchanged."""
    torch.manual_seed(0)
    model = MultimodalRBM(
        {"img": {"size": 3, "units": "bernoulli"}, "txt": {"size": 5, "units": "softmax"}}, n_hidden=4
    ).double()
    v = {
        "img": torch.bernoulli(torch.full((3, 3), 0.5)).double(),
        "txt": torch.tensor([[1.0, 0, 2, 0, 0]] * 3, dtype=torch.float64),
    }
    v["txt"][1] = torch.tensor([0.0, 10, 0, 5, 0]).double()
    model.free_energy(v).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.scale_length_gradients(v)
    mean_length = (3 + 15 + 3) / 3
    for n, p in model.named_parameters():
        factor = 1.0 if n in ("W.img", "b.img") else 1.0 / mean_length
        torch.testing.assert_close(p.grad, before[n] * factor, rtol=1e-12, atol=0)
