"""Readers for the official file formats of the XTREME targets and the English intermediate tasks.

Every reader takes a path and returns plain records or the example dataclasses of `xstilts.tasks.base`;
every problem with a file is a `TaskDataError` whose message is one line:

    <file>: line <n>: <what is wrong>; fix: <what to do>

(no line for a file that is missing or unreadable as a whole). For a JSON document the line is
that of the object at fault, found by re-reading the document with positions only when there is
an error, so reading stays fast.

Also here: finding a task's local files (`resolve_files`, with the DataOptions.files overrides)
and the lazy access to the HF hub (`hub_splits`), shared by `xstilts.tasks.xtreme_tasks` and
`xstilts.tasks.english_tasks`. `datasets` is imported only inside `hub_splits`.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import json.decoder
import json.scanner
import os
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from xstilts.tasks.base import (DataOptions, MultipleChoiceExample, PairExample, RetrievalCorpus, SpanQAExample,
                        TaggingExample, TaskDataError)

# A location in a file: a line number, a JSON key path (resolved to a line on error) or None.
Location = int | tuple | None


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).replace("\r", "\n").split("\n"))


def data_error(path: str, location: Location, problem: str, fix: str) -> TaskDataError:
    """The one-line TaskDataError for `problem` at `location` of `path`."""
    if isinstance(location, tuple):
        location = json_line(path, location)
    where = f"{path}: line {location}: " if isinstance(location, int) else f"{path}: "
    return TaskDataError(_one_line(f"{where}{problem}; fix: {fix}"))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Text, lines, TSV, CSV
# ---------------------------------------------------------------------------------------------

def read_text(path: str, fix: str = "check the path and the download") -> str:
    """The file as text (UTF-8, a byte-order mark dropped)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise data_error(path, None, "file not found", fix) from None
    except IsADirectoryError:
        raise data_error(path, None, "is a folder, expected a file", fix) from None
    except OSError as error:
        raise data_error(path, None, f"cannot read the file ({error.strerror or error})", fix) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise data_error(path, line, f"not valid UTF-8 (byte 0x{data[error.start]:02x})",
                         "re-encode the file as UTF-8") from None


def split_lines(text: str) -> list[str]:
    """Lines without their breaks (\\n, \\r\\n or \\r end a line; a final break adds no line).
    Unlike str.splitlines, characters such as U+2028 inside a sentence do not end a line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str) -> list[str]:
    return split_lines(read_text(path))


def unquote_field(field: str) -> str:
    """A TSV field as written by pandas/csv (`"a ""b"" c"` -> `a "b" c`); any other field as is.

    Only a field wrapped in quotes whose inner quotes are all doubled is unquoted, so raw TSV
    files (PAWS-X, XNLI) whose text starts with a quotation mark are read unchanged."""
    if len(field) >= 2 and field[0] == '"' and field[-1] == '"':
        inner = field[1:-1]
        if '""' in inner and '"' not in inner.replace('""', ""):
            return inner.replace('""', '"')
    return field


def split_tsv(line: str) -> list[str]:
    return [unquote_field(field) for field in line.split("\t")]


def read_csv_rows(path: str, fix: str) -> list[tuple[int, list[str]]]:
    """(line the record starts on, fields) for every CSV record, the header included."""
    text = read_text(path)
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, start = [], 1
    try:
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as error:
        raise data_error(path, reader.line_num, f"malformed CSV ({error})", fix) from None
    return rows


def read_csv_dicts(path: str, required: Sequence[str], fix: str) -> list[tuple[int, dict[str, str]]]:
    """CSV with a header: (line, {column: value}) per record; every record must have the header's
    number of fields and the header every `required` column."""
    rows = read_csv_rows(path, fix)
    if not rows:
        raise data_error(path, 1, "empty file, expected a CSV header", fix)
    header_line, header = rows[0]
    missing = [c for c in required if c not in header]
    if missing:
        raise data_error(path, header_line, f"the CSV header lacks column(s) {', '.join(missing)} "
                         f"(found {', '.join(header[:12])})", fix)
    records = []
    for line, row in rows[1:]:
        if not row or row == [""]:
            continue
        if len(row) != len(header):
            raise data_error(path, line, f"expected {len(header)} CSV fields as in the header, found {len(row)}", fix)
        records.append((line, dict(zip(header, row))))
    return records


# ---------------------------------------------------------------------------------------------
# JSON and JSON lines
# ---------------------------------------------------------------------------------------------

def read_json(path: str, fix: str = "re-download the file") -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise data_error(path, error.lineno, f"bad JSON ({error.msg}, column {error.colno})", fix) from None


def read_jsonl(path: str, fix: str) -> list[tuple[int, dict]]:
    """(line number, object) per non-blank line of a JSON-lines file."""
    records = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise data_error(path, number, f"bad JSON ({error.msg}, column {error.colno})", fix) from None
        if not isinstance(value, dict):
            raise data_error(path, number, f"expected a JSON object per line, found {type(value).__name__}", fix)
        records.append((number, value))
    return records


def _positions(text: str) -> tuple[Any, dict[int, int]]:
    """The document and {id(container): offset of its opening bracket} (pure-Python scanner)."""
    positions: dict[int, int] = {}
    decoder = json.JSONDecoder()

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        value, end = json.decoder.JSONObject(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo)
        positions[id(value)] = s_and_end[1] - 1
        return value, end

    def parse_array(s_and_end, scan_once):
        value, end = json.decoder.JSONArray(s_and_end, scan_once)
        positions[id(value)] = s_and_end[1] - 1
        return value, end

    decoder.parse_object = parse_object
    decoder.parse_array = parse_array
    decoder.memo = {}
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    return decoder.decode(text), positions


def json_line(path: str, key_path: tuple) -> int | None:
    """The line of the object at `key_path` (keys and list indices) of the JSON document at
    `path`: the deepest container on the path that exists."""
    try:
        text = read_text(path)
        document, positions = _positions(text)
    except (TaskDataError, ValueError, RecursionError):
        return None
    node, offset = document, positions.get(id(document), 0)
    for key in key_path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
        offset = positions.get(id(node), offset)
    return text.count("\n", 0, offset) + 1


# ---------------------------------------------------------------------------------------------
# Sentence pairs (NLI, paraphrase): TSV with or without a header, CSV, JSON lines, JSON
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairRecord:
    location: Location
    text_a: str
    text_b: str
    label: str


_A_COLUMNS = ("premise", "sentence1", "question1", "text_a", "context")
_B_COLUMNS = ("hypothesis", "hypo", "sentence2", "question2", "text_b", "statement", "query")
_LABEL_COLUMNS = ("gold_label", "label", "is_duplicate")
_PAIR_FIX = ("give the file in its official format: TSV text_a<TAB>text_b<TAB>label (XTREME), "
             "a TSV/CSV with a header naming premise/hypothesis/label (or sentence1/sentence2), or JSON lines")


def _column(header: list[str], names: Sequence[str], suffixed: str | None = None) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    if suffixed:  # myXNLI's sentence1_en / sentence2_en
        for i, h in enumerate(lowered):
            if re.fullmatch(suffixed + r"_[a-z]{2,3}", h):
                return i
    return None


def _pair_header(columns: list[str]) -> tuple[int, int, int, int | None] | None:
    a = _column(columns, _A_COLUMNS, "sentence1")
    b = _column(columns, _B_COLUMNS, "sentence2")
    label = _column(columns, _LABEL_COLUMNS)
    if a is None or b is None or label is None:
        return None
    return a, b, label, _column(columns, ("language",))


def _pair_value(value: Any) -> str:
    return "" if value is None else str(value)


def read_pairs(path: str, language: str | None = None) -> list[PairRecord]:
    """Sentence pairs with their raw labels, in file order. The format follows the extension:
    .jsonl (premise/hypothesis/label, sentence1/sentence2/gold_label, context/query/label ...),
    .json (a list, or an object of objects, of such records), .csv (with a header), anything
    else TSV: with a header when the first line names the columns (XNLI-1.0, XNLI-MT, GLUE,
    PAWS-X, myXNLI), else XTREME's headerless text_a<TAB>text_b<TAB>label. A `language` column,
    when there is one, keeps the rows of `language`."""
    lower = path.lower()
    if lower.endswith(".jsonl"):
        return [_pair_from_dict(path, line, record, language) for line, record in read_jsonl(path, _PAIR_FIX)
                if _keep_language(record, language)]
    if lower.endswith(".json"):
        document = read_json(path)
        items: Iterable[tuple[Any, Any]]
        if isinstance(document, dict):
            items = document.items()
        elif isinstance(document, list):
            items = enumerate(document)
        else:
            raise data_error(path, 1, "expected a JSON list or object of sentence-pair records", _PAIR_FIX)
        records = []
        for key, record in items:
            if not isinstance(record, dict):
                raise data_error(path, (key,), f"record {key!r} is not a JSON object", _PAIR_FIX)
            if _keep_language(record, language):
                records.append(_pair_from_dict(path, (key,), record, language))
        return records
    if lower.endswith(".csv"):
        rows = read_csv_rows(path, _PAIR_FIX)
        return _pairs_from_rows(path, rows, language, "CSV fields")
    rows = [(n, split_tsv(line)) for n, line in enumerate(read_lines(path), start=1) if line.strip()]
    return _pairs_from_rows(path, rows, language, "TAB-separated columns")


def _keep_language(record: dict, language: str | None) -> bool:
    return language is None or "language" not in record or record["language"] == language


def _pair_from_dict(path: str, location: Location, record: dict, language: str | None) -> PairRecord:
    keys = list(record)
    columns = _pair_header(keys)
    if columns is None:
        raise data_error(path, location, f"a record needs premise, hypothesis and label fields, found {', '.join(keys[:8])}",
                         _PAIR_FIX)
    a, b, label, _ = columns
    return PairRecord(location, _pair_value(record[keys[a]]), _pair_value(record[keys[b]]),
                      _pair_value(record[keys[label]]).strip())


def _pairs_from_rows(path: str, rows: list[tuple[int, list[str]]], language: str | None, unit: str) -> list[PairRecord]:
    if not rows:
        return []
    records = []
    header = _pair_header(rows[0][1])
    if header is None:  # XTREME layout: text_a, text_b, label
        for line, row in rows:
            if len(row) != 3:
                hint = " (an XTREME test file without labels? use a labelled dev/test file)" if len(row) == 2 else ""
                raise data_error(path, line, f"expected 3 {unit} (text_a, text_b, label), found {len(row)}{hint}",
                                 _PAIR_FIX)
            records.append(PairRecord(line, row[0], row[1], row[2].strip()))
        return records
    a, b, label, language_column = header
    width = len(rows[0][1])
    for line, row in rows[1:]:
        if not row or row == [""]:  # a blank CSV line
            continue
        if len(row) != width:
            raise data_error(path, line, f"expected {width} {unit} as in the header, found {len(row)}", _PAIR_FIX)
        if language is not None and language_column is not None and row[language_column] != language:
            continue
        records.append(PairRecord(line, row[a], row[b], row[label].strip()))
    return records


def pair_examples(path: str, records: Iterable[PairRecord], labels: Sequence[str],
                  label_map: dict[str, str] | None = None, skip_labels: Sequence[str] = ()) -> list[PairExample]:
    """PairExamples with labels mapped into `labels`; records whose raw label is in
    `skip_labels` (SNLI's "-": no annotator consensus) are left out; any other unknown label is
    an error at its line."""
    label_map = label_map or {}
    examples = []
    for record in records:
        raw = record.label
        if raw in skip_labels:
            continue
        label = label_map.get(raw, raw)
        if label not in labels:
            raise data_error(path, record.location, f"unknown label {_short(raw)}; expected one of "
                             f"{', '.join(labels)}",
                             "correct the label or use the task that matches this file")
        examples.append(PairExample(record.text_a, record.text_b, label))
    return examples


# ---------------------------------------------------------------------------------------------
# Tagging: token<TAB>tag (XTREME), CoNLL-U (UD), CCGbank AUTO, jiant's CCG TSV
# ---------------------------------------------------------------------------------------------

_TAG_FIX = "one token<TAB>tag per line, a blank line between sentences (XTREME's PAN-X/UD-POS layout)"


def read_token_tags(path: str, labels: Sequence[str], strip_prefix: str | None = None) -> list[TaggingExample]:
    """XTREME's tagging layout: token<TAB>tag per line, a blank line between sentences.
    `strip_prefix` drops a language prefix from the tokens (WikiANN's raw "en:Paris")."""
    known = set(labels)
    examples, tokens, tags = [], [], []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            if tokens:
                examples.append(TaggingExample(tuple(tokens), tuple(tags)))
                tokens, tags = [], []
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            hint = " (a test file with the tags removed? use a labelled file)" if len(columns) == 1 else ""
            raise data_error(path, number, f"expected 2 TAB-separated columns (token, tag), found {len(columns)}{hint}",
                             _TAG_FIX)
        token, tag = columns[0], columns[1].strip()
        if strip_prefix and token.startswith(strip_prefix):
            token = token[len(strip_prefix):]
        if not token:
            raise data_error(path, number, "empty token", _TAG_FIX)
        if tag not in known:
            raise data_error(path, number, f"unknown tag {_short(tag)}; expected one of {', '.join(labels)}",
                             "correct the tag or use the task that matches this file")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        examples.append(TaggingExample(tuple(tokens), tuple(tags)))
    return examples


_CONLLU_FIX = "give a CoNLL-U file: 10 TAB-separated columns per word, UPOS in column 4 (Universal Dependencies)"


def read_conllu(path: str, labels: Sequence[str]) -> list[TaggingExample]:
    """Universal Dependencies CoNLL-U: the syntactic words of each sentence (FORM, column 2) with
    their UPOS (column 4). Multiword-token ranges ("1-2") and empty nodes ("8.1") are skipped."""
    known = set(labels)
    examples, tokens, tags = [], [], []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            if tokens:
                examples.append(TaggingExample(tuple(tokens), tuple(tags)))
                tokens, tags = [], []
            continue
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != 10:
            raise data_error(path, number, f"expected 10 TAB-separated CoNLL-U columns, found {len(columns)}", _CONLLU_FIX)
        word_id = columns[0]
        if "-" in word_id or "." in word_id:
            continue
        if not word_id.isdigit():
            raise data_error(path, number, f"bad word ID {_short(word_id)}", _CONLLU_FIX)
        tag = columns[3]
        if tag not in known:
            raise data_error(path, number, f"unknown UPOS tag {_short(tag)}; expected one of {', '.join(labels)}",
                             "correct the tag in column 4")
        tokens.append(columns[1])
        tags.append(tag)
    if tokens:
        examples.append(TaggingExample(tuple(tokens), tuple(tags)))
    return examples


_CCG_LEAF = re.compile(r"\(<L (\S+) (\S+) (\S+) (\S+) (\S+)>\)")
_CCG_FIX = ("give CCGbank's AUTO files (an 'ID=...' line, then the derivation with its (<L category POS POS "
            "word category>) leaves) or jiant's CCG TSV (tokens<TAB>supertags)")


def read_ccg_auto(path: str) -> list[TaggingExample]:
    """CCGbank's AUTO format: per sentence an `ID=wsj_0001.1 PARSER=GOLD NUMPARSE=1` line, then
    the derivation on one line; the words and their supertags are its leaves in order."""
    examples = []
    expect_tree = False
    for number, line in enumerate(read_lines(path), start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("ID="):
            if expect_tree:
                raise data_error(path, number, "an ID line follows an ID line without a derivation", _CCG_FIX)
            expect_tree = True
            continue
        if not expect_tree:
            raise data_error(path, number, "a derivation without its ID= line", _CCG_FIX)
        leaves = _CCG_LEAF.findall(text)
        if not text.startswith("(<") or not leaves:
            raise data_error(path, number, "expected a derivation with (<L ...>) leaves", _CCG_FIX)
        examples.append(TaggingExample(tuple(leaf[3] for leaf in leaves), tuple(leaf[0] for leaf in leaves)))
        expect_tree = False
    return examples


def read_ccg_tsv(path: str, labels: Sequence[str] | None = None) -> list[TaggingExample]:
    """jiant's CCG layout: per line the space-tokenized sentence, a TAB, its supertags."""
    known = None if labels is None else set(labels)
    examples = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise data_error(path, number, f"expected 2 TAB-separated columns (tokens, supertags), found {len(columns)}",
                             _CCG_FIX)
        tokens, tags = columns[0].split(), columns[1].split()
        if len(tokens) != len(tags):
            raise data_error(path, number, f"{len(tokens)} tokens but {len(tags)} tags", "give one supertag per token")
        if known is not None:
            for tag in tags:
                if tag not in known:
                    raise data_error(path, number, f"unknown supertag {_short(tag)} (not in tags_to_id.json)",
                                     "add it to tags_to_id.json or correct the tag")
        examples.append(TaggingExample(tuple(tokens), tuple(tags)))
    return examples


# ---------------------------------------------------------------------------------------------
# Extractive QA: SQuAD v1.1 / v2.0 JSON (SQuAD, XQuAD, MLQA, TyDiQA-GoldP)
# ---------------------------------------------------------------------------------------------

_SQUAD_FIX = ('give SQuAD JSON: {"data": [{"paragraphs": [{"context": ..., "qas": [{"id", "question", '
              '"answers": [{"text", "answer_start"}]}]}]}]}')


def read_squad(path: str, *, unanswerable: bool = False, id_language: str | None = None) -> list[SpanQAExample]:
    """SpanQAExamples of a SQuAD-format file, in file order. Every answer must be the context's
    text at its answer_start. `unanswerable`: SQuAD v2.0 questions without answers
    (is_impossible) are kept with empty answers. `id_language`: keep the questions whose id starts
    with "<id_language>-" (TyDiQA's combined files)."""
    document = read_json(path, _SQUAD_FIX)
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise data_error(path, 1, 'expected a JSON object with a "data" list', _SQUAD_FIX)
    examples = []
    for i, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise data_error(path, ("data", i), 'an article without a "paragraphs" list', _SQUAD_FIX)
        for j, paragraph in enumerate(paragraphs):
            where = ("data", i, "paragraphs", j)
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("qas"), list):
                raise data_error(path, where, 'a paragraph needs a "context" string and a "qas" list', _SQUAD_FIX)
            context = paragraph["context"]
            for k, qa in enumerate(paragraph["qas"]):
                qa_where = where + ("qas", k)
                example = _squad_question(path, qa_where, qa, context, unanswerable)
                if id_language is None or example.id.split("-")[0] == id_language:
                    examples.append(example)
    return unique_question_ids(examples, path)


class RepeatedIdWarning(UserWarning):
    """A QA file repeats question ids (see `unique_question_ids`)."""


def unique_question_ids(examples: list[SpanQAExample], source: str) -> list[SpanQAExample]:
    """The examples with unique ids, in order; one warning naming `source` when ids repeat.

    QA predictions are keyed by question id, so ids must be unique. The official files' ids are
    (SQuAD hashes, TyDiQA "<language>-<number>"), but copies re-exported by other tools need not
    be: XTREME's own tydiqa.goldp.en.train.json (the shared sample) numbers questions per
    article, so its 3696 questions share 67 ids ("0", "1", ...). A repeat that is the same
    question (question, context and answers equal) is dropped; a repeat with different content
    is kept under "<id>#<n>", n = 2, 3, ... in file order (the first keeps its id; a suffix
    already in use is skipped).
    """
    ids = {e.id for e in examples}
    if len(ids) == len(examples):
        return examples
    taken = set(ids)
    seen: dict[str, list[SpanQAExample]] = {}
    kept, dropped, renamed = [], 0, {}
    for example in examples:
        earlier = seen.setdefault(example.id, [])
        if example in earlier:
            dropped += 1
            continue
        earlier.append(example)
        if len(earlier) > 1:
            n = len(earlier)
            while f"{example.id}#{n}" in taken:
                n += 1
            taken.add(f"{example.id}#{n}")
            renamed[example.id] = renamed.get(example.id, 0) + 1
            example = replace(example, id=f"{example.id}#{n}")
        kept.append(example)
    parts = []
    if renamed:
        most = max(renamed, key=renamed.get)
        parts.append(f"{sum(renamed.values())} questions whose id repeats with different content were renamed "
                     f"'<id>#<n>' ({len(renamed)} ids; e.g. {most!r} is used {renamed[most] + 1} times)")
    if dropped:
        parts.append(f"{dropped} exact repeats of a question were dropped")
    warnings.warn(f"{source}: question ids are not unique: {'; '.join(parts)}; predictions are keyed by the new ids",
                  RepeatedIdWarning, stacklevel=2)
    return kept


def _squad_question(path: str, where: tuple, qa: Any, context: str, unanswerable: bool) -> SpanQAExample:
    if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa \
            or not isinstance(qa.get("answers"), list):
        raise data_error(path, where, 'a question needs "id", "question" and an "answers" list', _SQUAD_FIX)
    answers, starts = [], []
    for m, answer in enumerate(qa["answers"]):
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) \
                or not isinstance(answer.get("answer_start"), int):
            raise data_error(path, where + ("answers", m), 'an answer needs "text" and an integer "answer_start"',
                             _SQUAD_FIX)
        text, start = answer["text"], answer["answer_start"]
        if not text:
            raise data_error(path, where + ("answers", m), f"question {qa['id']}: empty answer text (XTREME blanks the "
                             "answers of its test files)", "use the original labelled file (see docs/tasks.md)")
        if context[start:start + len(text)] != text:
            raise data_error(path, where + ("answers", m), f"question {qa['id']}: answer {_short(text, 40)} is not "
                             f"the context's text at answer_start {start}", "correct answer_start")
        answers.append(text)
        starts.append(start)
    if not answers:
        if not unanswerable:
            raise data_error(path, where, f"question {qa['id']} has no answer",
                             "give at least one answer (unanswerable questions belong to SQuAD v2.0: squad_v2)")
        if qa.get("is_impossible") is False:
            raise data_error(path, where, f"question {qa['id']} has no answer but is_impossible is false",
                             "give its answers or set is_impossible to true")
    return SpanQAExample(str(qa["id"]), qa["question"], context, tuple(answers), tuple(starts))


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------

def _require(path: str, location: Location, record: dict, keys: Sequence[str], fix: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise data_error(path, location, f"missing field(s) {', '.join(missing)}", fix)


def _choice_label(path: str, location: Location, value: Any, count: int, fix: str) -> int:
    try:
        label = int(str(value).strip())
    except ValueError:
        label = -1
    if not 0 <= label < count or isinstance(value, bool):
        raise data_error(path, location, f"unknown label {_short(value)}; expected a choice index 0 to {count - 1}", fix)
    return label


_COPA_FIX = 'one JSON object per line: {"premise", "choice1", "choice2", "question": "cause"|"effect", "label": 0|1}'


def read_copa(path: str) -> list[MultipleChoiceExample]:
    """COPA / XCOPA JSON lines; `question` is "cause" or "effect"."""
    examples = []
    for line, record in read_jsonl(path, _COPA_FIX):
        _require(path, line, record, ("premise", "choice1", "choice2", "question", "label"), _COPA_FIX)
        if record["question"] not in ("cause", "effect"):
            raise data_error(path, line, f"question must be 'cause' or 'effect', found {_short(record['question'])}",
                             _COPA_FIX)
        label = _choice_label(path, line, record["label"], 2, _COPA_FIX)
        examples.append(MultipleChoiceExample(record["premise"], (record["choice1"], record["choice2"]), label,
                                              record["question"]))
    return examples


_HELLASWAG_FIX = 'HellaSwag JSON lines: {"ctx_a", "ctx_b", "endings": [4 strings], "label": 0-3}'


def read_hellaswag(path: str) -> list[MultipleChoiceExample]:
    """HellaSwag JSON lines: context ctx_a; each choice is ctx_b followed by an ending."""
    examples = []
    for line, record in read_jsonl(path, _HELLASWAG_FIX):
        _require(path, line, record, ("ctx_a", "ctx_b", "endings", "label"), _HELLASWAG_FIX)
        endings = record["endings"]
        if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) for e in endings):
            raise data_error(path, line, "endings must be a list of 4 strings", _HELLASWAG_FIX)
        label = _choice_label(path, line, record["label"], 4, _HELLASWAG_FIX)
        choices = tuple(f"{record['ctx_b']} {ending}".strip() for ending in endings)
        examples.append(MultipleChoiceExample(record["ctx_a"], choices, label))
    return examples


_SWAG_FIX = "SWAG CSV with header video-id, fold-ind, startphrase, sent1, sent2, gold-source, ending0..ending3, label"


def read_swag(path: str) -> list[MultipleChoiceExample]:
    """SWAG CSV: context sent1; each choice is sent2 followed by an ending."""
    columns = ("sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label")
    examples = []
    for line, row in read_csv_dicts(path, columns, _SWAG_FIX):
        label = _choice_label(path, line, row["label"], 4, _SWAG_FIX)
        choices = tuple(f"{row['sent2']} {row[f'ending{i}']}".strip() for i in range(4))
        examples.append(MultipleChoiceExample(row["sent1"], choices, label))
    return examples


_COSMOS_FIX = "Cosmos QA CSV with header id, context, question, answer0..answer3, label (or its JSON lines)"


def read_cosmosqa(path: str) -> list[MultipleChoiceExample]:
    """Cosmos QA, CSV (train.csv, valid.csv) or JSON lines: context, question, answer0..3, label."""
    keys = ("context", "question", "answer0", "answer1", "answer2", "answer3", "label")
    if path.lower().endswith(".jsonl"):
        records: list[tuple[Location, dict]] = list(read_jsonl(path, _COSMOS_FIX))
        for line, record in records:
            _require(path, line, record, keys, _COSMOS_FIX)
    else:
        records = list(read_csv_dicts(path, keys, _COSMOS_FIX))
    examples = []
    for line, record in records:
        label = _choice_label(path, line, record["label"], 4, _COSMOS_FIX)
        examples.append(MultipleChoiceExample(record["context"], tuple(record[f"answer{i}"] for i in range(4)), label,
                                              record["question"]))
    return examples


_CSQA_FIX = ('CommonsenseQA JSON lines: {"question": {"stem", "choices": [{"label", "text"}]}, "answerKey"} '
             '(official) or {"question", "choices": {"label": [...], "text": [...]}, "answerKey"} (HF)')


def read_commonsenseqa(path: str) -> list[MultipleChoiceExample]:
    """CommonsenseQA JSON lines, the official layout or the HF one; context is the question stem."""
    examples = []
    for line, record in read_jsonl(path, _CSQA_FIX):
        _require(path, line, record, ("question", "answerKey"), _CSQA_FIX)
        question = record["question"]
        if isinstance(question, dict):  # official
            stem, choices = question.get("stem"), question.get("choices")
            if not isinstance(stem, str) or not isinstance(choices, list) \
                    or not all(isinstance(c, dict) and "label" in c and "text" in c for c in choices):
                raise data_error(path, line, "question needs a stem and a list of {label, text} choices", _CSQA_FIX)
            keys, texts = [c["label"] for c in choices], [c["text"] for c in choices]
        else:  # HF
            choices = record.get("choices")
            if not isinstance(question, str) or not isinstance(choices, dict) \
                    or not isinstance(choices.get("label"), list) or not isinstance(choices.get("text"), list) \
                    or len(choices["label"]) != len(choices["text"]):
                raise data_error(path, line, "needs a question string and choices {label: [...], text: [...]} of one length",
                                 _CSQA_FIX)
            stem, keys, texts = question, choices["label"], choices["text"]
        if keys != ["A", "B", "C", "D", "E"]:
            raise data_error(path, line, f"expected the 5 choices A to E, found {_short(keys)}", _CSQA_FIX)
        if record["answerKey"] not in keys:
            raise data_error(path, line, f"unknown label {_short(record['answerKey'])}; expected one of A, B, C, D, E",
                             _CSQA_FIX)
        examples.append(MultipleChoiceExample(stem, tuple(texts), keys.index(record["answerKey"])))
    return examples


_PIQA_FIX = 'PIQA: <split>.jsonl with {"goal", "sol1", "sol2"} per line and <split>-labels.lst with 0 or 1 per line'


def read_piqa(path: str, labels_path: str) -> list[MultipleChoiceExample]:
    """PIQA: questions in JSON lines, labels one per line in a separate aligned .lst file."""
    records = read_jsonl(path, _PIQA_FIX)
    label_lines = [(n, line.strip()) for n, line in enumerate(read_lines(labels_path), start=1) if line.strip()]
    if len(label_lines) != len(records):
        at = label_lines[len(records)][0] if len(label_lines) > len(records) else len(label_lines) + 1
        raise data_error(labels_path, at, f"{len(label_lines)} labels for the {len(records)} questions of "
                         f"{os.path.basename(path)}", "give one label per question, in order")
    examples = []
    for (line, record), (label_line, raw) in zip(records, label_lines):
        _require(path, line, record, ("goal", "sol1", "sol2"), _PIQA_FIX)
        label = _choice_label(labels_path, label_line, raw, 2, _PIQA_FIX)
        examples.append(MultipleChoiceExample(record["goal"], (record["sol1"], record["sol2"]), label))
    return examples


# ---------------------------------------------------------------------------------------------
# Retrieval: BUCC, Tatoeba, LAReQA, Mewsli-X
# ---------------------------------------------------------------------------------------------

_BUCC_FIX = "BUCC 2018 files: <lang>-en.<split>.<lang> and .en with id<TAB>sentence per line, .gold with <lang-id><TAB><en-id>"


def _read_id_sentences(path: str) -> tuple[list[str], list[str], dict[str, int]]:
    ids, sentences, lines = [], [], {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise data_error(path, number, f"expected 2 TAB-separated columns (id, sentence), found {len(columns)}",
                             _BUCC_FIX)
        if columns[0] in lines:
            raise data_error(path, number, f"id {_short(columns[0])} repeats line {lines[columns[0]]}", _BUCC_FIX)
        lines[columns[0]] = number
        ids.append(columns[0])
        sentences.append(columns[1])
    return ids, sentences, lines


def read_bucc(source_path: str, english_path: str, gold_path: str) -> RetrievalCorpus:
    source_ids, source_sentences, source_lines = _read_id_sentences(source_path)
    target_ids, target_sentences, target_lines = _read_id_sentences(english_path)
    gold = []
    for number, line in enumerate(read_lines(gold_path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise data_error(gold_path, number, f"expected 2 TAB-separated columns (source id, English id), "
                             f"found {len(columns)}", _BUCC_FIX)
        if columns[0] not in source_lines or columns[1] not in target_lines:
            missing = columns[0] if columns[0] not in source_lines else columns[1]
            raise data_error(gold_path, number, f"id {_short(missing)} is in no sentence file",
                             "use the gold file of the same language pair and split")
        gold.append((columns[0], columns[1]))
    return RetrievalCorpus(tuple(source_ids), tuple(source_sentences), tuple(target_ids), tuple(target_sentences),
                           tuple(gold))


def read_tatoeba(source_path: str, english_path: str) -> RetrievalCorpus:
    """LASER's Tatoeba files: line i of the source file translates line i of the English file.
    Ids are 0-based line indices as strings ("0", "1", ...), XTREME's prediction format."""
    source = read_lines(source_path)
    english = read_lines(english_path)
    if len(source) != len(english):
        longer = source_path if len(source) > len(english) else english_path
        raise data_error(longer, min(len(source), len(english)) + 1,
                         f"{len(source)} source lines but {len(english)} English lines",
                         "give line-aligned files (LASER's tatoeba.<xxx>-eng.<xxx> and .eng)")
    ids = tuple(str(i) for i in range(len(source)))
    return RetrievalCorpus(ids, tuple(source), ids, tuple(english), tuple((i, i) for i in ids))


_LAREQA_FIX = ('LAReQA XQuAD-R JSON: SQuAD JSON whose paragraphs also carry "sentence_breaks" '
               '([[start, end], ...]) and one answer per question')


def read_lareqa_file(path: str, language: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """One XQuAD-R file: (questions [(question uid, xling id, text)], candidates [(candidate uid,
    xling id of the question it answers or "", sentence)]). Candidate uids are
    "<language>_<paragraph number>_<sentence number>" and question uids "<id>_<language>",
    as in XTREME's LAReQA evaluation."""
    document = read_json(path, _LAREQA_FIX)
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise data_error(path, 1, 'expected a JSON object with a "data" list', _LAREQA_FIX)
    questions, candidates = [], []
    number = 0
    for i, article in enumerate(articles):
        for j, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            where = ("data", i, "paragraphs", j)
            number += 1
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("sentence_breaks"), list) or not isinstance(paragraph.get("qas"), list):
                raise data_error(path, where, 'a paragraph needs "context", "sentence_breaks" and "qas"', _LAREQA_FIX)
            context, breaks = paragraph["context"], paragraph["sentence_breaks"]
            if not all(isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) for x in b)
                       and 0 <= b[0] < b[1] <= len(context) for b in breaks):
                raise data_error(path, where + ("sentence_breaks",), "sentence_breaks must be [start, end] pairs "
                                 "inside the context", _LAREQA_FIX)
            answers_of: dict[int, list[str]] = {}
            for k, qa in enumerate(paragraph["qas"]):
                qa_where = where + ("qas", k)
                if not isinstance(qa, dict) or "id" not in qa or not isinstance(qa.get("question"), str) \
                        or not isinstance(qa.get("answers"), list) or len(qa["answers"]) != 1 \
                        or not isinstance(qa["answers"][0], dict) \
                        or not isinstance(qa["answers"][0].get("answer_start"), int):
                    raise data_error(path, qa_where, 'a question needs "id", "question" and exactly one answer with '
                                     'an integer "answer_start"', _LAREQA_FIX)
                start = qa["answers"][0]["answer_start"]
                sentence = next((s for s, (b0, b1) in enumerate(breaks) if b0 <= start < b1), None)
                if sentence is None:
                    raise data_error(path, qa_where, f"question {qa['id']}: answer_start {start} is in no sentence",
                                     "correct answer_start or sentence_breaks")
                xling = str(qa["id"])
                questions.append((f"{xling}_{language}", xling, qa["question"]))
                answers_of.setdefault(sentence, []).append(xling)
            for s, (b0, b1) in enumerate(breaks):
                for xling in answers_of.get(s, [""]):
                    candidates.append((f"{language}_{number}_{s}", xling, context[b0:b1]))
    return questions, candidates


def lareqa_corpus(files: dict[str, str], language: str) -> RetrievalCorpus:
    """The questions of `language` against the candidate answer sentences of every language in
    `files` ({language: path}); gold: each question with every sentence, in any language,
    that answers the question of the same xling id."""
    questions, pool = [], []
    for lang, path in files.items():
        lang_questions, lang_candidates = read_lareqa_file(path, lang)
        if lang == language:
            questions = lang_questions
        pool.extend(lang_candidates)
    target_ids, target_sentences, answering = [], [], {}
    seen = set()
    for uid, xling, sentence in pool:
        if uid not in seen:
            seen.add(uid)
            target_ids.append(uid)
            target_sentences.append(sentence)
        if xling:
            answering.setdefault(xling, []).append(uid)
    gold = tuple((uid, candidate) for uid, xling, _ in questions for candidate in answering.get(xling, []))
    return RetrievalCorpus(tuple(q[0] for q in questions), tuple(q[2] for q in questions), tuple(target_ids),
                           tuple(target_sentences), gold)


_MEWSLI_FIX = ("Mewsli-X JSON lines: wikinews_mentions/<split>-<lang>.jsonl with {context: {text, language, "
               "sentence_spans}, mentions: [{example_id, mention_span: {start, end, text}, entity_id}]} and "
               "candidate_set_entities.jsonl with {entity_id, title, description, sentence_spans}")


def _spans(value: Any, length: int) -> list[tuple[int, int]] | None:
    if not isinstance(value, list):
        return None
    spans = []
    for span in value:
        if not isinstance(span, dict) or not isinstance(span.get("start"), int) or not isinstance(span.get("end"), int) \
                or not 0 <= span["start"] < span["end"] <= length:
            return None
        spans.append((span["start"], span["end"]))
    return spans


def _mewsli_normalise(text: str) -> str:
    """XTREME-R's normalisation of Mewsli-X strings (utils_mewslix): line breaks become spaces,
    then each pair of spaces one space (a single pass, as there), and the ends are stripped."""
    return " ".join(text.splitlines()).replace("  ", " ").strip()


# A brace pair already in the text would look like the mention markers: XTREME-R rewrites it as
# parentheses ("{x}" -> "(x)") before marking the mention.
_MEWSLI_BRACES = re.compile(r"\{(.*?)\}")


def read_mewsli_entities(path: str) -> tuple[list[str], list[str]]:
    """Entity ids and their descriptions: the sentences joined by spaces and normalised as
    XTREME-R's preprocess_entity_description does (the whole description when it has no
    sentence spans)."""
    ids, texts = [], []
    for line, record in read_jsonl(path, _MEWSLI_FIX):
        _require(path, line, record, ("entity_id", "description", "sentence_spans"), _MEWSLI_FIX)
        description = record["description"]
        spans = _spans(record["sentence_spans"], len(description)) if isinstance(description, str) else None
        if spans is None:
            raise data_error(path, line, "sentence_spans must be {start, end} spans inside the description", _MEWSLI_FIX)
        text = " ".join(description[a:b] for a, b in spans) if spans else description
        ids.append(str(record["entity_id"]))
        texts.append(_mewsli_normalise(text))
    return ids, texts


def read_mewsli_mentions(path: str, language: str) -> list[tuple[int, str, str, str]]:
    """(line, example id, query text, gold entity id) per mention. The query is XTREME-R's
    (utils_mewslix.preprocess_mention): the mention, a colon, and the sentence holding it with
    the mention in braces, spaced on both sides, other braces turned into parentheses:
    "Smith: The verdict for { Smith } , who stepped down". A mention outside every sentence span
    (or a context without spans) gets the whole text as its sentence."""
    mentions = []
    for line, record in read_jsonl(path, _MEWSLI_FIX):
        _require(path, line, record, ("context", "mentions"), _MEWSLI_FIX)
        context = record["context"]
        if not isinstance(context, dict) or not isinstance(context.get("text"), str):
            raise data_error(path, line, "context needs a text", _MEWSLI_FIX)
        if context.get("language") != language:
            raise data_error(path, line, f"context language {_short(context.get('language'))} in the file of {language!r}",
                             "use the file of the right language")
        text = context["text"]
        sentences = _spans(context.get("sentence_spans", []), len(text))
        if sentences is None or not isinstance(record["mentions"], list):
            raise data_error(path, line, "sentence_spans must be {start, end} spans inside the text, mentions a list",
                             _MEWSLI_FIX)
        for mention in record["mentions"]:
            span = mention.get("mention_span") if isinstance(mention, dict) else None
            if not isinstance(span, dict) or not _spans([span], len(text)) or "example_id" not in mention \
                    or not mention.get("entity_id"):
                raise data_error(path, line, "a mention needs example_id, entity_id (not blank: use the labelled dev "
                                 "file) and a mention_span inside the text", _MEWSLI_FIX)
            start, end = span["start"], span["end"]
            if span.get("text") is not None and text[start:end] != span["text"]:
                raise data_error(path, line, f"mention {mention['example_id']}: {_short(span['text'], 40)} is not the "
                                 f"text at {start}-{end}", "correct the mention span")
            a, b = next(((s, e) for s, e in sentences if s <= start and end <= e), (0, len(text)))
            left = _MEWSLI_BRACES.sub(r"(\1)", text[a:start])
            right = _MEWSLI_BRACES.sub(r"(\1)", text[end:b])
            query = f"{text[start:end]}: {left} {{ {text[start:end]} }} {right}"
            mentions.append((line, str(mention["example_id"]), _mewsli_normalise(query), str(mention["entity_id"])))
    return mentions


# ---------------------------------------------------------------------------------------------
# Finding a task's local files
# ---------------------------------------------------------------------------------------------

def _has_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def resolve_files(task: str, split: str, language: str, options: DataOptions, candidates: Sequence[str],
                  fix: str, **fields: str) -> tuple[str, ...]:
    """The local file(s) for (task, split, language): the DataOptions.files override if there is
    one, else the first of `candidates` that exists. Candidates are relative to data_dir; they
    may hold "{lang}" and the other `fields`, and glob patterns (all matches, sorted, are read
    in turn). A missing file is a TaskDataError naming the paths tried."""
    fields = {"lang": language, **fields}
    base = options.data_dir or "."
    override = options.file_override(task, split, language)
    if override is not None:
        try:
            override = override.format(**fields)
        except (KeyError, IndexError, ValueError):
            pass  # braces that are part of the path
        path = os.path.join(base, override)
        found = sorted(glob.glob(path)) if _has_glob(path) else ([path] if os.path.exists(path) else [])
        if not found:
            raise TaskDataError(_one_line(
                f"{path}: file not found (DataOptions.files['{task}:{split}'] points at it); "
                f"fix: correct the override or remove it to use the default layout"))
        return tuple(found)
    tried = []
    for candidate in candidates:
        relative = candidate.format(**fields)
        path = os.path.join(base, relative)
        tried.append(relative)
        if _has_glob(relative):
            found = sorted(glob.glob(path))
            if found:
                return tuple(found)
        elif os.path.exists(path):
            return (path,)
    raise TaskDataError(_one_line(
        f"{os.path.join(base, tried[0]) if tried else base}: file not found ({task} {split} data for "
        f"language '{language}'; looked for {', '.join(tried)} under {base}); fix: {fix}, "
        f"or point DataOptions.files['{task}:{split}'] at the file"))


def is_local(task: str, split: str, language: str, options: DataOptions) -> bool:
    """Whether (task, split, language) is read from local files: data_dir is set, or a
    DataOptions.files override names this split."""
    return options.data_dir is not None or options.file_override(task, split, language) is not None


# ---------------------------------------------------------------------------------------------
# The HF hub (lazy)
# ---------------------------------------------------------------------------------------------

def hub_splits(task: str, dataset_id: str, config: str | None, splits: Sequence[str]) -> tuple[Any, str]:
    """(the first of `splits` that the hub dataset has, its name), loaded with
    `datasets.load_dataset(dataset_id, config)`. Any failure (no network, unknown config) is a
    one-line TaskDataError that says how to read local files instead."""
    try:
        import datasets  # lazy: only the hub path needs it
        loaded = datasets.load_dataset(dataset_id, config)
    except Exception as error:  # noqa: BLE001 - every hub failure becomes the same clear error
        reason = f"{type(error).__name__}: {error}"
        if len(reason) > 300:
            reason = reason[:297] + "..."
        name = dataset_id + (f" ({config})" if config else "")
        raise TaskDataError(_one_line(
            f"{task}: cannot load {name} from the HF hub ({reason}); fix: check the network/HF_HUB_OFFLINE, "
            f"or set DataOptions.data_dir to a local copy in the official layout (docs/tasks.md)")) from None
    for split in splits:
        if split in loaded:
            return loaded[split], split
    raise TaskDataError(_one_line(
        f"{task}: {dataset_id} ({config}) has none of the splits {', '.join(splits)} (it has "
        f"{', '.join(loaded)}); fix: set DataOptions.data_dir to a local copy (docs/tasks.md)"))


def hub_split_names(split: str) -> tuple[str, ...]:
    """The hub split(s) our split reads: "train" -> train, "dev" -> validation."""
    return ("train",) if split == "train" else ("validation",)


def hub_pairs(task: str, dataset_id: str, config: str | None, splits: Sequence[str], a: str, b: str,
              labels: Sequence[str], label_map: dict[str, str] | None = None,
              label_column: str = "label") -> list[PairExample]:
    """PairExamples from hub columns `a`, `b` and the (ClassLabel) label column; unlabelled rows
    (label -1: GLUE test splits, SNLI pairs without consensus) are left out."""
    dataset, _ = hub_splits(task, dataset_id, config, splits)
    label_map = label_map or {}
    examples = []
    for row in dataset:
        raw = row[label_column]
        if raw is None or raw == -1:
            continue
        label = class_name(dataset, label_column, raw)
        label = label_map.get(label, label)
        if label in labels:
            examples.append(PairExample(row[a], row[b], label))
    return examples


def hub_squad(task: str, dataset_id: str, config: str | None, splits: Sequence[str],
              id_language: str | None = None) -> list[SpanQAExample]:
    """SpanQAExamples from a hub dataset in HF's SQuAD layout (id, question, context,
    answers{text, answer_start}); `id_language` keeps the ids starting with "<id_language>-"."""
    dataset, _ = hub_splits(task, dataset_id, config, splits)
    examples = []
    for row in dataset:
        if id_language is not None and not str(row["id"]).startswith(id_language + "-"):
            continue
        answers = row["answers"]
        examples.append(SpanQAExample(str(row["id"]), row["question"], row["context"], tuple(answers["text"]),
                                      tuple(int(s) for s in answers["answer_start"])))
    return unique_question_ids(examples, f"{dataset_id} ({config or 'default'}, {'+'.join(splits)})")


def local_or_hub(task: str, locate, read, hub):
    """A TaskSpec loader: read(locate(split, language, options), split, language) when the
    split is local (`is_local`), else hub(split, language)."""

    def load(split: str, language: str, options: DataOptions) -> list:
        if not is_local(task, split, language, options):
            return hub(split, language)
        paths = locate(split, language, options)
        examples = read(paths, split, language)
        if not examples:  # e.g. a combined multilingual file without this language
            raise data_error(paths[0], None, f"no {task} examples for language '{language}' in "
                             f"{', '.join(os.path.basename(p) for p in paths)}",
                             "use a file that holds this language's examples")
        return examples

    return load


def class_name(dataset: Any, column: str, value: Any) -> str:
    """A hub label as a string: the ClassLabel name of an integer, else the value itself."""
    feature = getattr(dataset, "features", {}).get(column)
    inner = getattr(feature, "feature", feature)  # a Sequence(ClassLabel) for tag lists
    if isinstance(value, int) and hasattr(inner, "int2str"):
        return inner.int2str(value)
    return str(value)


__all__ = [
    "Location", "PairRecord", "class_name", "data_error", "hub_pairs", "hub_split_names", "hub_splits", "hub_squad",
    "is_local", "local_or_hub", "json_line", "lareqa_corpus",
    "pair_examples", "read_bucc", "read_ccg_auto", "read_ccg_tsv", "read_commonsenseqa", "read_conllu", "read_copa",
    "read_cosmosqa", "read_csv_dicts", "read_csv_rows", "read_hellaswag", "read_json", "read_jsonl", "read_lareqa_file",
    "read_lines", "read_mewsli_entities", "read_mewsli_mentions", "read_pairs", "read_piqa", "read_squad",
    "read_swag", "read_tatoeba", "read_text", "read_token_tags", "resolve_files", "split_lines", "split_tsv",
    "unquote_field", "unique_question_ids", "RepeatedIdWarning",
]
