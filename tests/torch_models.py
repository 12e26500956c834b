"""Small torch models shared by the torch backend and torch artifact tests."""

from __future__ import annotations

import torch


class TwoInTwoOut(torch.nn.Module):
    """float features [batch, 8] and int64 token ids [batch, 4] -> (logits [batch, 3], pooled embedding [batch, 8])."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(16, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, features, ids):
        pooled = self.embedding(ids).mean(1) + features
        return self.head(pooled), pooled
