"""Plan a benchmark's rows (models x attention types, shared properties,
per-model tweaks) and run each one in a fresh worker process."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from recbole_attn import registry
from recbole_attn.bench import measure, plots, report, tuning
from recbole_attn.bench.run_settings import BENCHMARK_FLAGS
from recbole_attn.bench.worker import STOP_WITH_PARENT
from recbole_attn.config import AttnConfig, known_keys, model_option_choices, parse_cmd_args
from recbole_attn.data.checks import check_dataset_files
from recbole_attn.errors import UsageError
from recbole_attn.results import machine, versions
from recbole_attn.validation import validate_settings
from recbole_attn.values import parse_value, parse_values, read_yaml_file

DEFAULT_MODELS = ("AttnSeq", "AttnRNN", "SASRec", "GRU4Rec", "NARM", "STAMP", "BERT4Rec", "Caser",
                  "LightSANs", "CORE")
#: The row every other is compared with unless ``reference`` says otherwise.
DEFAULT_REFERENCE = "AttnSeq"
#: What every model shares; config files and ``--key=value`` override them.
SHARED_PROPERTIES: dict[str, Any] = {
    "seed": 2020,
    "MAX_ITEM_LIST_LENGTH": 50,
    "embedding_size": 64,
    "hidden_size": 64,
    "loss_type": "CE",
    "state": "WARNING",  # one progress line per model instead of RecBole's per-epoch log
}


def _lightsans_tweaks(properties: dict[str, Any]) -> dict[str, Any]:
    # RecBole suggests k_interests = 0.1 * MAX_ITEM_LIST_LENGTH (its default 5 assumes 50)
    return {"k_interests": max(1, round(properties["MAX_ITEM_LIST_LENGTH"] / 10))}


#: Per-model keys derived from the shared properties (a user's own value wins).
MODEL_TWEAKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"LightSANs": _lightsans_tweaks}
_ROW_NAME = re.compile(r"(\w+)(?:\[(.+)\])?")


def split_list(text: str | Sequence[str]) -> list[str]:
    """``"a,b c"`` or ``["a", "b"]`` -> ``["a", "b", "c"]``; separators inside
    brackets stay (``AttnSeq[user_features=[age,gender]]`` is one item)."""
    if not isinstance(text, str):
        return [part.strip() for part in text if part.strip()]
    parts, current, depth = [], "", 0
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0 and (char == "," or char.isspace()):
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in [*parts, current] if part.strip()]


def parse_row_keys(name: str, inside: str) -> dict[str, Any]:
    """The keys of ``NAME[...]``: ``general`` -> ``{attention_type: general}``,
    ``readout=attention;n_layers=1`` -> those keys (values read as literals)."""
    if "=" not in inside:
        return {"attention_type": inside}
    keys = {}
    for part in inside.split(";"):
        key, sep, value = part.partition("=")
        if not sep or not re.fullmatch(r"\w+", key.strip()):
            raise UsageError(f"cannot read model {name!r}: expected NAME[key=value;key=value]")
        keys[key.strip()] = parse_value(value.strip())
    return keys


def has_attention_types(model: str) -> bool:
    """Whether ``model`` declares ``attention_type`` choices (AttnRNN, or a
    plugin's): ``--attention_types`` gives each type its own row."""
    return "attention_type" in model_option_choices(registry.get_model_class(model))


def expand_models(models: Sequence[str], attention_types: Sequence[str] = ()) -> list[tuple[str, str, dict]]:
    """``(label, model, row keys)`` per row: ``AttnRNN[general]`` is AttnRNN
    with ``attention_type=general``, ``AttnSeq[readout=attention]`` AttnSeq
    with that key (a variant beside the default row); ``attention_types``
    expands a plain AttnRNN (any model with ``attention_type`` choices)
    into one row per type."""
    rows = []
    for name in models:
        match = _ROW_NAME.fullmatch(name)
        if match is None:
            raise UsageError(f"cannot read model {name!r}: expected NAME, NAME[attention_type] or NAME[key=value]")
        model, inside = match.groups()
        if inside:
            rows.append((name, model, parse_row_keys(name, inside)))
        elif attention_types and has_attention_types(model):
            rows += [(f"{model}[{kind}]", model, {"attention_type": kind}) for kind in attention_types]
        else:
            rows.append((model, model, {}))
    if not rows:
        raise UsageError("no models to run: give --models=NAME[,NAME...]")
    labels = [label for label, _, _ in rows]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UsageError(f"model rows given twice: {', '.join(repeated)}")
    return rows


def refuse_benchmark_flags(settings: dict[str, Any], where: str) -> None:
    """A :data:`BENCHMARK_FLAGS` key set elsewhere would train every row
    under another value than the record states."""
    for key in sorted(BENCHMARK_FLAGS.keys() & settings.keys()):
        raise UsageError(f"{where}{key}={settings[key]}: the benchmark sets {key} with its own {BENCHMARK_FLAGS[key]}")


def user_settings(config_files: Sequence[str], overrides: dict[str, str]) -> dict[str, Any]:
    """The keys (with values, YAML-read) the user set in config files and
    ``--key=value``; later wins, as in RecBole."""
    settings: dict[str, Any] = {}
    for file in config_files:
        if not os.path.isfile(file):
            raise UsageError(f"config file {file!r} does not exist")
        settings.update(read_yaml_file(file))
    settings.update(parse_values(overrides))
    return settings


def plan_rows(
    dataset: str,
    models: Sequence[str] = DEFAULT_MODELS,
    attention_types: Sequence[str] = (),
    budget: float | None = 600.0,
    epochs: int = 200,
    data_path: str | None = None,
    config_files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    seeds: Sequence[int] = (),
    settings: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One spec per row and seed: the exact arguments of its :func:`recbole_attn.run`.

    Precedence, highest first: the row's own keys (``attention_type``), the
    row's ``settings`` (a tuned setting, by label), ``--key=value``,
    ``--epochs``/``--budget``/``--data_path``, config files, model tweaks,
    :data:`SHARED_PROPERTIES`, the model's and the project's defaults.
    ``seeds``: every row once per seed (default: the one seed configured)."""
    cmd = parse_cmd_args(overrides)
    rows = expand_models(models, attention_types)
    refuse_benchmark_flags(cmd, "--")
    for label, _, row_keys in rows:
        refuse_benchmark_flags(row_keys, f"{label}: ")
    user = user_settings(config_files, cmd)
    if seeds and "seed" in user:
        raise UsageError("give the seeds either as --seeds or as seed, not both")
    flags: dict[str, Any] = {"epochs": epochs, "time_budget": budget}
    if data_path:
        flags["data_path"] = str(data_path)
    effective = {**SHARED_PROPERTIES, **user, **flags}
    validate_settings({"seed": effective["seed"]})  # each row's seed is read below
    # a key reaches the models that declare it; one no model declares reaches all (and is warned about)
    known = {model: known_keys(registry.get_model_class(model)) for _, model, _ in rows}  # typos fail now
    declared_somewhere = set().union(*known.values())
    specs = []
    for label, model, row_keys in rows:
        def applies(key: str, model: str = model) -> bool:
            return key in known[model] or key not in declared_somewhere

        # ours, not a user's typo: only to the models that declare the key
        shared = {key: value for key, value in SHARED_PROPERTIES.items() if key not in user and key in known[model]}
        tweaks = MODEL_TWEAKS.get(model, lambda _: {})(effective)
        tweaks = {key: value for key, value in tweaks.items() if key not in user}
        for seed in seeds or [effective["seed"]]:
            fixed = {**row_keys, **({"seed": seed} if seeds else {})}
            untuned = {
                "label": label,
                "model": model,
                "seed": int(seed),
                "fixed_keys": fixed,
                "dataset": dataset,
                "config_files": list(config_files),
                "config_dict": {**shared, **tweaks, **flags, **fixed},
                "cmd_args": [f"--{key}={value}" for key, value in cmd.items() if key not in row_keys and applies(key)],
            }
            specs.append(tuning.apply_settings(untuned, (settings or {}).get(label, {})))
    return specs


def preflight(specs: Sequence[dict[str, Any]]) -> None:
    """Build every row's config and check the data files once, so that a
    wrong dataset, path or option value fails before any training."""
    configs = [AttnConfig(spec["model"], spec["dataset"], spec["config_files"], spec["config_dict"],
                          spec["cmd_args"]) for spec in specs]
    for config in configs:
        metrics = [str(metric).lower() for metric in config["metrics"]]
        if "ndcg" not in metrics or 10 not in config["topk"]:
            raise UsageError(f"the benchmark compares NDCG@10: metrics must include NDCG and topk 10, "
                             f"got metrics={config['metrics']} topk={config['topk']}")
        split = (config["eval_args"] or {}).get("split") or {}
        if "LS" not in split:  # a random split gives a user several test rows
            raise UsageError(f"the benchmark compares models per test user and needs a leave-one-out split "
                             f"(eval_args split: {{'LS': 'valid_and_test'}}), got split={split}")
    check_dataset_files(configs[0])


def worker_failure(returncode: int) -> str:
    """Why a worker left no row behind, in words."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {returncode} and wrote no row"


def worker_command(spec_file: Path, row_file: Path) -> list[str]:
    """The command line of one row's worker process."""
    return [sys.executable, "-m", "recbole_attn.bench.worker", str(spec_file), str(row_file), STOP_WITH_PARENT]


def run_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure.run_row` in a fresh Python process (inheriting stdout,
    stderr and environment), so peak memory is this row's alone."""
    with tempfile.TemporaryDirectory(prefix="recbole-attn-bench-") as tmp:
        spec_file, row_file = Path(tmp) / "spec.json", Path(tmp) / "row.json"
        spec_file.write_text(json.dumps(spec))
        with subprocess.Popen(worker_command(spec_file, row_file), stdin=subprocess.PIPE) as worker:
            returncode = worker.wait()  # the open stdin pipe keeps the worker going: see worker.py
        if row_file.is_file():
            return json.loads(row_file.read_text())
    failure = worker_failure(returncode)
    return {"label": spec["label"], "model": spec["model"], **measure.row_identity(spec), "status": "error",
            "error": failure}


def git_state() -> dict[str, Any]:
    """Commit of the checkout the package runs from, and whether it has
    uncommitted changes; ``unknown`` outside a git checkout."""
    folder = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def _machine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The machine, with the device the rows ran on (RecBole's choice until one has run)."""
    devices = [row["device"] for row in rows if row.get("device")]
    return machine(devices[0] if devices else "cuda" if torch.cuda.is_available() else "cpu")


def run_rows(specs: Sequence[dict[str, Any]], run_spec: Callable[[dict[str, Any]], dict[str, Any]], jobs: int,
             add_row: Callable[[int, dict[str, Any]], None], echo: Callable[[str], Any] = print) -> None:
    """Train ``specs`` with ``run_spec``, ``jobs`` at a time, handing each
    finished row and its index to ``add_row`` (one at a time). An error
    there (a full disk, say) cancels the rows not yet started, lets the
    running ones end, and is raised: hours of training are not spent on
    rows that cannot be recorded."""
    lock = threading.Lock()

    def run_one(index: int) -> None:
        echo(f"[{index + 1}/{len(specs)}] {specs[index]['label']}: training ...")
        row = run_spec(specs[index])
        with lock:
            add_row(index, row)

    if jobs == 1:  # in this thread: Ctrl-C then stops an in-process row at once, not after it ends
        for index in range(len(specs)):
            run_one(index)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, index) for index in range(len(specs))]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def run_benchmark(
    dataset: str = "ml-100k",
    models: Sequence[str] = DEFAULT_MODELS,
    attention_types: Sequence[str] = (),
    budget: float | None = 600.0,
    epochs: int = 200,
    output_dir: str | os.PathLike = "benchmarks/results",
    data_path: str | None = None,
    config_files: Sequence[str] = (),
    overrides: Sequence[str] = (),
    isolated: bool = True,
    command: str | None = None,
    echo: Callable[[str], Any] = print,
    jobs: int = 1,
    seeds: Sequence[int] = (),
    reference: str | None = None,
    tune: int = 0,
) -> dict[str, Any]:
    """Run every row, rewrite the JSON/Markdown/CSV after each one (an
    interrupted benchmark keeps what finished), plot at the end; returns the
    record, whose ``files`` names what was written.

    ``seeds``: every model once per seed. Each test run's per-user hits are
    saved (``<record>-ranks/``) and every model is compared with
    ``reference`` (default: AttnSeq when it runs;
    :mod:`~recbole_attn.bench.significance`). ``tune > 0``:
    first that many validation-only trials per model
    (:mod:`~recbole_attn.bench.tuning`, on the first seed), then every seed
    with each model's best setting.

    ``jobs > 1`` trains that many rows at once, each in its own process (a
    GPU big enough for several small models; never on a CPU whose cores are
    fewer than the threads asked for): times are then measured under each
    other's load, and the record says so. Rows keep the order they were given.
    """
    if jobs < 1:
        raise UsageError(f"jobs must be >= 1, got {jobs}")
    if jobs > 1 and not isolated:
        raise UsageError("jobs > 1 needs one process per model: drop --in_process")
    if tune < 0 or tune == 1:
        raise UsageError(f"tune must be 0 (no tuning) or >= 2 trials per model (trial 0 is the untuned row), "
                         f"got {tune}")
    plan: dict[str, Any] = dict(dataset=dataset, models=models, attention_types=attention_types, budget=budget,
                                epochs=epochs, data_path=data_path, config_files=config_files, overrides=overrides)
    specs = plan_rows(**plan, seeds=seeds)
    labels = list(dict.fromkeys(spec["label"] for spec in specs))
    reference = report.choose_reference(reference, labels, DEFAULT_REFERENCE)
    if tune:
        for spec in specs:
            tuning.row_space(spec)  # a missing or wrong space fails before any training
    preflight(specs)
    paths = report.output_paths(output_dir, dataset)
    began = time.perf_counter()
    record = _new_record(command=command, dataset=dataset, data_path=data_path, budget=budget, epochs=epochs,
                         jobs=jobs, config_files=config_files, overrides=overrides, isolated=isolated,
                         paths=paths, specs=specs, reference=reference, tune=tune)
    run_spec = run_isolated if isolated else measure.run_row
    if tune:
        tuned = _tune(record, specs, labels, tune, run_spec, paths, echo)
        specs = [spec for spec in plan_rows(**plan, seeds=seeds, settings=tuned) if spec["label"] in tuned]
    for spec in specs:
        spec["ranks_file"] = str(paths["ranks"] / f"{report.file_label(spec['label'])}-seed{spec['seed']}.npz")
    finished: dict[int, dict[str, Any]] = {}

    def add_row(index: int, row: dict[str, Any]) -> None:
        if row.get("ranks_file"):  # relative to the record, so that the folder can move
            row["ranks_file"] = os.path.relpath(row["ranks_file"], paths["json"].parent)
        finished[index] = row
        record["rows"] = [finished[k] for k in sorted(finished)]
        record["comparisons"] = report.comparisons(record["rows"], reference, paths["json"].parent)
        echo(f"[{index + 1}/{len(specs)}] {report.progress_line(row)}")
        record["wall_seconds"] = time.perf_counter() - began
        record["machine"] = _machine(record["rows"])
        report.write_tables(record, paths)

    run_rows(specs, run_spec, jobs, add_row, echo)
    plots.add_plots(record, paths, echo)
    record["finished"] = True
    report.write_tables(record, paths)
    return record


def _new_record(*, command: str | None, dataset: str, data_path: str | None, budget: float | None, epochs: int,
                jobs: int, config_files: Sequence[str], overrides: Sequence[str], isolated: bool,
                paths: dict[str, Path], specs: Sequence[dict[str, Any]], reference: str | None,
                tune: int) -> dict[str, Any]:
    """A benchmark record before its first row: how it was run, on what,
    from which commit; rows, comparisons and tuning fill in as they end."""
    return {
        "benchmark": "recbole_attn.bench",
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "finished": False,
        "dataset": dataset,
        "data_path": data_path,
        "budget_seconds": budget,
        "epochs": epochs,
        "jobs": jobs,
        "config_files": list(config_files),
        "overrides": list(overrides),
        "shared_properties": dict(SHARED_PROPERTIES),
        "isolated": isolated,
        "git": git_state(),
        "versions": versions(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": _machine([]),
        "files": report.listed_files(paths),
        "seeds": sorted({spec["seed"] for spec in specs}),
        "reference": reference,
        "tune_trials": tune,
        "tuning": {},
        "rows": [],
        "comparisons": [],
    }


def _tune(record: dict[str, Any], specs: Sequence[dict[str, Any]], labels: Sequence[str], trials: int,
          run_spec: Callable[[dict[str, Any]], dict[str, Any]], paths: dict[str, Path],
          echo: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    """``trials`` validation-only trials per row label, on its first seed,
    each label's search noted in ``record`` (tables rewritten after each);
    returns the best settings of every label that found one."""
    for spec in [next(s for s in specs if s["label"] == label) for label in labels]:
        echo(f"tuning {spec['label']}: {trials} trials on validation, seed {spec['seed']} ...")
        record["tuning"][spec["label"]] = tuning.tune_row(spec, trials, run_spec, seed=spec["seed"], echo=echo)
        report.write_tables(record, paths)
    return {label: found["best"] for label, found in record["tuning"].items() if found["best"] is not None}
