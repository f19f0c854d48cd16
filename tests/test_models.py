import pytest
import torch

from rnnlab.models import SequenceClassifier, count_parameters


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_both_layouts_give_the_same_logits(cell, bidirectional, num_layers):
    kwargs = dict(cell=cell, hidden_size=16, num_layers=num_layers, bidirectional=bidirectional)
    torch.manual_seed(0)
    batch_first = SequenceClassifier(batch_first=True, **kwargs).eval()
    seq_first = SequenceClassifier(batch_first=False, **kwargs).eval()
    seq_first.load_state_dict(batch_first.state_dict())
    x = torch.randn(5, 28, 28)  # (batch, seq, feature)

    out_bf = batch_first(x)
    out_sf = seq_first(x.transpose(0, 1).contiguous())  # really (seq, batch, feature)

    assert out_bf.shape == (5, 10)
    torch.testing.assert_close(out_bf, out_sf, rtol=0, atol=0)


def test_seq_first_model_reads_seq_batch_feature():
    model = SequenceClassifier(batch_first=False, hidden_size=8).eval()
    # 3 sequences of 28 steps fed as (seq=28, batch=3): one logit row per sequence.
    assert model(torch.randn(28, 3, 28)).shape == (3, 10)


def test_default_is_the_textbook_model():
    torch.manual_seed(0)
    ours = SequenceClassifier()
    torch.manual_seed(0)
    rnn, fc = torch.nn.RNN(28, 128, batch_first=True), torch.nn.Linear(128, 10)
    assert count_parameters(ours) == sum(p.numel() for p in [*rnn.parameters(), *fc.parameters()])
    x = torch.randn(4, 28, 28)
    out, _ = rnn(x)
    torch.testing.assert_close(ours(x), fc(out[:, -1, :]))


def test_dropout_is_used_before_the_head_in_training_only():
    model = SequenceClassifier(cell="gru", hidden_size=32, dropout=0.5)
    x = torch.randn(8, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
