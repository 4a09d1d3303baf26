"""The smashed-data noise defense: zero strength is the identity, clipping is per sample, noise is
seeded per device (one sigma or one per device) and has the configured scale, the epsilon over
training counts the sampler's exact worst-case releases, and bad parameters are one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import small_overrides, train_small

from hasfl_sec.config import load_config
from hasfl_sec.defenses.noise import SmashedNoise, clip_per_sample, gaussian_epsilon
from hasfl_sec.defenses.registry import DEFENSES
from hasfl_sec.errors import ConfigError
from hasfl_sec.runs.setup import prepare

_train = train_small


def test_zero_strength_is_bit_identical_to_no_defense():
    plain = _train([])
    zero = _train([SmashedNoise()])
    for a, b in zip(plain.global_model().parameters(), zero.global_model().parameters()):
        assert torch.equal(a, b)


def test_noise_changes_training_and_is_reproducible():
    params = SmashedNoise.Params(sigma=0.5, clip=5.0, seed=3)
    a = _train([SmashedNoise(params)], rounds=2)
    b = _train([SmashedNoise(params)], rounds=2)
    plain = _train([], rounds=2)
    pa, pb, pp = (list(t.global_model().parameters())[0] for t in (a, b, plain))
    assert torch.equal(pa, pb) and not torch.equal(pa, pp)


def test_clipping_is_per_sample():
    a = torch.stack([torch.full((2, 3), 10.0), torch.full((2, 3), 0.1)])
    out = clip_per_sample(a, 1.0)
    norms = out.flatten(1).norm(dim=1)
    assert norms[0] == pytest.approx(1.0) and torch.equal(out[1], a[1])  # only the large sample shrinks


@pytest.mark.parametrize("mechanism, std", [("gaussian", 0.7), ("laplace", 0.7 * 2 ** 0.5)])
def test_noise_scale_is_in_activation_units(mechanism, std):
    d = SmashedNoise(SmashedNoise.Params(sigma=0.7, mechanism=mechanism))
    x = torch.zeros(200, 50)
    noise = d.transform_smashed(x, round=1, device=0)
    assert float(noise.std()) == pytest.approx(std, rel=0.05)
    other = d.transform_smashed(x, round=1, device=1)
    assert not torch.equal(noise, other)  # each device has its own stream


def test_resume_continues_the_noise_stream():
    d = SmashedNoise(SmashedNoise.Params(sigma=1.0))
    d.transform_smashed(torch.zeros(4), round=1, device=0)
    state = d.state_dict()
    expected = d.transform_smashed(torch.zeros(4), round=2, device=0)
    restored = SmashedNoise(SmashedNoise.Params(sigma=1.0))
    restored.load_state_dict(state)
    assert torch.equal(restored.transform_smashed(torch.zeros(4), round=2, device=0), expected)


@pytest.mark.parametrize("kw, field", [({"sigma": -1.0}, "sigma"), ({"clip": 0.0}, "clip"),
                                       ({"mechanism": "uniform"}, "mechanism")])
def test_bad_parameters_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"defense.noise.{field}"):
        SmashedNoise(SmashedNoise.Params(**kw))


def test_registered_and_reports_its_privacy():
    assert DEFENSES.get("noise") is SmashedNoise
    report = SmashedNoise(SmashedNoise.Params(sigma=2.0, clip=1.0)).report()
    assert report["noise_multiplier"] == 1.0
    # Opacus' RDP accountant for one Gaussian release at z = 1, delta = 1e-5 (golden value)
    assert report["epsilon_per_release"] == pytest.approx(4.7285, abs=1e-3)


def test_epsilon_grows_with_releases_and_falls_with_noise():
    assert gaussian_epsilon(1.0, 10, 1e-5) == pytest.approx(19.0536, abs=1e-3)
    assert gaussian_epsilon(2.0, 10, 1e-5) < gaussian_epsilon(1.0, 10, 1e-5) < gaussian_epsilon(1.0, 20, 1e-5)
    with pytest.raises(ValueError):
        gaussian_epsilon(0.0, 1, 1e-5)


# per-device noise and accounting over training ---------------------------------------------------
class _SentIndices:
    """Observer counting how often each training sample crossed the cut."""

    def __init__(self):
        self.counts = {}

    def on_exchange(self, exchange, truth):
        for j in truth.index.tolist():
            key = (exchange.device, j)
            self.counts[key] = self.counts.get(key, 0) + 1


def test_per_device_sigma_list():
    d = SmashedNoise(SmashedNoise.Params(sigma=[0.0, 2.0]))
    x = torch.zeros(100, 40)
    assert torch.equal(d.transform_smashed(x, round=1, device=0), x)
    assert float(d.transform_smashed(x, round=1, device=1).std()) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ConfigError, match="defense.noise.sigma.*one sigma per device"):
        d.transform_smashed(x, round=1, device=2)
    with pytest.raises(ConfigError, match="defense.noise.sigma.*4 numbers"):
        _train([d], rounds=1)  # 4 devices, 2 sigmas: refused in prepare
    trained = _train([SmashedNoise(SmashedNoise.Params(sigma=[0.1, 0.2, 0.3, 0.4], clip=5.0))], rounds=2)
    report = trained.defense.report()
    assert report["noise.noise_multiplier.device3"] == pytest.approx(0.4 / 10.0)
    assert "noise.noise_multiplier" not in report


def test_releases_over_training_are_the_samplers_exact_worst_case():
    rounds = 8
    setup = prepare(load_config(overrides=small_overrides(**{"train.rounds": rounds, "plan.batch_size": 64})))
    d = SmashedNoise(SmashedNoise.Params(sigma=2.0, clip=1.0))
    trainer, seen = setup.trainer([d]), _SentIndices()
    trainer.add_observer(seen)
    projected = None
    for t in range(rounds):
        trainer.step()
        if t == 0:
            projected = d.report()
    report = d.report()
    assert projected == report  # projected from round 1 = counted at the end
    for i, n in enumerate(trainer._part_sizes):
        releases = math.ceil(rounds * 64 / n)
        assert report[f"releases.device{i}"] == releases > 1
        assert max(c for (dev, _), c in seen.counts.items() if dev == i) == releases
        assert report[f"epsilon.device{i}"] == pytest.approx(gaussian_epsilon(1.0, releases, 1e-5))
    assert report["epsilon"] == max(report[f"epsilon.device{i}"] for i in range(trainer.n))
    assert report["epsilon"] > report["epsilon_per_release"]


def test_laplace_is_pure_dp_under_an_l1_clip_only():
    l1 = SmashedNoise(SmashedNoise.Params(sigma=4.0, clip=1.0, norm="l1", mechanism="laplace"))
    trainer = _train([l1], rounds=3)
    report = l1.report()
    assert report["epsilon_per_release"] == 0.5  # 2 * clip / b
    for i, n in enumerate(trainer._part_sizes):
        b = trainer.batch_sizes[i]
        assert report[f"epsilon.device{i}"] == math.ceil(3 * b / n) * 0.5
    l2 = SmashedNoise(SmashedNoise.Params(sigma=4.0, clip=1.0, mechanism="laplace"))
    _train([l2], rounds=1)
    assert not any(k.startswith("epsilon") for k in l2.report())


def test_l1_clip_is_per_sample():
    a = torch.stack([torch.full((2, 3), 1.0), torch.full((2, 3), 0.01)])
    out = clip_per_sample(a, 2.0, "l1")
    assert float(out[0].abs().sum()) == pytest.approx(2.0) and torch.equal(out[1], a[1])


def test_under_poisson_sampling_only_expected_releases_are_reported():
    from hasfl_sec.defenses.dpsgd import DPSGD

    noise = SmashedNoise(SmashedNoise.Params(sigma=1.0, clip=1.0))
    trainer = _train([DPSGD(DPSGD.Params(noise_multiplier=1.0)), noise], rounds=2)
    report = noise.report()
    for i, rate in enumerate(trainer.sample_rates):
        assert report[f"releases.device{i}"] == pytest.approx(2 * rate)
    assert "epsilon" not in report and "epsilon_per_release" in report


def test_bad_norm_names_the_field():
    with pytest.raises(ConfigError, match="defense.noise.norm"):
        SmashedNoise(SmashedNoise.Params(norm="linf"))
    with pytest.raises(ConfigError, match="defense.noise.sigma"):
        SmashedNoise(SmashedNoise.Params(sigma=[1.0, -1.0]))
