"""multiple_choice: one (context [+ question], choice) sequence per choice, collated to
[batch, n_choices, length]; the head scores each choice with one logit. `TaskSpec.labels[i]`
names choice slot i ("0", "1", ... for XCOPA; "A".."E" would do for CommonsenseQA); with
`labels=()` the slot index as a string is the name. Predictions and gold labels are these
names, scored with accuracy."""
from __future__ import annotations

from transformers import AutoModelForMultipleChoice

from xstilts.tasks.kinds import register
from xstilts.tasks.kinds.classification import Classification
from xstilts.tasks.kinds.common import MultipleChoiceFeatures, choice_label


class MultipleChoice(Classification):  # predicts and scores like classification, over choice slots
    name = "multiple_choice"
    head = AutoModelForMultipleChoice

    def encode(self, task, examples, tokenizer, max_length, doc_stride, segments):
        if not examples:
            return []
        counts = {len(e.choices) for e in examples}
        if len(counts) != 1:
            raise ValueError(f"task {task.name}: examples have different numbers of choices ({sorted(counts)}); "
                             "a batch needs the same number for every example")
        n_choices = counts.pop()
        if task.labels and n_choices > len(task.labels):
            raise ValueError(f"task {task.name}: examples have {n_choices} choices but the task names only "
                             f"{len(task.labels)} choice labels ({', '.join(task.labels)})")
        firsts, seconds = [], []
        for e in examples:
            first = f"{e.context} {e.question}".strip() if e.question else e.context
            for choice in e.choices:
                firsts.append(first)
                seconds.append(choice)
        # longest_first: the (usually long) context is cut before the (short) choice.
        tokenized = tokenizer(firsts, seconds, truncation=True, max_length=max_length, return_token_type_ids=segments)
        encoded = tokenized["input_ids"]
        features = []
        for i, e in enumerate(examples):
            if not 0 <= e.label < n_choices:
                raise ValueError(f"task {task.name}: label {e.label} is not a choice index (0..{n_choices - 1})")
            rows = slice(i * n_choices, (i + 1) * n_choices)
            features.append(MultipleChoiceFeatures(encoded[rows], e.label,
                                                   tokenized["token_type_ids"][rows] if segments else None))
        return features

    def task_type(self, task):
        return "multiple-choice QA"

    def label_of(self, task, index: int) -> str:
        return choice_label(task, index)

    def as_prediction(self, task, label: int) -> str:
        return choice_label(task, label)


register(MultipleChoice())
