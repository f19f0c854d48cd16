"""Sequence classifiers: a recurrent stack read row by row, a linear head on its final state."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab import kernels
from rnnlab.config import CELLS, KERNELS

MODULES = dict(zip(CELLS, (nn.RNN, nn.LSTM, nn.GRU), strict=True))


class SequenceClassifier(nn.Module):
    """`cell` (rnn/lstm/gru) over the sequence, then Linear on the last step's hidden state.

    With the defaults this is exactly the textbook model: nn.RNN(28, 128, batch_first=True)
    followed by nn.Linear(128, 10) on the last step's output, created in that order so that
    the same seed gives the same initial weights.

    Inputs follow `batch_first` like torch's recurrent modules: (batch, seq, feature) when
    true, (seq, batch, feature) when false.

    `kernel`: "auto" runs a one-directional plain RNN on the CPU through rnnlab.kernels (the
    same function, computed faster); everything else, and every model with "torch", runs
    torch's own module. The parameters are the torch module's either way. The default here is
    "torch" so that configs saved before the key existed resume as they ran; conf/model/rnn.yaml
    asks for "auto".
    """

    def __init__(
        self,
        cell: str = "rnn",
        input_size: int = 28,
        hidden_size: int = 128,
        num_layers: int = 1,
        batch_first: bool = True,
        bidirectional: bool = False,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
        num_classes: int = 10,
        kernel: str = "torch",
    ) -> None:
        super().__init__()
        if cell not in MODULES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        kwargs = dict(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=batch_first,
            bidirectional=bidirectional,
            # torch applies this between layers only (and warns when there is one layer).
            dropout=dropout if num_layers > 1 else 0.0,
        )
        if cell == "rnn":
            kwargs["nonlinearity"] = nonlinearity
        self.cell = cell
        self.batch_first = batch_first
        self.num_directions = 2 if bidirectional else 1
        self.rnn = MODULES[cell](**kwargs)
        self.own_kernel = kernel == "auto" and cell == "rnn" and not bidirectional
        # Identity when dropout is 0 keeps the textbook model's forward pass (and RNG use) intact.
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(hidden_size * self.num_directions, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = torch.is_autocast_enabled(x.device.type)
        if self.kernel_for(x.device.type, autocast) == "rnnlab":
            last = self._own_rnn(x)
        else:
            _, h_n = self.rnn(x)
            if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
                h_n = h_n[0]
            # h_n[-1] of a one-directional stack is the last step's output of the top layer;
            # a bidirectional stack contributes the final state of each direction.
            last = h_n[-1] if self.num_directions == 1 else torch.cat((h_n[-2], h_n[-1]), dim=1)
        return self.fc(self.head_dropout(last))

    def kernel_for(self, device_type: str, autocast: bool) -> str:
        """Which recurrent kernel runs: "rnnlab" (rnnlab.kernels) or "torch" (its module).

        rnnlab's is for the CPU, in float32: under autocast (trainer.precision=bf16) torch's
        module does the casting.
        """
        return "rnnlab" if self.own_kernel and device_type == "cpu" and not autocast else "torch"

    def _own_rnn(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's last hidden state, layer by layer through rnnlab.kernels."""
        rnn = self.rnn
        seq = x.transpose(0, 1) if self.batch_first else x  # the kernel is time-major
        h0 = seq.new_zeros(seq.shape[1], rnn.hidden_size)
        for layer in range(rnn.num_layers):
            if layer > 0 and rnn.dropout > 0:
                seq = nn.functional.dropout(seq, rnn.dropout, self.training)
            seq = kernels.rnn_layer(
                seq,
                h0,
                getattr(rnn, f"weight_ih_l{layer}"),
                getattr(rnn, f"weight_hh_l{layer}"),
                getattr(rnn, f"bias_ih_l{layer}"),
                getattr(rnn, f"bias_hh_l{layer}"),
                relu=rnn.nonlinearity == "relu",
                last_only=layer == rnn.num_layers - 1,
            )
        return seq


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
