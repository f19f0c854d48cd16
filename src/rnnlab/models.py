"""Sequence classifiers: a recurrent stack read row by row, a linear head on its final state."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.config import CELLS

MODULES = dict(zip(CELLS, (nn.RNN, nn.LSTM, nn.GRU), strict=True))


class SequenceClassifier(nn.Module):
    """`cell` (rnn/lstm/gru) over the sequence, then Linear on the last step's hidden state.

    With the defaults this is exactly the textbook model: nn.RNN(28, 128, batch_first=True)
    followed by nn.Linear(128, 10) on the last step's output, created in that order so that
    the same seed gives the same initial weights.

    Inputs follow `batch_first` like torch's recurrent modules: (batch, seq, feature) when
    true, (seq, batch, feature) when false.
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
    ) -> None:
        super().__init__()
        if cell not in MODULES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
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
        # Identity when dropout is 0 keeps the textbook model's forward pass (and RNG use) intact.
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(hidden_size * self.num_directions, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h_n = self.rnn(x)
        if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        # h_n[-1] of a one-directional stack is the last step's output of the top layer;
        # a bidirectional stack contributes the final state of each direction.
        last = h_n[-1] if self.num_directions == 1 else torch.cat((h_n[-2], h_n[-1]), dim=1)
        return self.fc(self.head_dropout(last))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
