"""xstilts: distributed hyperparameter studies of intermediate-task training (STILTs) for zero-shot
cross-lingual transfer.

Everything installs under this one name (`xstilts.study`, `xstilts.trainables`, `xstilts.tasks`,
`xstilts.analysis`, `xstilts.search_spaces`, `xstilts.storage`), so nothing of ours collides with a
user's own `study` or `tasks` package. The repository keeps the top-level folders that show the data
flow (search_spaces -> study -> trainables -> MLflow -> analysis, tasks shared); pyproject.toml's
package-dir maps them here.
"""
