"""Settings added after runs were first recorded leave the identity of earlier runs unchanged."""

from __future__ import annotations

from mmvi.fingerprint import differences, fingerprint

EARLIER = {
    "seed": 0,
    "nonfinite": {"policy": "backoff", "backoff": 0.95, "max_consecutive": 50},
    "evaluation": {"inference": "native", "mf_steps": 100},
}


def with_new_settings(policy: str, checkpoint: str) -> dict:
    return {
        **EARLIER,
        "nonfinite": {**EARLIER["nonfinite"], "divergence": {"policy": policy, "factor": 2.0, "warmup": 1}},
        "evaluation": {
            **EARLIER["evaluation"],
            "checkpoint": checkpoint,
            "checkpoint_monitor": "val/cond_ce/sum",
        },
    }


def test_new_settings_at_their_neutral_values_are_no_difference():
    old = fingerprint(EARLIER)
    for policy in ("warn", "off"):
        new = fingerprint(with_new_settings(policy, "last"))
        assert new["digest"] == old["digest"] and differences(old, new) == []


def test_new_settings_that_change_a_result_are_a_difference():
    old = fingerprint(EARLIER)
    keys = {k for k, _, _ in differences(old, fingerprint(with_new_settings("stop", "last")))}
    assert keys == {
        "nonfinite.divergence.policy",
        "nonfinite.divergence.factor",
        "nonfinite.divergence.warmup",
    }
    keys = {k for k, _, _ in differences(old, fingerprint(with_new_settings("warn", "best")))}
    assert keys == {"evaluation.checkpoint", "evaluation.checkpoint_monitor"}
