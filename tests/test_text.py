"""Text in the toolkit: the bundled corpora, gpt-char split at every cut, its training, the attacks
on its hidden states and the text leakage metrics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from hasfl_sec.attacks.base import make_context, observe
from hasfl_sec.attacks.registry import ATTACKS
from hasfl_sec.cli import cli
from hasfl_sec.data import load_dataset, partition
from hasfl_sec.data.text import decode, secret_records
from hasfl_sec.metrics.text import lcs_length, rouge_l, secret_recovery, secret_spans, text_report, token_accuracy
from hasfl_sec.models import build_model
from hasfl_sec.models.central import train_central
from hasfl_sec.sfl.protocol import Exchange

TEXT_ATTACKS = [name for name in ATTACKS.names() if getattr(ATTACKS.get(name), "modality", "image") == "text"]


def _gpt(vocab: int, context: int, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model("gpt-char", in_channels=1, num_classes=vocab, image_size=context, **kw)


@pytest.fixture(scope="module")
def trained():
    """gpt-char (width 64) trained centrally for one epoch on pydoc-secrets sequences of 32."""
    data = load_dataset("pydoc-secrets", context=32)
    model = _gpt(data.num_classes, 32, width=64)
    accuracy = train_central(model, data, epochs=1, seed=0, device="cpu")
    return data, model.eval(), accuracy


# ------------------------------------------------------------------------------------ data


def test_corpora_are_next_character_sequences_with_marked_secrets():
    data = load_dataset("secrets", context=48, seed=3)
    assert data.x_train.shape[1] == 48 and data.modality == "text" and data.input_shape == (48,)
    assert torch.equal(data.x_train[:, 1:], data.y_train[:, :-1])  # y is x shifted by one
    text = decode(data.x_train[0], data.vocab)
    secret = "".join(c for c, m in zip(text, data.secret_train[0].tolist()) if m)
    assert secret and all(ch.isdigit() or ch.isalpha() or ch in " -" for ch in secret)
    again = load_dataset("secrets", context=48, seed=3)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.secret_train, data.secret_train)
    assert not torch.equal(load_dataset("secrets", context=48, seed=4).x_train[:10], data.x_train[:10])
    pydoc = load_dataset("pydoc")
    assert not pydoc.secret_train.any() and int(pydoc.strata.max()) == 78  # 79 topics
    parts = partition(pydoc.strata, 10, scheme="dirichlet", alpha=0.5, seed=0)
    assert sum(len(p) for p in parts) == len(pydoc.y_train)


def test_secret_records_mark_exactly_their_secrets():
    for text, spans, template in secret_records(50, seed=1):
        assert 0 <= template < 4 and 2 <= len(spans) <= 3
        for a, b in spans:
            value = text[a:b]
            assert value == value.strip() and value and "{" not in value


def test_a_text_model_on_images_and_the_reverse_are_refused(tmp_path):
    for args in (["--model", "gpt-char"], ["--dataset", "pydoc"], ["--model", "vit-tiny", "--dataset", "secrets"]):
        result = CliRunner().invoke(cli, ["train", *args, "--out", str(tmp_path / "run")])
        assert result.exit_code == 2 and "model.name" in result.output, result.output
        assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------ model


def test_split_equivalence_forward_and_backward_at_every_cut():
    model = _gpt(30, 16, dropout=0.1).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 30, (3, 16), generator=gen)
    y = torch.randint(0, 30, (3, 16), generator=gen)
    params = list(model.parameters())
    torch.manual_seed(5)
    full = model(x)
    assert full.shape == (3, 30, 16)  # classes in dimension 1: cross_entropy reads [B, V, T] against [B, T]
    reference = torch.autograd.grad(nn.functional.cross_entropy(full, y), params)
    for cut in model.legal_cuts:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        smashed = model.client_part(cut)(x)
        assert smashed.shape == (3, 16, 64 * 2)
        s = smashed.detach().requires_grad_()
        out = model.server_part(cut)(s)
        torch.testing.assert_close(out, full, atol=1e-6, rtol=1e-6)
        nn.functional.cross_entropy(out, y).backward()
        smashed.backward(s.grad)
        for (name, p), g in zip(model.named_parameters(), reference):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6, msg=f"cut {cut}: {name}")


def test_causal_hidden_states_do_not_see_the_future():
    model = _gpt(30, 16).eval()
    x = torch.randint(0, 30, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 30
    for cut in model.legal_cuts:
        a, b = model.client_part(cut)(x), model.client_part(cut)(y)
        torch.testing.assert_close(a[:, :10], b[:, :10])
        assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gpt_char_learns_below_the_unigram_entropy(trained):
    """Held-out loss per character under the corpus' unigram entropy: the model uses context."""
    data, model, accuracy = trained
    counts = np.bincount(data.y_train.flatten().numpy(), minlength=data.num_classes).astype(float)
    prob = counts[counts > 0] / counts.sum()
    unigram = float(-(prob * np.log(prob)).sum())
    with torch.no_grad():
        held_out = float(nn.functional.cross_entropy(model(data.x_test), data.y_test))
    assert held_out < unigram - 0.3, (held_out, unigram)
    assert accuracy > 0.25


def test_split_training_runs_on_gpt_char(tmp_path):
    result = CliRunner().invoke(cli, ["-q", "train", "--model", "gpt-char", "--dataset", "secrets", "--devices", "4",
                                      "--out", str(tmp_path / "run"), "--set", "train.rounds=4",
                                      "--set", "model.width=32", "--set", "train.eval_every=2"])
    assert result.exit_code == 0, result.output
    rounds = (tmp_path / "run" / "rounds.csv").read_text().splitlines()
    assert len(rounds) == 5 and "nan" not in rounds[-1]


# ------------------------------------------------------------------------------------ attacks


def _attack(name: str, params: dict, model: nn.Module, cut: int, x: torch.Tensor, data):
    client = model.client_part(cut)
    with torch.no_grad():
        hidden = client(x)
    attack = ATTACKS.get(name).from_dict(params)
    fresh = lambda: copy.deepcopy(_gpt(data.num_classes, data.context, width=64).client_part(cut))  # noqa: E731
    ctx = make_context(attack.threat_model, client=client, fresh_client=fresh, input_shape=data.input_shape,
                       num_classes=data.num_classes, cut=cut, auxiliary=data.x_train[:256])
    assert attack.applies(ctx) is None
    exchange = Exchange(round=1, device=0, step=0, cut=cut, smashed=hidden, labels=None, grad=None)
    return attack.reconstruct(observe([exchange], [], attack.threat_model), ctx).inputs


def _with_secrets(data, n: int = 8):
    rows = torch.nonzero(data.secret_test.any(1)).flatten()[:n]
    return data.x_test[rows], data.secret_test[rows]


FAST = {"text-inversion": {"steps": 30}, "text-inverter": {"steps": 20}, "text-unsplit": {"rounds": 1}}


@pytest.mark.parametrize("name", [n for n in TEXT_ATTACKS if ATTACKS.get(n).unit != "period"])
def test_every_text_attack_dry_runs_on_the_gpt(name, trained):
    """Attacks on one round's hidden states; the period attack (``text-gradient-inversion``) needs a
    recorded period and is run in tests/test_text_gradient_inversion.py."""
    data, model, _ = trained
    x, _ = _with_secrets(data, 4)
    tokens = _attack(name, FAST[name], model, 3, x, data)
    assert tokens.shape == x.shape and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < data.num_classes


def test_image_attacks_decline_text_and_text_attacks_decline_images(trained):
    data, model, _ = trained
    client = model.client_part(1)
    for name in ATTACKS.names():
        attack = ATTACKS.get(name)()
        text = attack.modality == "text"
        ctx = make_context(attack.threat_model, client=client, fresh_client=lambda: client,
                           input_shape=data.input_shape if not text else (1, 8, 8), num_classes=data.num_classes,
                           cut=1, auxiliary=data.x_train[:300], sybil_grad=lambda *a, **k: None)
        assert attack.applies(ctx) is not None, name


def test_white_box_inversion_recovers_the_planted_secrets(trained):
    data, model, _ = trained
    x, mask = _with_secrets(data)
    first = text_report(_attack("text-inversion", {"steps": 100}, model, 1, x, data), x, mask)
    assert first["token_accuracy"].mean() > 0.99 and first["secret_recovery"].mean() > 0.9
    second = text_report(_attack("text-inversion", {"steps": 300}, model, 2, x, data), x, mask)
    assert second["secret_token_accuracy"].mean() > 0.8, second


def test_leakage_falls_with_depth_on_the_trained_gpt(trained):
    """White-box inversion: exact after the embedding, measurably worse after four blocks."""
    data, model, _ = trained
    x, _ = _with_secrets(data)
    acc = {cut: token_accuracy(_attack("text-inversion", {"steps": 300}, model, cut, x, data), x).mean()
           for cut in (1, 5)}
    assert acc[1] > 0.99 and acc[5] < acc[1] - 0.05, acc


# ------------------------------------------------------------------------------------ metrics


def _ids(text: str) -> np.ndarray:
    return np.array([ord(c) for c in text])


def test_rouge_l_against_hand_computed_values():
    # LCS("ABCBDAB", "BDCABA") = 4 (BCBA): P = 4/7, R = 4/6, F1 = 2PR/(P+R) = 8/13
    assert lcs_length(_ids("ABCBDAB"), _ids("BDCABA")) == 4
    assert rouge_l([_ids("ABCBDAB")], [_ids("BDCABA")])[0] == pytest.approx(8 / 13)
    assert rouge_l([_ids("abcd")], [_ids("abcd")])[0] == 1.0
    assert rouge_l([_ids("abcd")], [_ids("wxyz")])[0] == 0.0
    # a shift by one: every character but one in order, token accuracy 0
    shifted, truth = _ids("xabcdefg"), _ids("abcdefgh")
    assert token_accuracy(shifted, truth)[0] == 0.0
    assert rouge_l([shifted], [truth])[0] == pytest.approx(7 / 8)


def test_secret_recovery_counts_whole_secrets():
    truth = np.array([[1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1]])
    mask = np.array([[0, 1, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=bool)
    assert secret_spans(mask) == [(0, 1, 3), (0, 4, 6), (1, 0, 3)]
    recon = truth.copy()
    recon[0, 5] = 0  # one character of the second secret wrong
    np.testing.assert_array_equal(secret_recovery(recon, truth, mask), [1.0, 0.0, 1.0])
    report = text_report(recon, truth, mask)
    np.testing.assert_allclose(report["secret_token_accuracy"], [1.0, 0.5, 1.0])
    np.testing.assert_allclose(report["token_accuracy"], [5 / 6, 1.0])


def test_eval_on_gpt_char_reports_text_leakage_and_the_transformer_section(tmp_path):
    """``hasfl-sec eval --model gpt-char``: text attacks by default, the arms that need images or
    real-valued inputs left out with a note, the report's transformer section; the summary, the
    defense table and the headline score leakage by token accuracy, not SSIM."""
    settings = tmp_path / "eval.yaml"
    settings.write_text("attack_params: {text-inversion: {steps: 20}, text-inverter: {steps: 20}}\n"
                        "defenses:\n  - {defense: noise, param: sigma, values: [1.0]}\n")
    tiny = ["model.width=16", "data.context=16", "train.rounds=6", "fleet.num_devices=3", "optimizer.pilot_rounds=40",
            "optimizer.target_accuracy=0.1", "optimizer.warmup_rounds=2", "optimizer.probe_size=16",
            "train.eval_every=2"]
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--model", "gpt-char", "--dataset", "secrets",
                                      *[a for o in tiny for a in ("--set", o)], "--images", "2",
                                      "--baselines", "", "--seeds", "0", "--threads", "1", "--no-progress",
                                      "--eval-config", str(settings), "--out", str(out)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    leakage = pd.read_csv(out / "leakage.csv")
    assert set(leakage[leakage.attack != "none"].attack) >= {"text-inversion", "text-inverter"}
    assert {"token_accuracy", "rouge_l", "secret_recovery"} <= set(leakage.metric)
    report = (out / "report.md").read_text()
    assert "A transformer: the open question" in report and "Every cut sends 1 KB per sample" in report
    assert "Label-only reference (text)" in report and "malicious-server arms are left out" in report
    assert not (out / "runs" / "fsha-hasfl.seed0").exists()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.leakage_metric) == {"token_accuracy"} and summary.max_leakage.between(0, 1).all()
    token = leakage[(leakage.metric == "token_accuracy") & (leakage.attack != "none")]
    assert summary.max_leakage.max() == pytest.approx(token.groupby(["plan", "device", "attack"]).value.mean().max())
    defenses = pd.read_csv(out / "defenses.csv")
    assert set(defenses.defense) == {"none", "noise"} and set(defenses.leakage_metric) == {"token_accuracy"}
    assert defenses.leakage.notna().all() and defenses.ssim.isna().all()
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert "max_leakage_token_accuracy" in set(comparisons.metric) and "max_leakage_ssim" not in set(comparisons.metric)
    assert "token accuracy reduction" in report and "strongest attack's token accuracy" in report
    assert "max token accuracy" in result.output and "SSIM" not in result.output


@pytest.mark.parametrize("defense", ["dpsgd", "noise", "nopeek", "topk", "quantize"])
def test_every_defense_trains_gpt_char(defense, tmp_path):
    """Opacus' per-sample gradients cover the token and position tables (DP-SGD), and the smashed-data
    defenses act on hidden states."""
    result = CliRunner().invoke(cli, ["-q", "train", "--model", "gpt-char", "--dataset", "secrets", "--devices", "3",
                                      "--context", "16", "--set", "model.width=16", "--set", "train.rounds=2",
                                      "--set", f"defense.use=[{defense}]", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "nan" not in (tmp_path / "run" / "rounds.csv").read_text().splitlines()[-1].split(",")[1]


def test_only_whole_secrets_are_marked():
    """A secret cut by a sequence boundary is not in the mask: every marked run is one whole value."""
    import re

    data = load_dataset("secrets", context=32)
    whole = re.compile(r"[A-Z][a-z]+ [A-Z][a-z]+|\d{4} \d{4} \d{4} \d{4}|\d{6}|\d{4}-\d{2}-\d{2}")
    for i, a, b in secret_spans(data.secret_train[:300]):
        value = decode(data.x_train[i, a:b], data.vocab)
        assert whole.fullmatch(value), value


def test_text_settings_that_cannot_work_are_refused(tmp_path):
    runner = CliRunner()
    cases = [
        (["train", "--model", "gpt-char", "--dataset", "secrets", "--context", "5000"], "data.context"),
        (["train", "--model", "gpt-char", "--dataset", "secrets", "--context", "600"], "data.context"),
        (["train", "--model", "gpt-char", "--dataset", "pydoc", "--strategy", "hasfl-private",
          "--set", "privacy.budget=20"], "privacy.profile"),
        (["audit", "--active", "fsha", "--model", "gpt-char", "--dataset", "secrets"], "--active"),
    ]
    for args, field in cases:
        result = runner.invoke(cli, [*args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and field in result.output, (args, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_collecting_image_and_text_runs_together_is_refused(tmp_path):
    """SSIM and token accuracy are not one leakage scale: one line, nothing written."""
    from hasfl_sec.errors import ConfigError
    from hasfl_sec.evaluation.collect import collect_runs

    runs = []
    for name, args in (("text", ["--model", "gpt-char", "--dataset", "secrets", "--context", "16",
                                 "--set", "model.width=16"]), ("images", [])):
        result = CliRunner().invoke(cli, ["-q", "train", *args, "--devices", "3", "--set", "train.rounds=2",
                                          "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        runs.append(tmp_path / name)
    with pytest.raises(ConfigError, match="one kind of task.*text token_accuracy, images ssim"):
        collect_runs(runs, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
