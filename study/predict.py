"""`xstilts predict`: the selected model of each target task predicts every language of a split
into XTREME's submission layout, the folder `xstilts evaluate` (and XTREME's evaluate.py) reads.

    OUT/<task>/test-<lang>.<ext>      one file per language (docs/evaluate.md, "Folder layout")

The model of a target is the one `xstilts analyze`, `export` and the model registry select: the
completed trial with the best English dev score (`xstilts.analysis.select.best_per_target`). A
trainable target (classification, tagging, extractive QA) predicts with its phase-3 checkpoint;
a retrieval target (BUCC, Tatoeba) has no phase 3 and predicts with the encoder the trial
scored: the phase-2 (intermediate) encoder, or the pretrained model for `none`, pooling the
layer the trial logged. Checkpoints are read through `xstilts.storage` (local paths and
object stores such as s3:// alike).

File contents per XTREME format (`xstilts.tasks.xtreme_eval.task_format`):
  xnli, pawsx          one predicted label per example, in file order
  udpos, panx          one predicted tag per word, a blank line after each sentence (words cut
                       off by max_length get the task's first label, as scoring does)
  xquad, mlqa, tydiqa  one JSON object {question id: answer}
  tatoeba              per English sentence, in file order, the id (line index) of the source
                       sentence it retrieves (XTREME's English -> source search)
  bucc2018             one `<source id>TAB<English id>` line per mined pair scoring at least the
                       threshold that maximises F1 on that language's dev gold (on --split dev:
                       on dev itself, as the study logged)
The synthetic stand-ins of the embedded default (synthetic_xnli, ...) are written in the format
of the task they imitate, under their own folder name.

`--split dev` writes the dev predictions under the same names (test-<lang>.<ext>) and reads dev
with the trial's evaluation cap, so `xstilts evaluate` against `--labels-out` reproduces the
metrics the study logged; `--split test` (the default) reads every test example. Everything is
written to a staging folder beside OUT and renamed into place at the end: OUT appears whole or
not at all. A target without the split's data is refused before any model is loaded (one line
naming the target, the language and the file, exit 2).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DESCRIPTION = (
    "Write the test-set predictions of the selected model of each target task (the trial with the best English "
    "dev score, as analyze/export select) in XTREME's submission layout: OUT/<task>/test-<lang>.tsv (.json for "
    "QA), exactly the folders `xstilts evaluate` and XTREME's evaluate.py read. Retrieval targets (BUCC, "
    "Tatoeba) predict with the trial's phase-2 (intermediate) encoder, BUCC at the threshold chosen on each "
    "language's dev gold. --split dev writes the dev predictions under the same names and, with --labels-out, "
    "the dev gold beside them, so `xstilts evaluate --prediction-folder OUT --label-folder LABELS` reproduces "
    "the scores the study logged. Every language of a target must have the split's data; a missing file is "
    "named (exit 2) before anything is written, and OUT appears only once complete.")

EPILOG = ("Example: xstilts predict --study S --out preds; xstilts predict --study S --split dev --out dev-preds "
          "--labels-out dev-gold && xstilts evaluate --prediction-folder dev-preds --label-folder dev-gold")


def add_arguments(parser) -> None:
    parser.add_argument("--target", action="append", metavar="TASK",
                        help="a target task of the study (repeatable; default: every target with a completed trial "
                             "whose task has an XTREME submission format)")
    parser.add_argument("--out", required=True, help="new (or empty) folder to write the predictions into")
    parser.add_argument("--split", choices=["dev", "test"], default="test",
                        help="which split to predict (default: test); dev reads the trial's evaluation cap, to "
                             "check the files against the dev gold (--labels-out) and the logged scores")
    parser.add_argument("--labels-out", metavar="DIR",
                        help="also write the split's gold labels in the same layout (a new or empty folder), for "
                             "`xstilts evaluate --label-folder`; needs labelled data (XTREME's own test files "
                             "have their labels removed)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="read the split from this folder (the official layouts, docs/tasks.md) instead of "
                             "the data_dir the study trained with")


class PredictError(RuntimeError):
    """Bad input found before anything is written: one line for the user (exit 2)."""


@dataclass(frozen=True)
class Target:
    """One target to predict: its task, its folder format, the selected trial and how to read data."""

    task: object  # TaskSpec
    folder_format: str
    selection: object  # xstilts.analysis.select.Selection
    options: object  # DataOptions of the split (and of dev, for BUCC's threshold on --split test)

    @property
    def name(self) -> str:
        return self.task.name


# The trial's recorded caps and lengths, read as export reads them (one reader of those params).
from xstilts.analysis.export import _eval_cap, _optional_int  # noqa: E402


def study_data_files(tracking_uri: str, run_id: str) -> dict | None:
    """The study's `data_files` overrides, from the config stored on its parent run (trials do not
    log them as params); None when it has none."""
    import yaml

    from xstilts.mlflow_store.runs import read_text_artifact

    text = read_text_artifact(tracking_uri, run_id, "study_config.yaml")
    if text is None:  # a study without a stored config trained without overrides
        return None
    raw = yaml.safe_load(text)
    files = raw.get("data_files") if isinstance(raw, dict) else None
    return dict(files) if isinstance(files, dict) and files else None


def missing_data(task, split: str, language: str, options) -> str | None:
    """Why (task, split, language) cannot be read, in one line naming the file; None when it can.
    Local splits are checked by their files (TaskSpec.locate, which names what it tried); a hub
    split is taken to exist (reading it will say otherwise)."""
    from xstilts.tasks.base import TaskDataError

    if split not in task.available_splits:
        return f"task {task.name} defines no {split} split (it has {', '.join(task.available_splits)})"
    if task.locate is None:  # generated data
        return None
    local = options.data_dir is not None or options.file_override(task.name, split, language) is not None
    if not local:
        return None if task.has_data(split, language, options) else f"no {split} data on the HF hub for {language}"
    try:
        task.locate(split, language, options)
    except TaskDataError as error:
        return str(error)
    return None


def plan_targets(selections: dict, wanted: list[str] | None, split: str, data_dir: str | None,
                 data_files: dict | None, note=print) -> list[Target]:
    """The targets to predict, each checked to have the split's data in every language; raises
    PredictError (one line) otherwise. Targets without an XTREME format are skipped (noted) unless
    named in `wanted`, where they are an error."""
    from xstilts.tasks import DataOptions, get_task
    from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES, STAND_INS, task_format

    names = list(dict.fromkeys(wanted)) if wanted else list(selections)
    for name in names:
        if name not in selections:
            known = ", ".join(selections) or "none"
            raise PredictError(f"--target {name!r} has no completed trial in this study (targets with one: {known})")
    formats = ", ".join([*OFFICIAL_LANGUAGES, *STAND_INS])
    targets = []
    for name in names:
        task = get_task(name)
        folder_format = task_format(name)
        if folder_format is None:
            why = (f"target {name} ({task.kind}) has no XTREME submission format; predict writes {formats}")
            if wanted:
                raise PredictError(why)
            note(f"note: skipped {why}")
            continue
        params = selections[name].best.params
        trial_dir = params.get("data_dir") if params.get("data_dir") not in (None, "None", "") else None
        seed = int(params.get("seed", 0))
        cap = _eval_cap(params, name)
        source = data_dir or trial_dir
        # dev: the trial's evaluation cap (what it logged); test: every example (a submission)
        options = DataOptions(source, cap if split == "dev" else None, seed, data_files)
        splits = [split] + (["dev"] if folder_format == "bucc2018" and split != "dev" else [])
        for needed in splits:
            for language in task.languages:
                problem = missing_data(task, needed, language, options)
                if problem is not None:
                    role = "" if needed == split else " (BUCC's threshold is chosen on the dev gold)"
                    raise PredictError(f"target {name} has no {needed} data for {language}{role}: {problem}")
        targets.append(Target(task, folder_format, selections[name], options))
    if not targets:
        raise PredictError(f"no target of this study has an XTREME submission format (predict writes {formats})")
    return targets


# ---------------------------------------------------------------------------------------------
# Writing the files
# ---------------------------------------------------------------------------------------------

def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _tag_lines(sentences: list[list[str]]) -> list[str]:
    lines = []
    for tags in sentences:
        lines += list(tags) + [""]
    return lines


def _squad_labels(examples: list) -> dict:
    """SQuAD v1.1 label JSON of span_qa examples: one article, one paragraph per question."""
    paragraphs = [{"context": e.context, "qas": [{
        "id": e.id, "question": e.question,
        "answers": [{"text": t, "answer_start": s} for t, s in zip(e.answers, e.answer_starts or (0,) * len(e.answers))]
        or [{"text": "", "answer_start": 0}]}]} for e in examples]
    return {"version": "1.1", "data": [{"title": "xstilts", "paragraphs": paragraphs}]}


def _tatoeba_lines(corpus, found: dict[str, str]) -> tuple[list[str], list[str]]:
    """(predictions, labels): per English sentence, the retrieved source id and its gold source id."""
    gold = {}
    for source, target in corpus.gold:
        gold.setdefault(target, source)
    return [found[t] for t in corpus.target_ids], [gold.get(t, "") for t in corpus.target_ids]


def _predict_trainable(target: Target, split: str, device, out: Path, labels: Path | None, log) -> None:
    import transformers
    from transformers import AutoTokenizer

    from xstilts.storage import to_local
    from xstilts.tasks.modeling import encode, head_class, predict

    transformers.logging.set_verbosity_error()
    task, params = target.task, target.selection.best.params
    path = to_local(target.selection.best.checkpoint)
    model = head_class(task).from_pretrained(path).to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    max_length = _optional_int(params.get("training.max_length"))
    batch_size = _optional_int(params.get("training.eval_batch_size")) or 128
    qa = target.folder_format in ("xquad", "mlqa", "tydiqa")
    extension = "json" if qa else "tsv"
    for language in task.languages:
        examples = task.load(split, language, target.options)
        features = encode(task, examples, tokenizer, max_length)
        predictions = predict(task, model, features, tokenizer.pad_token_id, batch_size, device)
        name = f"test-{language}.{extension}"
        if qa:
            (out / name).write_text(json.dumps({e.id: predictions.get(e.id, "") for e in examples}, ensure_ascii=False),
                                    encoding="utf-8")
            if labels is not None:
                (labels / name).write_text(json.dumps(_squad_labels(examples), ensure_ascii=False), encoding="utf-8")
        elif task.kind == "tagging":
            padded = [list(p) + [task.labels[0]] * (len(e.tags) - len(p)) for p, e in zip(predictions, examples)]
            _write_lines(out / name, _tag_lines(padded))
            if labels is not None:
                _write_lines(labels / name, _tag_lines([list(e.tags) for e in examples]))
        else:
            _write_lines(out / name, [str(p) for p in predictions])
            if labels is not None:
                _write_lines(labels / name, [str(e.label) for e in examples])
        log(f"  {task.name} {language}: {len(examples)} examples")


def _predict_retrieval(target: Target, split: str, device, out: Path, labels: Path | None, log) -> None:
    import transformers
    from transformers import AutoTokenizer

    from xstilts.storage import to_local
    from xstilts.tasks.record_schema import PARAM_RETRIEVAL_LAYER
    from xstilts.tasks.retrieval import (_load_corpus, best_threshold, bucc_candidates, embed_sentences, load_encoder,
                                         nearest, resolve_layer)

    transformers.logging.set_verbosity_error()
    task, best = target.task, target.selection.best
    params = best.params
    # The encoder the trial scored: phase 2's (or, for `none`, the pretrained model), and the
    # tokenizer it used (the phase-1 model's).
    model = load_encoder(to_local(best.checkpoint)).to(device)
    tokenizer = AutoTokenizer.from_pretrained(to_local(params["model"]))
    layer = resolve_layer(model.config.num_hidden_layers, _optional_int(params.get(PARAM_RETRIEVAL_LAYER)))
    max_length = _optional_int(params.get("training.max_length")) or task.max_length
    batch_size = _optional_int(params.get("training.eval_batch_size")) or 128

    def embed(sentences):
        return embed_sentences(model, tokenizer, sentences, layer, batch_size, max_length, device)

    for language in task.languages:
        corpus = _load_corpus(task, split, language, target.options)
        source, english = embed(corpus.source_sentences), embed(corpus.target_sentences)
        name = f"test-{language}.tsv"
        if target.folder_format == "tatoeba":  # each English sentence's nearest source sentence
            _, indices = nearest(english, source)
            found = {t: corpus.source_ids[int(i)] for t, i in zip(corpus.target_ids, indices)}
            predicted, gold = _tatoeba_lines(corpus, found)
            _write_lines(out / name, predicted)
        else:  # bucc2018: mined pairs at the dev-gold threshold
            candidates = bucc_candidates(corpus, source, english)
            if split == "dev":
                threshold, _ = best_threshold(candidates, corpus.gold)
            else:
                dev = _load_corpus(task, "dev", language, target.options)
                threshold, _ = best_threshold(bucc_candidates(dev, embed(dev.source_sentences),
                                                              embed(dev.target_sentences)), dev.gold)
            _write_lines(out / name, [f"{s}\t{t}" for s, t, value in candidates if value >= threshold])
            gold = [f"{s}\t{t}" for s, t in corpus.gold]
        if labels is not None:
            _write_lines(labels / name, gold)
        log(f"  {task.name} {language}: {len(corpus.source_ids)} sentences")


def write_predictions(targets: list[Target], split: str, out: Path, labels: Path | None, log=print) -> None:
    """Predict every target into `out` (and its gold into `labels`), staged beside each folder and
    renamed into place only when every target is done."""
    import torch

    from xstilts.tasks.kinds import kind_of

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folders = [out] + ([labels] if labels is not None else [])
    stages = []
    try:
        for folder in folders:
            folder.parent.mkdir(parents=True, exist_ok=True)
            stages.append(Path(tempfile.mkdtemp(prefix=f".{folder.name}.predict-", dir=folder.parent)))
        for target in targets:
            best = target.selection.best
            log(f"{target.name}: trial {best.trial_id} (intermediate={best.intermediate_task}, English dev "
                f"{best.selection_metric} {best.en_dev_score:.2f}), {best.checkpoint}")
            task_out = stages[0] / target.name
            task_labels = stages[1] / target.name if labels is not None else None
            for folder in (task_out, task_labels):
                if folder is not None:
                    folder.mkdir()
            predict = _predict_trainable if kind_of(target.task).trainable else _predict_retrieval
            predict(target, split, device, task_out, task_labels, log)
        for stage, folder in zip(stages, folders):
            if folder.exists():
                folder.rmdir()  # checked empty before
            os.replace(stage, folder)
    finally:
        for stage in stages:
            shutil.rmtree(stage, ignore_errors=True)


def main(args) -> int:
    from xstilts.analysis.records import StudyNotFound, find_study, iter_trials
    from xstilts.analysis.select import best_per_target
    from xstilts.study.cli import EXIT_FAILURE, EXIT_OK, _bad_input, _check_store_args, _q, _tracking_store_exists
    from xstilts.storage import StorageError
    from xstilts.tasks.base import TaskDataError

    bad = _check_store_args("predict", args, args.out, "export")  # a new or empty folder, its parent writable
    if bad is not None:
        return bad
    out = Path(args.out).absolute()
    labels = Path(args.labels_out).absolute() if args.labels_out else None
    if labels is not None:
        if labels == out:
            return _bad_input("predict", "--labels-out must be another folder than --out")
        if labels.exists() and (not labels.is_dir() or any(labels.iterdir())):
            return _bad_input("predict", f"--labels-out {labels} exists and is not an empty folder; name a new folder")
        if not os.access(labels.parent if labels.parent.exists() else Path.cwd(), os.W_OK):
            return _bad_input("predict", f"--labels-out {labels}: its parent folder is not writable")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        return _bad_input("predict", f"--data-dir {args.data_dir} is not a folder")
    if not _tracking_store_exists(args.tracking_uri):
        return _bad_input("predict", f"no MLflow store at {args.tracking_uri}; run `xstilts run` first or pass --tracking-uri")
    try:
        record = find_study(args.tracking_uri, args.experiment, args.study)
    except StudyNotFound as error:
        return _bad_input("predict", str(error))
    selections = best_per_target(iter_trials(record))
    data_files = study_data_files(args.tracking_uri, record.run_id)
    try:
        targets = plan_targets(selections, args.target, args.split, args.data_dir, data_files,
                               note=lambda line: print(line, file=sys.stderr))
    except PredictError as error:
        return _bad_input("predict", str(error))
    print(f"study {record.name}: predicting the {args.split} split of {', '.join(t.name for t in targets)}")
    try:
        write_predictions(targets, args.split, out, labels)
    except (TaskDataError, StorageError, OSError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"xstilts predict: error: {message}; nothing was written to {out}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {out}" + (f" and the gold labels to {labels}" if labels else ""))
    if labels is not None:
        print(f"score it: xstilts evaluate --prediction-folder {_q(str(out))} --label-folder {_q(str(labels))}")
    return EXIT_OK
