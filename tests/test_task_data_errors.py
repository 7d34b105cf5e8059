"""Malformed task data: every problem is a TaskDataError whose message is one line naming the file,
the line (where there is one) and the fix.

Each case writes a small broken file into a temporary data_dir in the task's official layout;
the expected line numbers are counted by hand in the comments.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from xstilts.tasks import DataOptions, TaskDataError, get_task
from xstilts.tasks.formats import json_line, read_conllu, read_pairs, read_squad


def write(root: Path, relative: str, content: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def error(task: str, split: str, language: str, options: DataOptions) -> str:
    with pytest.raises(TaskDataError) as caught:
        get_task(task).load(split, language, options)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert "fix: " in message, message
    return message


def at(path: Path, line: int | None) -> str:
    return f"{path}: line {line}: " if line is not None else f"{path}: "


# ---------------------------------------------------------------------------------------------
# Missing files
# ---------------------------------------------------------------------------------------------

def test_missing_file_names_the_paths_tried(tmp_path):
    message = error("xnli", "dev", "sw", DataOptions(str(tmp_path)))
    assert message.startswith(f"{tmp_path}/xnli/dev-sw.tsv: file not found")
    assert "xnli/XNLI-1.0/xnli.dev.tsv" in message and "DataOptions.files['xnli:dev']" in message


def test_missing_override_file(tmp_path):
    options = DataOptions(str(tmp_path), files={"xnli:train": "xnli/nothing-{lang}.tsv"})
    message = error("xnli", "train", "en", options)
    assert message.startswith(f"{tmp_path}/xnli/nothing-en.tsv: file not found (DataOptions.files['xnli:train']")


def test_missing_sibling_file_of_a_multi_file_format(tmp_path):
    write(tmp_path, "bucc2018/de-en.dev.de", "de-1\tHallo\n")
    write(tmp_path, "bucc2018/de-en.dev.en", "en-1\tHello\n")
    message = error("bucc2018", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(tmp_path / "bucc2018" / "de-en.dev.gold", None) + "file not found")
    write(tmp_path, "piqa/valid.jsonl", '{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    message = error("piqa", "dev", "en", DataOptions(str(tmp_path)))
    assert message.startswith(f"{tmp_path}/piqa/valid-labels.lst: file not found")


def test_ccg_without_the_licensed_ccgbank(tmp_path):
    for options in (DataOptions(str(tmp_path)), DataOptions()):
        message = error("ccg", "train", "en", options)
        assert "CCGbank (LDC2005T13) is licensed by the LDC" in message
        assert "DataOptions.files['ccg:train']" in message
    with pytest.raises(TaskDataError, match="licensed by the LDC"):
        get_task("ccg").resolved(DataOptions(str(tmp_path)))


def test_tasks_without_a_training_split_or_a_language(tmp_path):
    assert "no 'train' split" in error("tatoeba", "train", "en", DataOptions(str(tmp_path)))
    assert "no 'train' split" in error("bucc2018", "train", "en", DataOptions(str(tmp_path)))
    assert "English is the target side" in error("tatoeba", "dev", "en", DataOptions(str(tmp_path)))
    assert "not on the HF hub" in error("lareqa", "dev", "en", DataOptions())


def test_xtreme_tatoeba_layout_is_refused_with_the_reason(tmp_path):
    write(tmp_path, "tatoeba/de-en.de", "Hallo\n")
    write(tmp_path, "tatoeba/de-en.en", "Hello\n")
    message = error("tatoeba", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(f"{tmp_path}/tatoeba/de-en.de: XTREME's tatoeba layout sorts the English side")


# ---------------------------------------------------------------------------------------------
# Bad encodings and bad JSON
# ---------------------------------------------------------------------------------------------

def test_bad_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "xnli/dev-fr.tsv", b"a\tb\tneutral\nc\td\xff\tneutral\n")  # the bad byte is on line 2
    assert error("xnli", "dev", "fr", DataOptions(str(tmp_path))).startswith(at(path, 2) + "not valid UTF-8")


def test_bad_json_document_names_the_line(tmp_path):
    # line 1 {   line 2 "data": [   line 3 {"paragraphs": [}  <- the bad bracket
    path = write(tmp_path, "squad/dev-v1.1.json", '{\n "data": [\n  {"paragraphs": [}\n ]\n}\n')
    assert error("squad_v1", "dev", "en", DataOptions(str(tmp_path))).startswith(at(path, 3) + "bad JSON")


def test_bad_json_line_names_the_line(tmp_path):
    good = '{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 0}'
    path = write(tmp_path, "xcopa/val-et.jsonl", f"{good}\n{good[:-5]}\n")
    assert error("xcopa", "dev", "et", DataOptions(str(tmp_path))).startswith(at(path, 2) + "bad JSON")


def test_json_line_finds_nested_objects(tmp_path):
    path = write(tmp_path, "doc.json", '{"data": [\n {"a": 1},\n {"b": [\n   {"c": 2}\n ]}\n]}\n')
    assert json_line(str(path), ("data", 0)) == 2
    assert json_line(str(path), ("data", 1, "b", 0)) == 4
    assert json_line(str(path), ("data", 9)) == 1  # a missing key: the deepest existing container


# ---------------------------------------------------------------------------------------------
# Wrong column counts
# ---------------------------------------------------------------------------------------------

def test_wrong_column_count_in_xtreme_tsv(tmp_path):
    path = write(tmp_path, "xnli/dev-fr.tsv", "a\tb\tneutral\nc\td\n")  # line 2 has 2 columns
    message = error("xnli", "dev", "fr", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "expected 3 TAB-separated columns (text_a, text_b, label), found 2")
    assert "without labels" in message


def test_wrong_column_count_in_headed_tsv(tmp_path):
    path = write(tmp_path, "qqp/dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                          "1\t1\t2\tq one\tq two\t1\n2\t3\t4\tq three\n")
    message = error("qqp", "dev", "en", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 3) + "expected 6 TAB-separated columns as in the header, found 4")


def test_wrong_field_count_in_csv(tmp_path):
    # the record of lines 2-3 (a quoted newline) is fine; the one on line 4 lacks the label
    path = write(tmp_path, "cosmosqa/valid.csv", 'id,context,question,answer0,answer1,answer2,answer3,label\n'
                                                 'a,"two\nlines",q,w,x,y,z,1\nb,c,q,w,x,y,z\n')
    message = error("cosmosqa", "dev", "en", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 4) + "expected 8 CSV fields as in the header, found 7")


def test_missing_csv_column(tmp_path):
    path = write(tmp_path, "swag/val.csv", "sent1,sent2,ending0,label\nA,B,C,0\n")
    message = error("swag", "dev", "en", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 1) + "the CSV header lacks column(s) ending1, ending2, ending3")


def test_conllu_line_with_too_few_columns(tmp_path):
    path = write(tmp_path, "udpos/de_x-ud-test.conllu", "# text = Hallo Welt\n1\tHallo\thallo\tINTJ\t_\t_\t0\troot\t_\t_\n"
                                                        "2\tWelt\tWelt\tNOUN\t_\t_\t1\tvocative\t_\n")
    message = error("udpos", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 3) + "expected 10 TAB-separated CoNLL-U columns, found 9")


def test_bucc_lines_without_an_id(tmp_path):
    write(tmp_path, "bucc2018/de-en.dev.de", "de-1\tHallo\n")
    path = write(tmp_path, "bucc2018/de-en.dev.en", "en-1\tHello\nno id here\n")
    write(tmp_path, "bucc2018/de-en.dev.gold", "de-1\ten-1\n")
    message = error("bucc2018", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "expected 2 TAB-separated columns (id, sentence), found 1")


# ---------------------------------------------------------------------------------------------
# Tags that do not match their tokens
# ---------------------------------------------------------------------------------------------

def test_token_without_tag(tmp_path):
    path = write(tmp_path, "panx/dev-de.tsv", "Berlin\tB-LOC\n\nWien\n")  # line 3: a token and no tag
    message = error("panx", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 3) + "expected 2 TAB-separated columns (token, tag), found 1")
    assert "tags removed" in message


def test_ccg_tokens_and_tags_of_different_lengths(tmp_path):
    write(tmp_path, "ccg/ccg.train", "Mary runs .\tNP S[dcl]\\NP .\n")
    path = write(tmp_path, "ccg/ccg.dev", "John runs .\tNP S[dcl]\\NP .\nAnna sees it .\tNP (S[dcl]\\NP)/NP .\n")
    message = error("ccg", "dev", "en", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "4 tokens but 3 tags")


def test_ccg_auto_derivation_without_leaves(tmp_path):
    path = write(tmp_path, "ccg/ccgbank_1_1/data/AUTO/00/wsj_0001.auto",
                 "ID=wsj_0001.1 PARSER=GOLD NUMPARSE=1\n(<T S[dcl] 0 2> broken )\n")
    message = error("ccg", "dev", "en", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "expected a derivation with (<L ...>) leaves")


def test_piqa_labels_not_aligned_with_questions(tmp_path):
    line = '{"goal": "g", "sol1": "a", "sol2": "b"}\n'
    write(tmp_path, "piqa/valid.jsonl", line * 2)
    path = write(tmp_path, "piqa/valid-labels.lst", "0\n1\n1\n")  # line 3 is one label too many
    message = error("piqa", "dev", "en", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 3) + "3 labels for the 2 questions of valid.jsonl")


# ---------------------------------------------------------------------------------------------
# Unknown labels
# ---------------------------------------------------------------------------------------------

def test_unknown_nli_label(tmp_path):
    path = write(tmp_path, "xnli/dev-fr.tsv", "a\tb\tneutral\nc\td\tmaybe\n")
    message = error("xnli", "dev", "fr", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "unknown label 'maybe'; expected one of")
    assert "contradiction" in message


def test_unknown_label_in_a_json_document_names_the_record_line(tmp_path):
    records = {"0": {"text_a": "a", "text_b": "b", "label": "0"}, "1": {"text_a": "c", "text_b": "d", "label": "2"}}
    path = write(tmp_path, "qqp/qqp_train_sample1000.json", json.dumps(records, indent=4))
    # indent=4: line 1 "{", lines 2-6 record "0", line 7 '"1": {' opens record "1"
    message = error("qqp", "train", "en", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 7) + "unknown label '2'")


def test_unknown_tags(tmp_path):
    path = write(tmp_path, "panx/dev-de.tsv", "Berlin\tB-LOC\nist\tO\ngroß\tB-MISC\n")
    assert error("panx", "dev", "de", DataOptions(str(tmp_path))).startswith(at(path, 3) + "unknown tag 'B-MISC'")
    path = write(tmp_path, "udpos/de_x-ud-test.conllu", "1\tHallo\thallo\tGREETING\t_\t_\t0\troot\t_\t_\n")
    assert error("udpos", "dev", "de", DataOptions(str(tmp_path))).startswith(at(path, 1) + "unknown UPOS tag 'GREETING'")
    write(tmp_path, "ccg/ccg.train", "Mary runs .\tNP S[dcl]\\NP .\n")
    write(tmp_path, "ccg/tags_to_id.json", '{"NP": 0, ".": 1}')
    path = write(tmp_path, "ccg/ccg.dev", "John runs .\tNP S[dcl]\\NP .\n")
    assert error("ccg", "dev", "en", DataOptions(str(tmp_path))).startswith(at(path, 1) + "unknown supertag 'S[dcl]\\\\NP'")


def test_unknown_multiple_choice_labels(tmp_path):
    choices = [{"label": k, "text": k.lower()} for k in "ABCDE"]
    good = {"answerKey": "A", "question": {"stem": "s", "choices": choices}}
    path = write(tmp_path, "commonsenseqa/dev_rand_split.jsonl",
                 json.dumps(good) + "\n\n" + json.dumps({**good, "answerKey": "F"}) + "\n")  # line 3 (2 is blank)
    assert error("commonsenseqa", "dev", "en", DataOptions(str(tmp_path))).startswith(at(path, 3) + "unknown label 'F'")
    record = {"ctx_a": "a", "ctx_b": "b", "endings": ["1", "2", "3", "4"], "label": 7}
    path = write(tmp_path, "hellaswag/hellaswag_val.jsonl", json.dumps(record) + "\n")
    assert error("hellaswag", "dev", "en", DataOptions(str(tmp_path))).startswith(
        at(path, 1) + "unknown label 7; expected a choice index 0 to 3")
    path = write(tmp_path, "xcopa/val-et.jsonl", '{"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0}\n')
    assert error("xcopa", "dev", "et", DataOptions(str(tmp_path))).startswith(at(path, 1) + "question must be 'cause' or 'effect'")


# ---------------------------------------------------------------------------------------------
# QA files: misplaced or blanked answers
# ---------------------------------------------------------------------------------------------

def squad_text(answer: dict) -> str:
    # line 1 {"data": [{"paragraphs": [{"context": "Oslo is in Norway.", "qas": [
    # line 2   {"id": "q1", ... answers ...}
    return ('{"data": [{"paragraphs": [{"context": "Oslo is in Norway.", "qas": [\n'
            '  {"id": "q1", "question": "Where is Oslo?", "answers": [' + json.dumps(answer) + ']}\n'
            ']}]}]}\n')


def test_answer_not_at_its_offset(tmp_path):
    path = write(tmp_path, "xquad/xquad.de.json", squad_text({"text": "Norway", "answer_start": 3}))
    message = error("xquad", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "question q1: answer 'Norway' is not the context's text at answer_start 3")


def test_xtreme_blanked_answers_are_explained(tmp_path):
    path = write(tmp_path, "xquad/xquad.de.json", squad_text({"text": "", "answer_start": 0}))
    message = error("xquad", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "question q1: empty answer text (XTREME blanks the answers")
    fixture = Path(__file__).parent / "fixtures" / "tasks" / "data"
    options = DataOptions(str(fixture), files={"tydiqa:dev": "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json"})
    assert "XTREME blanks the answers" in error("tydiqa", "dev", "sw", options)


def test_unanswerable_question_outside_squad_v2(tmp_path):
    text = '{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q", "question": "?", "answers": []}]}]}]}'
    path = write(tmp_path, "squad/dev-v1.1.json", text)
    assert error("squad_v1", "dev", "en", DataOptions(str(tmp_path))).startswith(at(path, 1) + "question q has no answer")
    write(tmp_path, "squad/dev-v2.0.json", text)
    assert get_task("squad_v2").load("dev", "en", DataOptions(str(tmp_path)))[0].answers == ()


# ---------------------------------------------------------------------------------------------
# Retrieval ids
# ---------------------------------------------------------------------------------------------

def test_bucc_gold_id_without_a_sentence(tmp_path):
    write(tmp_path, "bucc2018/de-en.dev.de", "de-1\tHallo\n")
    write(tmp_path, "bucc2018/de-en.dev.en", "en-1\tHello\n")
    path = write(tmp_path, "bucc2018/de-en.dev.gold", "de-1\ten-1\nde-1\ten-9\n")
    message = error("bucc2018", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "id 'en-9' is in no sentence file")


def test_tatoeba_files_of_different_lengths(tmp_path):
    path = write(tmp_path, "tatoeba/tatoeba.deu-eng.deu", "a\nb\nc\n")  # line 3 has no English partner
    write(tmp_path, "tatoeba/tatoeba.deu-eng.eng", "a\nb\n")
    message = error("tatoeba", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 3) + "3 source lines but 2 English lines")


def test_mewsli_gold_entity_outside_the_candidate_set(tmp_path):
    write(tmp_path, "mewslix/candidate_set_entities.jsonl",
          '{"entity_id": "Q1", "title": "A", "description": "A is a place.", "sentence_spans": [{"start": 0, "end": 13}]}\n')
    context = {"language": "de", "text": "Wien ist groß.", "sentence_spans": [{"start": 0, "end": 14}]}
    mention = {"example_id": "m1", "mention_span": {"start": 0, "end": 4, "text": "Wien"}, "entity_id": "Q9"}
    path = write(tmp_path, "mewslix/wikinews_mentions/dev-de.jsonl",
                 json.dumps({"context": context, "mentions": []}) + "\n" +
                 json.dumps({"context": context, "mentions": [mention]}) + "\n")
    message = error("mewsli_x", "dev", "de", DataOptions(str(tmp_path)))
    assert message.startswith(at(path, 2) + "mention m1: gold entity Q9 is not in")


# ---------------------------------------------------------------------------------------------
# The readers directly
# ---------------------------------------------------------------------------------------------

def test_readers_raise_task_data_errors_with_one_line_messages(tmp_path):
    path = write(tmp_path, "pairs.tsv", "premise\thypothesis\tlabel\np\th\n")
    with pytest.raises(TaskDataError, match=r"pairs\.tsv: line 2: expected 3 TAB-separated columns as in the header"):
        read_pairs(str(path))
    path = write(tmp_path, "x.conllu", "1\ta\tb\n")
    with pytest.raises(TaskDataError, match=r"x\.conllu: line 1: expected 10"):
        read_conllu(str(path), ("NOUN",))
    path = write(tmp_path, "s.json", '["not", "squad"]')
    with pytest.raises(TaskDataError, match=r's\.json: line 1: expected a JSON object with a "data" list'):
        read_squad(str(path))


# ---------------------------------------------------------------------------------------------
# Repeated QA ids: not an error, made unique with one warning
# ---------------------------------------------------------------------------------------------

def _qa(qid: str, question: str, context: str = "Ana lives in Lima.", answer: str = "Lima") -> dict:
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}


def test_repeated_question_ids_are_deduplicated_or_renamed_with_one_warning(tmp_path):
    from xstilts.tasks.formats import RepeatedIdWarning

    context = "Ana lives in Lima."
    qas = [_qa("a", "Where does Ana live?"),
           _qa("a", "Where does Ana live?"),  # the same question again: dropped
           _qa("a", "Who lives in Lima?", answer="Ana"),  # another question under the same id: "a#3" ...
           _qa("a#2", "What is Lima?", answer="Lima"),  # ... because "a#2" is taken by this one
           _qa("b", "Which city?")]
    path = write(tmp_path, "tydiqa/tydiqa.goldp.en.train.json",
                 json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    with pytest.warns(RepeatedIdWarning) as caught:
        examples = get_task("tydiqa").load("train", "en", DataOptions(str(tmp_path)))
    assert [(e.id, e.question) for e in examples] == [
        ("a", "Where does Ana live?"), ("a#3", "Who lives in Lima?"), ("a#2", "What is Lima?"), ("b", "Which city?")]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{path}: question ids are not unique: ") and "\n" not in message
    assert "1 questions whose id repeats with different content were renamed" in message
    assert "1 exact repeats of a question were dropped" in message
    # unique ids: no warning, the examples come back as read
    write(tmp_path, "squad/train-v1.1.json", json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas[-1:]}]}]}))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedIdWarning)
        assert [e.id for e in get_task("squad_v1").load("train", "en", DataOptions(str(tmp_path)))] == ["b"]
