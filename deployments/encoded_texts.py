"""What flows between deployments: the encoder's answer, read by the ingress and handed to the heads by value."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EncodedTexts:
    """Encoder -> heads and ingress: embeddings of one request's texts, in input order."""

    embeddings: np.ndarray  # (n_texts, embedding_dim) float32
    truncated: list[bool] = field(default_factory=list)  # per text: cut to the encoder's max tokens
    fingerprint: str = ""  # the encoder that produced them; heads refuse other encoders
    token_counts: list[int] = field(default_factory=list)  # per text: tokens the encoder read (specials included)
