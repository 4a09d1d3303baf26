"""The smashed-data noise defense: zero strength is the identity, clipping is per sample, noise is
seeded per device and has the configured scale, and bad parameters are one-line errors."""

from __future__ import annotations

import pytest
import torch

from conftest import small_overrides
from hasfl_sec.api import prepare
from hasfl_sec.config import load_config
from hasfl_sec.defenses import DEFENSES
from hasfl_sec.defenses.noise import SmashedNoise, clip_per_sample, gaussian_epsilon
from hasfl_sec.errors import ConfigError


def _train(defenses, rounds=4):
    setup = prepare(load_config(overrides=small_overrides(**{"train.rounds": rounds})))
    trainer = setup.trainer(defenses)
    for _ in range(rounds):
        trainer.step()
    return trainer


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
