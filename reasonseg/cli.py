"""The `reasonseg` command line: parse, call the library, print. User errors exit 2 with one line."""
from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from pathlib import Path

import typer

from .commands import STAGE_MODULES
from .commands.coercion import use_plain_coercion
from .commands.common import (
    HELP_OPTION_NAMES,
    PROTOCOL_HELP,
    RULES_HELP,
    SPLIT_HELP,
    EmptyUnion,
    Missing,
    Protocol,
    RulesChoice,
    RulesName,
    polish_help,
    print_table,
    reflow_help_texts,
)
from .errors import DatasetError, ReasonSegError
from .text import MAX_PATH, display_line, display_text

try:  # typer >= 0.17 ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:
    from click.exceptions import ClickException, NoArgsIsHelpError

_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                   context_settings={"help_option_names": HELP_OPTION_NAMES},
                   help="reasonseg: build, score and compare ReasonSeg reasoning-segmentation results.")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"reasonseg {__version__}")
        raise typer.Exit()


@_app.callback()
def _main_options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                               help="print the version and exit")) -> None:
    """reasonseg: build, score and compare ReasonSeg reasoning-segmentation results."""

build_app = typer.Typer(no_args_is_help=True, help="Build datasets: the ReasonSeg release, the template QA set.")
_app.add_typer(build_app, name="build")

SplitOpt = typer.Option(None, "--split", help=f"{SPLIT_HELP} [default: the split the predictions file names]")
TrustedOpt = typer.Option(False, "--trusted", help="read the predictions in this process, without the sandbox's "
                          "memory, CPU and time limits (trusted local files only)")
ProtocolOpt = typer.Option(None, "--protocol", help=f"{PROTOCOL_HELP} [default: the rules']")
EmptyUnionOpt = typer.Option(None, "--empty-union", help="one (LISA), zero (VisionReasoner) or skip (Seg-Zero) "
                                                        "[default: the rules']")
SCORE_REPORT_OUTPUTS = ("index.html", "overlays")


# ------------------------------------------------------------------------------------------------------- sample

@_app.command()
def sample(out: Path = typer.Option(..., "--out", help="folder to create"),
           seed: int = typer.Option(0, help="random seed: the same seed writes the same bytes"),
           grounding: int | None = typer.Option(
               None, "--grounding", help="instead: a grounding set of N train scenes (3 objects, each a query's "
                                         "target; only the query tells which) in OUT/release"),
           val_scenes: int = typer.Option(200, "--val-scenes", help="with --grounding: val scenes"),
           overwrite: bool = typer.Option(False, "--overwrite", help="replace release/, sources/ and qa-sources/ in a "
                                          "non-empty --out (other files there are kept)")):
    """Write the embedded synthetic data: a ReasonSeg-format release (OUT/release) and the sources every builder
    reads, in their real formats (OUT/sources: OpenImages, ScanNet, instructions.jsonl; OUT/qa-sources: ADE20K,
    COCO-Stuff, PACO-LVIS, PASCAL-Part, refCOCO family, LLaVA-Instruct).

    With --grounding N: only a release for training and checking that a model reads the query (`lisa train` reads
    it as data.reasonseg): N train and --val-scenes val scenes, 3 samples each, plus OUT/release/scenes.json.

    Example: reasonseg sample --out rs-sample
    """
    if grounding is not None:
        from .sample.grounding import write_grounding

        release = write_grounding(out, grounding, val_scenes, seed=seed)
        typer.echo(f"grounding release: {release} ({grounding} train, {val_scenes} val scenes; 3 samples each)")
        return
    from .sample.bundle import write_sample

    bundle = write_sample(out, seed=seed, overwrite=overwrite)
    typer.echo(f"release:      {bundle.release}")
    typer.echo(f"sources:      {bundle.openimages} · {bundle.scannet} · {bundle.instructions}")
    typer.echo(f"qa sources:   {' '.join(f'{k}={v}' for k, v in sorted(bundle.qa_sources.items()))}")


# ----------------------------------------------------------------------------------------------------- validate

@_app.command()
def validate(data: str = typer.Argument(..., help="release folder holding train/ val/ test/, a published folder, "
                                                 "or a Hub dataset id in the local HF cache"),
             strict: bool = typer.Option(False, help="treat non-.jpg images as errors, as the reference loader"),
             as_json: bool = typer.Option(False, "--json", help="print the report as JSON")):
    """Integrity report of a release: counts, pairing, empty ground truth, encodings, labels, polygons, images.

    Exits 1 when the report holds errors. Example: reasonseg validate ReasonSeg/
    """
    from .sources import validate_release

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = validate_release(data, strict=strict)
    if as_json:
        typer.echo(json.dumps({"root": report.root, "ok": report.ok, "splits": report.splits,
                               "findings": [f.__dict__ for f in report.findings]}, indent=1))
    else:
        header = ["split", "samples", "expected", "short", "long", "texts", "empty GT", "cp1252"]
        rows = [[name, str(s["count"]), str(s["expected"]), str(s["short"]), str(s["long"]), str(s["texts"]),
                 str(s["empty_gt"]), str(s["cp1252"])] for name, s in report.splits.items()]
        print_table(header, rows, title=f"release {report.root}")
        for finding in report.findings:
            typer.echo(finding.render())
        n_err = sum(f.level == "error" for f in report.findings)
        n_warn = len(report.findings) - n_err
        typer.echo(f"{'OK' if report.ok else 'FAILED'}: {n_err} error(s), {n_warn} warning(s)")
    raise typer.Exit(0 if report.ok else 1)


# -------------------------------------------------------------------------------------------------------- score

@_app.command()
def score(data: str = typer.Argument(..., help="release folder (or its published Parquet form)"),
          predictions: Path = typer.Argument(..., help="predictions JSON, PNG folder or PNG zip"),
          split: str | None = SplitOpt,
          rules: RulesChoice | None = typer.Option(
              None, "--rules", help=f"{RULES_HELP}; all: every profile side by side (the drift table)"),
          protocol: Protocol | None = ProtocolOpt,
          out: Path | None = typer.Option(None, "--out", help="write the results JSON here (the drift JSON with "
                                                               "--rules all)"),
          bootstrap: int = typer.Option(1000, min=0, help="bootstrap resamples for the CIs (0 = none)"),
          seed: int = typer.Option(0, help="bootstrap seed"),
          confidence: float = typer.Option(0.95, min=0.0, max=1.0, help="confidence level of the intervals"),
          missing: Missing | None = typer.Option(
              None, help="error, or empty: score absent queries as empty masks; skip, penalty (I = 0, U = |GT|) "
                         "[default: the rules']"),
          empty_union: EmptyUnion | None = EmptyUnionOpt,
          method: str | None = typer.Option(None, help="method name for the results (default: the file's, or the "
                                                       "PNG folder's or zip's name)"),
          report: Path | None = typer.Option(None, "--report", help="write an HTML report into this folder"),
          overwrite: bool = typer.Option(False, "--overwrite", help="replace the report in a non-empty --report"),
          no_cache: bool = typer.Option(False, "--no-cache", help="rebuild ground truth, ignore the cache"),
          strict: bool = typer.Option(False, help="read .jpg images only, as the reference loader"),
          trusted: bool = TrustedOpt,
          as_json: bool = typer.Option(False, "--json", help="print the results JSON instead of the table")):
    """Score predictions: gIoU and cIoU (×100) overall, short and long, with bootstrap CIs.

    --rules all scores the file under every scorer's rules and prints the drift table (gIoU, cIoU, queries
    counted, difference from lisa); with --json, the reasonseg-drift document.

    Example: reasonseg score ReasonSeg/ preds.json --split val --out results.json --report report/
    """
    from .metrics.report import split_table, write_results
    from .metrics.scoring import evaluate
    from .outputs import check_output_dir, staged_output_dir

    _check_release_arg(data)
    if report:
        check_output_dir(report, overwrite, "--report")  # before the work, not after it
    from .sandbox import reading_limits

    read = {"cache_dir": None if no_cache else "default", "strict": strict, "limits": reading_limits(trusted)}
    if rules == "all":
        given = [name for name, value in (("--protocol", protocol), ("--empty-union", empty_union),
                                          ("--missing", missing)) if value is not None]
        if given:
            raise ReasonSegError(f"--rules all scores under each profile's own rules; {', '.join(given)} cannot "
                                 "apply", field="--rules", hint="drop them, or name one profile with --rules")
        _score_drift(data, predictions, split, read, out, report, overwrite, method, as_json,
                     {"bootstrap": bootstrap, "seed": seed, "confidence": confidence})
        return
    evaluation = evaluate(data, predictions, split, protocol, rules=rules, missing=missing, empty_union=empty_union,
                          bootstrap=bootstrap, seed=seed, confidence=confidence, method=method, **read)
    doc = evaluation.document
    if out:
        write_results(out, doc)
    if report:
        from .metrics.html import write_report

        with staged_output_dir(report, overwrite, SCORE_REPORT_OUTPUTS, "--report") as folder:
            write_report(folder, evaluation)
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    header, rows = split_table(doc)
    print_table(header, rows, title=f"{doc['method'] or predictions.name} · {doc['split']} · "
                                    f"{_rules_title(doc)} (×100)")
    for path, what in ((out, "results"), (report and report / "index.html", "report")):
        if path:
            typer.echo(f"{what}: {path}")


def _check_release_arg(data: Path) -> None:
    from .inputs import check_input

    check_input(data, "release folder", DatasetError)


def _rules_title(doc: dict) -> str:
    from .metrics.rules import rules_of_document

    return f"rules {rules_of_document(doc).label} · protocol {doc['protocol']}"


def _score_drift(data: Path, predictions: Path, split: str | None, read: dict, out: Path | None,
                 report: Path | None, overwrite: bool, method: str | None, as_json: bool, report_options: dict) -> None:
    """`score --rules all`: the drift table (one row per profile), its JSON, and the report with it."""
    from .metrics.drift import drift_document, drift_table, refusals
    from .metrics.report import write_results
    from .metrics.scoring import read_inputs

    gt, preds = read_inputs(data, predictions, split, **read)
    doc = drift_document(gt, preds, method)
    if out:
        write_results(out, doc)
    if report:
        from .metrics.html import write_drift_report
        from .outputs import staged_output_dir

        with staged_output_dir(report, overwrite, SCORE_REPORT_OUTPUTS, "--report") as folder:
            write_drift_report(folder, gt, preds, doc, method=method, **report_options)
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    header, rows = drift_table(doc)
    print_table(header, rows, title=f"{doc['method'] or predictions.name} · {doc['split']} · every scorer's rules "
                                    "(×100; Δ in points)")
    for line in refusals(doc):
        typer.echo(f"refused: {line}")
    for path, what in ((out, "drift"), (report and report / "index.html", "report")):
        if path:
            typer.echo(f"{what}: {path}")


# ------------------------------------------------------------------------------------------------------ compare

def _scores_for(data: Path, path: Path, split: str | None, options: dict, cache: bool,
                allow_different_data: bool = False, trusted: bool = False):
    """Per-query scores, method name, split and rules from a results file (as is, if scored on DATA and under the
    rules asked for) or from a predictions file (scored now); `split=None` takes the file's own split. `options`:
    rules, protocol and empty_union as given (None: the results' own, or the default rules)."""
    from .metrics.groundtruth import load_ground_truth
    from .metrics.report import check_same_data, read_results, scores_from_results
    from .metrics.rules import compared_label, resolve_rules, rules_of_document
    from .metrics.scoring import evaluate
    from .sandbox import reading_limits

    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if b'"reasonseg-results"' in head:
            doc = read_results(path)
            from .schema import canonical_split

            split = canonical_split(split or doc["split"])
            rules = rules_of_document(doc)
            asked = resolve_rules(**options) if any(v is not None for v in options.values()) else rules
            if doc["split"] != split or compared_label(asked) != compared_label(rules):
                raise ReasonSegError(f"results are for split {doc['split']!r} under rules {compared_label(rules)!r}; "
                                     f"comparing split {split!r} under rules {compared_label(asked)!r}",
                                     path=str(path))
            fingerprint = load_ground_truth(data, split, cache_dir="default" if cache else None).fingerprint
            check_same_data(doc, fingerprint, str(path), allow_different_data)
            return scores_from_results(doc, str(path)), doc.get("method") or path.stem, split, rules
    evaluation = evaluate(data, path, split, options["protocol"], rules=options["rules"],
                          empty_union=options["empty_union"], cache_dir="default" if cache else None, bootstrap=0,
                          limits=reading_limits(trusted))
    doc = evaluation.document
    return evaluation.scores, doc.get("method") or path.stem, doc["split"], rules_of_document(doc)


METRIC_NAMES = {"giou": "gIoU", "ciou": "cIoU"}


def _p_value(p: float, resamples: int) -> str:
    # With the +1 correction the smallest possible value is 2/(resamples+1): no resample crossed 0.
    if resamples and p <= 2.0 / (resamples + 1) * (1 + 1e-9):
        return f"< {2.0 / resamples:.2g}"
    return f"{p:.4f}"


@_app.command()
def compare(data: str = typer.Argument(..., help="release folder (or its published Parquet form)"),
            pred_a: Path = typer.Argument(..., help="predictions or results file of method A"),
            pred_b: Path = typer.Argument(..., help="predictions or results file of method B"),
            split: str | None = SplitOpt,
            rules: RulesName | None = typer.Option(None, "--rules", help=RULES_HELP),
            protocol: Protocol | None = ProtocolOpt,
            group: str = typer.Option("overall", help="overall, short, long or source:NAME"),
            empty_union: EmptyUnion | None = EmptyUnionOpt,
            bootstrap: int = typer.Option(2000, help="paired bootstrap resamples for the CI and p-value of B - A"),
            permutations: int | None = typer.Option(None, hidden=True, help="no longer used (see --bootstrap)"),
            seed: int = typer.Option(0, help="random seed"),
            no_cache: bool = typer.Option(False, "--no-cache", help="rebuild ground truth, ignore the cache"),
            trusted: bool = TrustedOpt,
            allow_different_data: bool = typer.Option(
                False, "--allow-different-data", help="accept results scored on other annotations than DATA's"),
            as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Paired comparison of two methods on the same queries: B - A with a CI and a p-value.

    Both come from one paired bootstrap over images (the same test `report` runs, same resamples and seed), so the
    p-value is small exactly when the CI excludes 0.

    Example: reasonseg compare ReasonSeg/ base.json mine.json --split val
    """
    from .errors import ResultsError
    from .metrics.report import group_scores
    from .metrics.stats import P_VALUE_NOTE, image_sums, paired_comparison

    _check_release_arg(data)
    from .metrics.rules import compared_label

    options = {"rules": rules, "protocol": protocol, "empty_union": empty_union}
    with warnings.catch_warnings(record=True) as said:   # said once, after the checks below (a refusal is one line)
        warnings.simplefilter("always")
        scores_a, name_a, split, rules_a = _scores_for(data, pred_a, split, options, not no_cache,
                                                       allow_different_data, trusted)
        scores_b, name_b, _, rules_b = _scores_for(data, pred_b, split, options, not no_cache, allow_different_data,
                                                   trusted)
    if compared_label(rules_a) != compared_label(rules_b):
        raise ResultsError(f"A is scored under rules {compared_label(rules_a)!r}, B under {compared_label(rules_b)!r}"
                           ": numbers under different rules are not comparable", hint="score both under one --rules")
    empty_union = rules_a.empty_union
    groups_a, groups_b = group_scores(scores_a), group_scores(scores_b)
    if group in ("short", "long") and group not in groups_a:
        raise ResultsError(f"no {group} group: the queries' kind (is_sentence) is unknown in this ground truth (the "
                           "Hub mirror form drops it)", hint="compare --group overall, or score on the release")
    if group not in groups_a:
        raise ResultsError(f"unknown group {group!r}; choose one of {', '.join(groups_a)}")
    keys_a = {(s.id, s.text_index) for s in groups_a[group]}
    keys_b = {(s.id, s.text_index) for s in groups_b[group]}
    if keys_a != keys_b:
        raise ResultsError(f"A and B score different queries ({len(keys_a ^ keys_b)} differ)",
                           hint="score both on the same split and rules")
    if permutations is not None:
        typer.echo("note: --permutations is no longer used: the p-value comes from the --bootstrap resamples",
                   err=True)
    for message in dict.fromkeys(str(w.message) for w in said):
        warnings.warn(message, stacklevel=1)
    diffs = paired_comparison(image_sums(groups_a[group], empty_union), image_sums(groups_b[group], empty_union),
                              bootstrap, seed=seed)
    diffs = [d for d in diffs if d.metric != "ciou" or rules_a.ciou != "none"]   # a scorer without cIoU: none
    if as_json:
        typer.echo(json.dumps({"a": name_a, "b": name_b, "split": split, "rules": rules_a.name,
                               "protocol": rules_a.protocol, "group": group,
                               "resamples": bootstrap, "seed": seed, "differences": [d.__dict__ for d in diffs]},
                              indent=1))
        return
    rows = [[METRIC_NAMES.get(d.metric, d.metric), f"{100 * d.a:.1f}", f"{100 * d.b:.1f}", f"{100 * d.delta:+.1f}",
             f"[{100 * d.ci[0]:+.1f}, {100 * d.ci[1]:+.1f}]", _p_value(d.p_value, bootstrap)] for d in diffs]
    print_table(["metric", f"A: {name_a}", f"B: {name_b}", "B - A", "95% CI", "p"], rows,
                 title=f"{split} · {group} · {len(keys_a)} queries · rules {compared_label(rules_a)} (×100)")
    typer.echo(P_VALUE_NOTE)


# --------------------------------------------------------------------------------------------------------- demo

@_app.command()
def demo(out: Path = typer.Option(Path("demo-output"), "--out", help="folder for everything the demo writes"),
         bootstrap: int = typer.Option(1000, help="bootstrap resamples"),
         overwrite: bool = typer.Option(False, "--overwrite", help="replace a previous demo's outputs in --out "
                                        "(other files there are kept)")):
    """The main job on the embedded default: synthetic release → baselines → scores → table and HTML reports.

    Example: reasonseg demo --out demo-output
    """
    from .demo import run_demo
    from .metrics.report import table1

    result = run_demo(out, bootstrap=bootstrap, overwrite=overwrite)
    for note in result.notes:
        typer.echo(note.title)
        for line in note.lines:
            typer.echo(f"  {line}")
    header, rows = table1(result.results, with_ci=False)
    print_table(header, rows, title="Table 1 layout, synthetic release: gIoU / cIoU ×100")
    typer.echo(f"95% bootstrap intervals: {out / 'results'}/*.json and the report")
    typer.echo(f"release: {result.release}")
    typer.echo(f"report:  {result.index}")


# ------------------------------------------------------------------------------------------------------- main

# The commands above need no stage module: a run of one of them imports none (and builds no other command).
_OWN_COMMANDS = frozenset(info.name or info.callback.__name__ for info in _app.registered_commands)
_stages_registered = False


def full_app() -> typer.Typer:
    """The app with every stage's commands; their modules are imported on the first call."""
    global _stages_registered
    if not _stages_registered:
        for module in STAGE_MODULES:
            importlib.import_module(module).register(_app, build_app)
        _stages_registered = True
    return _app


def __getattr__(name: str):
    if name == "app":   # `from reasonseg.cli import app` (e.g. typer's CliRunner) gets every command
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # Library warnings (e.g. a lenient reader accepting a .png image) reach the user as one plain line.
    typer.echo(f"warning: {display_line(message)}", err=True)


def _holds_release(folder: Path) -> bool:
    return any((folder / split).is_dir() for split in ("train", "val", "test"))


OUTPUT_OPTIONS = ("--out", "--report")


def _typed_input_paths(args: list[str]) -> set[Path]:
    paths = set()
    for before, arg in zip(["", *args], args, strict=False):
        if arg and before not in OUTPUT_OPTIONS and not arg.startswith(tuple(f"{o}=" for o in OUTPUT_OPTIONS)):
            paths.add(Path(arg.partition("=")[2] if arg.startswith("--") else arg))
    return paths


def _suggestion(path_text, release_expected: bool = False) -> str:
    """' (did you mean ...?)' for a path typed on the command line that is a near-miss of an existing name, or a
    folder holding a release one level down (`rs` for `rs/release`); '' otherwise."""
    if not isinstance(path_text, (str, Path)) or not str(path_text):
        return ""
    import difflib

    path = Path(path_text)
    if (os.path.islink(path) and not path.exists()) or path not in _typed_input_paths(sys.argv[1:]):  # a loop
        return ""  # only a path the user typed as an input: a file missing inside a dataset is no typo
    try:
        base = path
        while not base.exists() and base != base.parent:
            base = base.parent
        if base != path and base == path.parent and base.is_dir():
            names = sorted(child.name for child in base.iterdir())
            close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {base / close[0]}?)"
        if release_expected and base.is_dir() and not _holds_release(base):
            inner = sorted(child for child in base.iterdir() if child.is_dir() and _holds_release(child))
            if len(inner) == 1:
                return f" (did you mean {inner[0]}? it holds a release)"
    except OSError:
        pass
    return ""


def main() -> None:
    warnings.showwarning = _show_warning
    args = sys.argv[1:]
    own = bool(args) and args[0] in _OWN_COMMANDS
    if own:
        # Their matrix products are tiny, and each OpenBLAS worker thread spins for about 0.1 s of CPU after numpy
        # starts it: one thread, unless the user says otherwise (set before numpy is first imported).
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = typer.main.get_command(_app if own else full_app())
    polish_help(command)
    # Help is shown for -h, and for a group named without its command (`reasonseg lisa`); the leaf commands of the
    # main app (score, compare, ...) skip the reflow otherwise, which is a fifth of a scoring run's start-up.
    if not own or set(HELP_OPTION_NAMES) & set(args):
        reflow_help_texts(command)
    use_plain_coercion(command)
    try:
        code = command.main(prog_name="reasonseg", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except NoArgsIsHelpError as exc:
        # With rich, typer has printed the help while making the error (its message is then empty).
        if exc.format_message().strip():
            typer.echo(exc.format_message())
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except ClickException as exc:
        # A usage error (missing argument, bad choice) is one line like every other error, with where to look.
        where = f" (see '{exc.ctx.command_path} -h')" if getattr(exc, "ctx", None) else ""
        typer.echo(f"error: {display_line(exc.format_message())}{where}", err=True)
        sys.exit(exc.exit_code)
    except ReasonSegError as exc:
        typer.echo(f"error: {exc.render()}{_suggestion(exc.path, isinstance(exc, DatasetError))}", err=True)
        sys.exit(2)
    except OSError as exc:
        where = f"{display_text(exc.filename, MAX_PATH)}: " if getattr(exc, "filename", None) else ""
        typer.echo(f"error: {display_line(f'{where}{exc.strerror or exc}')}{_suggestion(exc.filename)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
