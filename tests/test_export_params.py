"""verify_export re-scores an exported model with the evaluation cap its trial used, read back from
the MLflow params (where a mapping is stored as its Python repr)."""
from xstilts.analysis.export import _eval_cap


def test_eval_cap_from_logged_params():
    params = {"training.max_eval_examples": "150", "training.max_eval_examples_by_task": "{'bucc2018': 2000, 'pawsx': 300}"}
    assert _eval_cap(params, "pawsx") == 300
    assert _eval_cap(params, "xnli") == 150
    assert _eval_cap({"training.max_eval_examples": "None", "training.max_eval_examples_by_task": "None"}, "xnli") is None
    assert _eval_cap({}, "xnli") is None  # a run logged before either option existed
