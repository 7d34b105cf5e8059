"""retrieval: no head and no training; the phase-2 encoder's pooled hidden states are scored
directly (BUCC, Tatoeba, LAReQA, Mewsli-X): see `xstilts.tasks.retrieval`."""
from __future__ import annotations

from xstilts.tasks.kinds import TaskKind, register


class Retrieval(TaskKind):
    name = "retrieval"
    trainable = False


register(Retrieval())
