"""The search dimensions a study config's `search_space` may name: one row each.

This table drives both the parsing of `search_space` (xstilts.study.config: which names exist,
what values each takes, which are required) and the Optuna space and fixed points
(xstilts.study.search): a new dimension is one row here plus the trial field that consumes it
(xstilts.trainables.config.TrialConfig, same name). The intermediate task itself is searched over
`intermediate_tasks`, not here.

A dimension applies to a trial only when its phase exists: `intermediate` when the trial has a
phase 2 (its intermediate task is not `none`), `target` when it has a phase 3 (the target is not
a retrieval task), `retrieval` when it has none. A trial a dimension does not apply to records
`absent` instead (when that is not None), so every trial of a study has the same params.
"""
from __future__ import annotations

from dataclasses import dataclass

LEARNING_RATE = "learning_rate"  # loguniform / uniform / choice of numbers > 0
CATEGORY = "category"  # choice of the names in `allowed`
LAYER = "layer"  # choice of integers (a hidden_states index)

INTERMEDIATE, TARGET, RETRIEVAL = "intermediate", "target", "retrieval"  # when a dimension applies


@dataclass(frozen=True)
class SearchDimension:
    name: str
    help: str
    values: str  # LEARNING_RATE, CATEGORY or LAYER
    applies_to: str  # INTERMEDIATE, TARGET or RETRIEVAL
    required: bool = False  # every config must give it (when a trial it applies to can exist)
    absent: float | None = None  # recorded where it does not apply (None: not recorded)
    allowed: tuple[str, ...] = ()  # CATEGORY: the names it may take
    preferred: str | None = None  # CATEGORY: the value fixed points use when it is allowed

    def applies(self, intermediate_task: str, retrieval_target: bool) -> bool:
        if self.applies_to == INTERMEDIATE:
            return intermediate_task != "none"
        if self.applies_to == TARGET:
            return not retrieval_target
        return retrieval_target

    def example(self) -> str:
        if self.values == LEARNING_RATE:
            return "{type: loguniform, low: 5e-6, high: 3e-5} or {type: choice, values: [1e-5, 3e-5]}"
        if self.values == CATEGORY:
            return f"{{type: choice, values: [{', '.join(self.allowed)}]}}"
        return "{type: choice, values: [8, 14, 20]}"


# In the order Optuna is asked for them (after intermediate_task): keep it, a seeded sampler's
# draws depend on it.
DIMENSIONS: dict[str, SearchDimension] = {d.name: d for d in (
    SearchDimension("intermediate_lr", "learning rate of phase 2 (intermediate task)", LEARNING_RATE, INTERMEDIATE,
                    required=True, absent=0.0),
    SearchDimension("target_lr", "learning rate of phase 3 (target task)", LEARNING_RATE, TARGET,
                    required=True, absent=0.0),
    SearchDimension("target_train", "how phase 3 trains: english (zero-shot), translate_train (one model on every "
                    "target language's train split) or per_language (one model per language, on that language's "
                    "train split only, scored on that language)", CATEGORY, TARGET,
                    allowed=("english", "translate_train", "per_language"), preferred="english"),
    SearchDimension("retrieval_layer", "hidden_states index pooled for retrieval targets (0 = embeddings; XTREME: "
                    "14 of 24)", LAYER, RETRIEVAL),
)}
