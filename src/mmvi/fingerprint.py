"""Run identity: the settings that determine a run's result, and their digest.

A run folder holds one configuration. Its *fingerprint* is the part of the resolved config that
decides the numbers the run produces (data, model, objective, optimiser, seed, evaluation, the
schedule lengths, the deep pipeline's stages) plus a digest of the data actually loaded; settings
that only change resources or logging (devices, threads, loggers, callbacks, progress bars,
paths, batch sizes used only for evaluation) are left out, so moving a folder or adding a device
does not change it.

``results.json`` and every checkpoint record ``{"digest", "settings", "data_digest"}``; resuming
compares the recorded settings with the requested ones (:func:`differences`; the folder checks are in
:mod:`mmvi.run_folder`) and the comparison report groups runs by them (:func:`result_settings`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch

# top-level config keys that define a result
RESULT_KEYS = ("data", "model", "objective", "optim", "seed", "evaluation", "nonfinite", "trainer", "stages")
# keys of the trainer node that define a result (the rest is resources: devices, accelerator, logging)
TRAINER_KEYS = (
    "max_epochs",
    "precision",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "limit_train_batches",
    "max_steps",
)
# keys left out wherever they appear: resources, paths, evaluation chunk sizes, logging
IGNORED_LEAVES = (
    "eval_batch_size",
    "num_workers",
    "on_device",
    "data_dir",
    "cache_dir",
    "progress_bar",
    "chunk",
)
# (dotted) keys left out: evaluation chunk sizes do not change any measure
IGNORED_PATHS = ("evaluation.batch_size", "evaluation.likelihood.batch_size", "evaluation._target_")
# a trainer.max_epochs that is raised continues a run; any other change of these keys is a new run
CONTINUABLE = ("trainer.max_epochs",)


def _strip(node: Any, path: str) -> Any:
    if isinstance(node, Mapping):
        out = {}
        for k, v in node.items():
            key = f"{path}.{k}" if path else str(k)
            if str(k) in IGNORED_LEAVES or key in IGNORED_PATHS or is_path_setting(str(k), v):
                continue
            out[str(k)] = _strip(v, key)
        return out
    if isinstance(node, list | tuple):
        return [_strip(v, path) for v in node]
    return node


PATH_SUFFIXES = ("_dir", "_path", "_file", "dir", "path")


def is_path_setting(key: str, value: Any) -> bool:
    """True for a setting that names files or folders (the data they point to is fingerprinted by
    content instead, and a report never groups runs by it): a key ending in ``_dir``, ``_path``,
    ``_file``, ``dir`` or ``path``, the key ``files``, or a value that starts like a path."""
    leaf = str(key).rsplit(".", 1)[-1]
    if leaf.endswith(PATH_SUFFIXES) or leaf == "files":
        return True
    return isinstance(value, str) and value.startswith(("/", "./", "../", "~"))


def result_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The result-defining part of a resolved config (nested dict, JSON-safe).

    Args:
        config: a resolved config as a plain dict (``results.json["config"]``, or
            ``OmegaConf.to_container(cfg, resolve=True)``).
    Returns:
        ``{key: value}`` for the keys of :data:`RESULT_KEYS` present in ``config``; the trainer
        node reduced to :data:`TRAINER_KEYS`; resource, path and logging keys removed.
    """
    out: dict[str, Any] = {}
    for key in RESULT_KEYS:
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if key == "trainer" and isinstance(value, Mapping):
            value = {k: value[k] for k in TRAINER_KEYS if k in value}
        out[key] = _strip(value, key)
    _drop_neutral(out)
    return json.loads(json.dumps(out, sort_keys=True, default=str))


#: settings added after runs were first recorded, and the values at which they leave a result as it
#: was (the divergence detector only recording; the last epoch evaluated): left out of the settings
#: at those values, so an earlier folder resumes, and groups with new runs, under the same settings
NEUTRAL_SETTINGS: dict[str, tuple[str, tuple, tuple[str, ...]]] = {
    # node: (key that decides, its neutral values, keys dropped with it)
    "nonfinite": ("divergence.policy", ("warn", "off"), ("divergence",)),
    "evaluation": ("checkpoint", ("last",), ("checkpoint", "checkpoint_monitor")),
    "optim": ("gaussian_lr_scale", (1.0, 1), ("gaussian_lr_scale",)),
    # off-by-default analyses: "<node>/<part>" keys the same node again
    "evaluation/inference_gap": ("inference_gap.enabled", (False,), ("inference_gap",)),
    "evaluation/observed": ("observed.enabled", (False,), ("observed",)),
}


def _drop_neutral(settings: dict[str, Any]) -> None:
    for node, (key, neutral, dropped) in NEUTRAL_SETTINGS.items():
        value = settings.get(node.split("/")[0])
        if not isinstance(value, dict):
            continue
        decider = flatten(value).get(key, neutral[0])
        if decider in neutral:
            for name in dropped:
                value.pop(name, None)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (first 16 hex digits)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 (16 hex digits) of named tensors' shapes, dtypes and bytes, in the order given."""
    h = hashlib.sha256()
    for name, x in tensors:
        x = x.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(x.shape)}:{x.dtype};".encode())
        h.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()[:16]


def data_digest(splits: Mapping[str, Any]) -> str:
    """Digest of loaded data: every split's modality tensors and labels (``{split: Split}``)."""
    items = []
    for name in sorted(splits):
        split = splits[name]
        items += [(f"{name}/{m}", split.modalities[m]) for m in sorted(split.modalities)]
        items.append((f"{name}/labels", split.labels))
    return tensor_digest(items)


def fingerprint(config: Mapping[str, Any], data_digest: str | None = None) -> dict[str, Any]:
    """``{"digest", "settings", "data_digest"}`` of a resolved config (and the loaded data)."""
    return fingerprint_of(result_settings(config), data_digest)


def fingerprint_of(settings: Mapping[str, Any], data_digest: str | None = None) -> dict[str, Any]:
    """``{"digest", "settings", "data_digest"}``: the digest covers the settings and the data digest."""
    return {"digest": digest([settings, data_digest]), "settings": dict(settings), "data_digest": data_digest}


def differences(
    old: Mapping[str, Any], new: Mapping[str, Any], allow_continue: bool = True
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every result-defining setting that differs.

    ``old``/``new`` are fingerprints (or bare settings). With ``allow_continue`` a raised
    ``trainer.max_epochs`` is not a difference (the run continues to the longer schedule).
    A differing data digest is reported as the key ``data (content)``.
    """
    a = flatten(old.get("settings", old))
    b = flatten(new.get("settings", new))
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key, "<unset>"), b.get(key, "<unset>")
        if va == vb:
            continue
        if allow_continue and key in CONTINUABLE and _raised(va, vb):
            continue
        out.append((key, va, vb))
    da, db = old.get("data_digest"), new.get("data_digest")
    if "settings" in old and "settings" in new and da and db and da != db:
        out.append(("data (content)", da, db))
    return out


def _raised(old: Any, new: Any) -> bool:
    if not isinstance(old, int | float) or not isinstance(new, int | float):
        return False
    return new == -1 or (old != -1 and new >= old)


def describe(diffs: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    """``key: old → new; …`` for a one-line message."""
    parts = [f"{k}: {json.dumps(a, default=str)} → {json.dumps(b, default=str)}" for k, a, b in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"… and {len(diffs) - limit} more")
    return "; ".join(parts)
