"""rnnlab.kernels computes what torch's nn.RNN computes: outputs and every gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab import kernels
from rnnlab.models import SequenceClassifier


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_layer_matches_torch_in_float64(nonlinearity):
    torch.manual_seed(0)
    rnn = nn.RNN(28, 32, nonlinearity=nonlinearity).double()
    x = torch.randn(28, 5, 28, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(5, 32, dtype=torch.double, requires_grad=True)
    params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    expected, _ = rnn(x, h0[None])
    got = kernels.rnn_layer(x, h0, *params, relu=nonlinearity == "relu")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    weights = torch.randn_like(expected)  # every time step's output gets a gradient
    grads_expected = torch.autograd.grad((expected * weights).sum(), (x, h0, *params))
    grads_got = torch.autograd.grad((got * weights).sum(), (x, h0, *params))
    for g, e in zip(grads_got, grads_expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_gradcheck():
    torch.manual_seed(1)
    rnn = nn.RNN(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.double, requires_grad=True)
    params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    assert torch.autograd.gradcheck(lambda *a: kernels.rnn_layer(*a, relu=False), (x, h0, *params))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_model_with_own_kernel_matches_torch(batch_first, num_layers):
    """Same seed, same weights; the two kernels give the same logits and gradients (float32)."""
    models = {}
    for kernel in ("auto", "torch"):
        torch.manual_seed(0)
        models[kernel] = SequenceClassifier(
            cell="rnn",
            hidden_size=64,
            num_layers=num_layers,
            batch_first=batch_first,
            kernel=kernel,
        )
    assert models["auto"].own_kernel and not models["torch"].own_kernel
    x = torch.randn(16, 28, 28) if batch_first else torch.randn(28, 16, 28)
    y = torch.randint(0, 10, (16,))
    logits = {k: m(x) for k, m in models.items()}
    torch.testing.assert_close(logits["auto"], logits["torch"], rtol=1e-5, atol=1e-5)
    for k in models:
        nn.functional.cross_entropy(logits[k], y).backward()
    for (name, p), q in zip(
        models["auto"].named_parameters(), models["torch"].parameters(), strict=True
    ):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_other_cells_and_bidirectional_keep_torch_path():
    for kwargs in (dict(cell="lstm"), dict(cell="gru"), dict(cell="rnn", bidirectional=True)):
        assert not SequenceClassifier(kernel="auto", **kwargs).own_kernel


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_last_only_gives_the_last_state_and_its_gradients(nonlinearity):
    torch.manual_seed(2)
    rnn = nn.RNN(28, 16, nonlinearity=nonlinearity).double()
    x = torch.randn(28, 3, 28, dtype=torch.double)
    h0 = torch.zeros(3, 16, dtype=torch.double)
    params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    relu = nonlinearity == "relu"
    full = kernels.rnn_layer(x, h0, *params, relu=relu)[-1]
    last = kernels.rnn_layer(x, h0, *params, relu=relu, last_only=True)
    torch.testing.assert_close(last, full, rtol=0, atol=0)
    g_full = torch.autograd.grad(full.sum(), params)
    g_last = torch.autograd.grad(last.sum(), params)
    for a, b in zip(g_last, g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


@pytest.mark.slow
def test_runs_record_the_kernel_and_agree(run_train, tmp_path):
    """A CPU run of the textbook model uses rnnlab's kernel and says so; model.kernel=torch
    uses torch's; one epoch of each ends at the same loss up to float32 rounding."""
    import json

    from tests.sweeping import TINY_TRIAL

    summaries = {}
    for kernel in ("auto", "torch"):
        out = tmp_path / kernel
        run_train(
            *TINY_TRIAL,
            "model.hidden_size=32",
            f"model.kernel={kernel}",
            f"hydra.run.dir={out}",
            check=True,
        )
        summaries[kernel] = json.loads((out / "summary.json").read_text())
    assert summaries["auto"]["kernel"] == "rnnlab"
    assert summaries["torch"]["kernel"] == "torch"
    a, b = (summaries[k]["best_val_loss"] for k in ("auto", "torch"))
    assert a == pytest.approx(b, rel=1e-4)
