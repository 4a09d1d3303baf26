"""The devices' detectors: SplitGuard (defenses/splitguard.py) and SplitOut (defenses/splitout.py).

The score separates label-dependent from label-blind replies; fake batches shift every label they
touch; on a seeded run neither detector raises an alarm against an honest server, and each fires on
the hijacked device (SplitOut within its first window when the attacker returns its gradient
unscaled, as in the paper).
"""

from __future__ import annotations

import pytest
import torch
from conftest import small_overrides

from hasfl_sec.audit.active import HijackSettings, run_hijack
from hasfl_sec.config import load_config
from hasfl_sec.defenses.splitguard import SplitGuard, _Set, splitguard_score
from hasfl_sec.errors import ConfigError


def _set(vectors) -> _Set:
    s = _Set()
    for v in vectors:
        s.add(v)
    return s


def test_the_score_is_high_when_fake_replies_differ_and_neutral_when_they_do_not():
    gen = torch.Generator().manual_seed(0)
    regular = [torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(3, generator=gen) for _ in range(20)]
    r1, r2 = _set(regular[::2]), _set(regular[1::2])
    unlike = _set([torch.tensor([0.0, 3.0, 0.0]) + 0.05 * torch.randn(3, generator=gen) for _ in range(5)])
    alike = _set([torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(3, generator=gen) for _ in range(5)])
    assert splitguard_score(unlike, r1, r2, 5.0, 2.0) > 0.95
    assert splitguard_score(alike, r1, r2, 5.0, 2.0) < 0.5


def test_fake_batches_shift_the_labels_they_touch_after_the_warm_up():
    guard = SplitGuard(SplitGuard.Params(p_fake=0.5, warmup=10, fake_fraction=0.5), num_classes=10, devices=[0])
    labels = torch.arange(10).repeat(4)
    fakes = [guard.fake_labels(t, 0, labels) for t in range(1, 201)]
    assert all(f is None for f in fakes[:10])
    sent = [f for f in fakes[10:] if f is not None]
    assert 60 < len(sent) < 130  # p_fake 0.5 of 190 rounds
    for f in sent:
        assert (f[:20] != labels[:20]).all() and torch.equal(f[20:], labels[20:])
        assert len(set(((f[:20] - labels[:20]) % 10).tolist())) == 1  # one offset per batch
    again = SplitGuard(SplitGuard.Params(p_fake=0.5, warmup=10, fake_fraction=0.5), num_classes=10, devices=[0])
    assert all((a is None and b is None) or torch.equal(a, b)
               for a, b in zip(fakes, [again.fake_labels(t, 0, labels) for t in range(1, 201)]))
    with pytest.raises(ConfigError, match="splitguard.p_fake"):
        SplitGuard(SplitGuard.Params(p_fake=1.5), num_classes=10, devices=[0])


def _run(attack: str | None, **params):
    """The benchmark's setting (benchmarks/bench_fsha.py --part detectors): 4 devices at cuts 1-4,
    150 rounds, both detectors at their defaults on every device."""
    overrides = small_overrides(**{"plan.cut": "[1, 2, 3, 4]", "plan.batch_size": "[32, 32, 32, 32]", "seed": 0,
                                   "train.rounds": 150, "train.agg_interval": 5, "train.eval_every": 150,
                                   "train.checkpoint_every": 0})
    settings = HijackSettings(attack=attack, params=params, detectors=["splitguard", "splitout"], measure_every=150)
    result = run_hijack(load_config(overrides=overrides), settings)
    return {(d["detector"], d["device"]): d for d in result.detections}


@pytest.mark.slow
def test_no_alarm_against_an_honest_server_on_a_seeded_run():
    detections = _run(None)
    assert len(detections) == 8
    assert all(d["detected_round"] is None for d in detections.values()), detections
    assert detections[("splitout", 0)]["checks"] > 120 and detections[("splitguard", 0)]["checks"] >= 5


@pytest.mark.slow
def test_both_detectors_fire_on_the_hijacked_device():
    detections = _run("fsha", devices=[0], reply_scale=1.0)
    assert detections[("splitout", 0)]["detected_round"] <= 15  # the first full window of 10 replies
    assert all(detections[(name, d)]["detected_round"] is None for name in ("splitguard", "splitout")
               for d in (1, 2, 3))
    assert detections[("splitguard", 0)]["detected_round"] <= 150
    hit = detections[("splitout", 0)]
    assert hit["hijacked"] and hit["mse_at_detection"] is not None  # what leaked before it was caught


def test_splitout_fits_on_the_devices_own_loss_term_and_its_own_random_stream():
    """With NoPeek the device's honest gradients carry its distance-correlation term, so SplitOut's
    outlier factor is fitted on those, not on the task's gradient alone; the fit draws nothing from
    the run's random stream."""
    from hasfl_sec.audit.detection import build_detectors
    from hasfl_sec.runs.setup import prepare

    def examples(defense: list[str]):
        overrides = small_overrides(**{"seed": 0, "train.rounds": 2, "defense.use": str(defense).replace("'", "")})
        setup = prepare(load_config(overrides=overrides))
        before = torch.random.get_rng_state()
        (detector,) = build_detectors(["splitout"], {}, setup.trainer(), num_classes=setup.dataset.num_classes,
                                      parts=setup.parts, seed=0)
        assert torch.equal(before, torch.random.get_rng_state())
        return [detector.devices[i].examples for i in range(4)]

    plain, nopeek = examples([]), examples(["nopeek"])
    for a, b in zip(plain, nopeek):
        assert a.shape == b.shape and not (a == b).all()
