"""The command line of every script, derived from the key declarations in config.py.

Each script takes `--config FILE` (or, where it reads a trained run, the run folder as its one argument or
`--output_dir RUN`, whose recorded config.json gives every key not given), a `--key` for each key it takes,
and its own arguments. A flag is parsed and then checked like a file value. An unknown flag gets a hint: our
name for a Hugging Face Trainer name, the scripts that take a key this one does not, or a near miss.
"""

import argparse
import difflib
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from .config import (
    DEFAULT_CONFIG,
    FIELD_DEFAULTS,
    KEYS,
    PREDICT,
    READS_RUN,
    RUNTIME,
    TYPES,
    Config,
    ConfigError,
    check_config,
    check_value,
    load_json,
    parse_bool,
)
from .tracking import requested_mode


def _flag(text: str, name: str):
    """argparse type of one key: parse, then the same checks as a file value."""
    kind = TYPES[name]
    try:
        value = parse_bool(text) if kind is bool else kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{kind.__name__} expected, got {text!r}") from None
    try:
        return check_value(name, value, f"--{name}")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None


# Hugging Face Trainer's names of our keys: what people who know that ecosystem type first.
HUB_NAMES = {"learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "batch_size",
             "train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum_steps",
             "early_stopping_patience": "patience", "save_total_limit": "top_k", "dataloader_num_workers":
             "num_workers", "per_device_eval_batch_size": "extract_batch_size", "model_name_or_path": "backbone",
             "dataset_name": "data_dir", "fp16": "mixed_precision", "bf16": "mixed_precision"}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            hints = [hint for word in unknown if word.startswith("--") and (hint := self.did_you_mean(word))]
            self.error(f"unrecognized arguments: {' '.join(unknown)}" + "".join(f"; {hint}" for hint in hints))
        return namespace

    def did_you_mean(self, word: str) -> str | None:
        """A hint for one unknown flag: our name of a Hugging Face name, a key of another script, a near miss."""
        name = word[2:].split("=", 1)[0]
        flags = [option[2:] for option in self._option_string_actions if option.startswith("--")]
        if HUB_NAMES.get(name) in flags:
            value = f" {name}" if name in ("fp16", "bf16") else ""
            return f"--{name} is Hugging Face's name: here it is --{HUB_NAMES[name]}{value}"
        if name in KEYS:
            return f"--{name} is a key of {', '.join(s + '.py' for s in KEYS[name].scripts)}, not of this script"
        close = difflib.get_close_matches(name, flags, n=1, cutoff=0.7)
        return f"did you mean --{close[0]}?" if close else None


def script_keys(script: str | None) -> list[str]:
    """The keys a script takes as flags (every key when `script` is None)."""
    return [name for name, k in KEYS.items() if script is None or script in k.scripts]


def build_parser(doc: str, keys: list[str], defaults: dict, config_source: str, add_arguments=None, *,
                 run_argument: bool = False, add_help: bool = True) -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser, and the names of the script's own arguments."""
    parser = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help)
    shown = shown_path(DEFAULT_CONFIG)
    parser.add_argument("--config", help=f"JSON config (default: the run's config.json with a run, else {shown})"
                        if run_argument else f"JSON config (default: {shown})")
    if run_argument:
        parser.add_argument("run", nargs="?", help="a trained run's folder (the same as --output_dir RUN): its "
                                                   "config.json gives every key not given here")
    if add_arguments is not None:
        add_arguments(parser)
    own = {action.dest for action in parser._actions}
    group = parser.add_argument_group(f"config keys (default: the value in {shown_path(config_source)}, "
                                      "else built in)")
    for f in fields(Config):
        if f.name not in keys or f.name in own:
            continue
        rules, shown = KEYS[f.name], defaults.get(f.name, f.default)
        extra = dict(nargs="?", const=True, metavar="true|false") if f.type is bool else dict(
            metavar="{" + ",".join(c or '""' for c in rules.choices) + "}" if rules.choices
            else f.type.__name__.upper())
        group.add_argument(f"--{f.name}", type=lambda text, n=f.name: _flag(text, n), default=None,
                           help=f"{rules.help} (default: {json.dumps(shown)})", **extra)
    return parser, own


def shown_path(path: str | os.PathLike) -> str:
    """A file of this repository by its place in it (configs/baseline.json), any other as given."""
    try:
        return str(Path(path).resolve().relative_to(DEFAULT_CONFIG.parents[1]))
    except ValueError:
        return str(path)


def base_values(script: str | None, first: argparse.Namespace, keys: list[str]) -> tuple[dict, str, Path | None]:
    """The values the flags start from, where they come from, and the run's config.json when they are a run's.

    A script that reads a run starts from the run's recorded config when its folder (the positional RUN or
    --output_dir) holds one; otherwise from --config, else the repository's configs/baseline.json.
    """
    run = getattr(first, "run", None)
    if run and first.output_dir and Path(run) != Path(first.output_dir):
        raise ConfigError(f"two run folders: {run} and --output_dir {first.output_dir}; give one")
    folder = run or (first.output_dir if script in READS_RUN else None)
    recorded = Path(folder) / "config.json" if folder else None
    if recorded is not None and recorded.is_file():
        return load_json(recorded) | {"output_dir": str(folder)}, str(recorded), recorded
    if run:
        raise ConfigError(f"{run}: not a run folder (no config.json); train it first, or give --config")
    if first.config:
        return load_json(first.config), first.config, None
    return (load_json(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else {}), str(DEFAULT_CONFIG), None


def check_agrees_with_run(recorded: Path, values: dict, given: dict, source: str) -> None:
    """A key that makes the run what it is, given again, must be the run's: another value would describe
    another run, and its files would be read as if they were this one's."""
    for name, value in given.items():
        if name in KEYS and KEYS[name].role != RUNTIME and value != values.get(name, FIELD_DEFAULTS[name]):
            raise ConfigError(f"{source}: key {name!r} is {value!r} but the run in {recorded.parent} has "
                              f"{values.get(name, FIELD_DEFAULTS[name])!r} ({recorded}); drop it, or train a new run")


def parse_config(doc: str, argv: list[str] | None = None, *, script: str | None = None,
                 add_arguments=None) -> tuple[Config, argparse.Namespace]:
    """A script's command line: --config FILE (or a run folder), a --key for each key the script takes, and
    its own arguments.

    Returns the resolved Config and the namespace of the script's own arguments. Raises ConfigError (or
    TrackingError) for a bad file or value; a bad flag ends the program with argparse's one line.
    """
    keys = script_keys(script)
    argv = sys.argv[1:] if argv is None else argv
    # The positional RUN where the script has no positionals of its own (predict's are images).
    run_argument = script in READS_RUN and script != PREDICT
    pre, _ = build_parser(doc, keys, {}, "", add_arguments, run_argument=run_argument, add_help=False)
    first, _ = pre.parse_known_args(argv)  # what is left over is --help, or an error the real parse reports
    if "output_dir" not in keys:
        first.output_dir = None
    try:
        values, source, recorded = base_values(script, first, keys)
    except ConfigError:
        if not {"-h", "--help"} & set(argv):
            raise
        values, source, recorded = {}, str(DEFAULT_CONFIG), None  # --help from any folder: the built-in values
    parser, own = build_parser(doc, keys, values, source, add_arguments, run_argument=run_argument)
    args = parser.parse_args(argv)
    if recorded is not None and args.config:
        check_agrees_with_run(recorded, values, load_json(args.config), args.config)
        values |= {k: v for k, v in load_json(args.config).items() if KEYS[k].role == RUNTIME and k != "output_dir"}
    flags = {k: getattr(args, k) for k in set(keys) - own if getattr(args, k, None) is not None}
    if recorded is not None:
        check_agrees_with_run(recorded, values, flags, "the flags given")
    values.update(flags)
    cfg = check_config(Config(**values), f"{source} with the flags given")
    if "wandb_mode" in keys:
        requested_mode(cfg.wandb_mode)  # the environment, checked before any work
    return cfg, argparse.Namespace(**{k: v for k, v in vars(args).items() if k in own})
