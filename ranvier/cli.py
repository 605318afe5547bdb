"""``ranvier`` command line. ``ranvier train`` with no arguments trains ALIF on MNIST-1D."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _train(args: argparse.Namespace) -> int:
    from .config import build_config
    from .train import fit

    settings = {k: v for k, v in vars(args).items() if k not in ("command", "preset", "resume", "func")}
    preset = args.preset
    if args.resume:
        if not args.out:
            print("error: --resume needs --out RUN_DIR (the run to continue)", file=sys.stderr)
            return 2
        preset = preset or str(Path(args.out) / "config.toml")
    cfg = build_config(settings, preset)
    metrics = fit(cfg, resume=args.resume)
    sparsity = ", ".join(f"{k} {v:.3f}" for k, v in metrics["activity_sparsity"].items())
    score = (f"test accuracy {metrics['test_accuracy']:.4f}" if "test_accuracy" in metrics
             else f"test perplexity {metrics['test_perplexity']:.2f}")
    print(f"{cfg.model} on {cfg.task}: {score} | activity sparsity {sparsity} | {metrics['parameters']} parameters | "
          f"{metrics['train_seconds']:.1f} s training | run dir {cfg.run_dir()}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from .config import PRESET_DIR

    for path in sorted(PRESET_DIR.glob("*.toml")):
        print(f"{path.stem:20s} {path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    metrics = json.loads((Path(args.run_dir) / "metrics.json").read_text())
    metrics.pop("history", None)
    print(json.dumps(metrics, indent=2))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    print(f"wrote {plot_run(args.run_dir, args.output, args.sample)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    report = write_report(args.run_dir, plots=not args.no_plots, samples=args.samples, data_dir=args.data_dir)
    inference = report["energy"]["inference"]
    print(f"wrote {', '.join(report['files'])} in {args.run_dir}")
    print(f"activation sparsity {report['activation_sparsity']['overall']:.3f} | estimated energy per "
          f"{report['evaluated']['per']} (inference): dense {inference['dense']['total_j']:.3g} J, "
          f"event-driven {inference['event']['total_j']:.3g} J ({report['energy']['profile']['name']} estimate)")
    return 0


def _engine_run(args: argparse.Namespace) -> int:
    # issue 6: a trained classifier through the event-driven engine (ranvier/engine/commands.py)
    from .engine.commands import run_classifier

    run_classifier(args.run_dir, args.sample, data_dir=args.data_dir, dtype=args.dtype, threads=args.threads)
    return 0


def _engine_generate(args: argparse.Namespace) -> int:
    # issue 6: text from a trained EGRU language model on the event-driven engine
    from .engine.commands import generate_text

    generate_text(args.run_dir, args.prompt, args.tokens, temperature=args.temperature, seed=args.seed,
                  data_dir=args.data_dir, dtype=args.dtype, threads=args.threads)
    return 0


def _add_engine_commands(sub: Any) -> None:
    # issue 6: `ranvier run` and `ranvier generate`
    run = sub.add_parser("run", help="classify one test sample of a trained run with the event-driven engine")
    run.add_argument("run_dir")
    run.add_argument("--sample", type=int, default=0, help="test sample to classify (default 0)")
    generate = sub.add_parser("generate", help="generate text from a trained EGRU language model with the engine")
    generate.add_argument("run_dir")
    generate.add_argument("--prompt", required=True, help="words to start from (words outside the vocabulary: <unk>)")
    generate.add_argument("--tokens", type=int, default=20, help="words to generate (default 20)")
    generate.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0: most likely word")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed")
    for parser in (run, generate):
        parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="engine precision")
        parser.add_argument("--threads", type=int, choices=[1, 2], default=1,
                            help="2: large products of a step on two threads (bit-identical results)")
        parser.add_argument("--data-dir", help="data root, if not the one recorded in the run's config.toml")
    run.set_defaults(func=_engine_run)
    generate.set_defaults(func=_engine_generate)


def _export(args: argparse.Namespace) -> int:
    """``ranvier export RUN_DIR --format nir``: the trained network as a NIR graph (docs/nir.md); issue 10."""
    import nir

    from .export.nir import to_nir
    from .report import load_run

    run = load_run(args.run_dir, data_dir=args.data_dir)
    graph = to_nir(run.model, dt=args.dt, discretisation=args.discretisation, extensions=args.extensions)
    output = Path(args.output) if args.output else Path(args.run_dir) / "model.nir"
    nir.write(str(output), graph)
    print(f"wrote {output}: {len(graph.nodes)} NIR nodes, one step = {args.dt:g} s, {args.discretisation} "
          f"discretisation{', with ranvier extensions' if args.extensions else ''}")
    wrapper = graph.metadata["ranvier"]
    if wrapper.get("model") == "SequenceClassifier":
        print(f"note: the graph maps each input step to the readout; the classifier's decision (mean readout over the "
              f"last {wrapper['readout_steps'] or 'all'} steps, each input step shown {wrapper['repeat']} time(s)) "
              "is recorded in the graph metadata, not in NIR nodes")
    return 0


def _add_export_parser(sub: Any) -> None:
    export = sub.add_parser("export", help="write a trained network in an interchange format (NIR)")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["nir"], default="nir", help="output format (default nir)")
    export.add_argument("-o", "--output", help="output file (default: RUN_DIR/model.nir)")
    export.add_argument("--dt", type=float, default=1e-3, help="seconds per step (default 1e-3: one step = 1 ms)")
    export.add_argument("--discretisation", choices=["zoh", "euler"], default="zoh",
                        help="the reader's integration rule: zoh (exact) or euler (snnTorch, Norse); docs/nir.md")
    export.add_argument("--extensions", action="store_true",
                        help="write what NIR cannot express (ALIF adaptation, subtractive reset, masks, ...) into "
                             "node metadata instead of failing")
    export.add_argument("--data-dir", help="data root, if not the one recorded in the run's config.toml")
    export.set_defaults(func=_export)


def build_parser() -> argparse.ArgumentParser:
    from .config import add_config_arguments

    parser = argparse.ArgumentParser(prog="ranvier", description="Activity-sparse recurrent networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model (default: ALIF on MNIST-1D)")
    train.add_argument("--preset", help="TOML preset: a file, or a built-in name (see `ranvier presets`)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add_config_arguments(train)
    train.set_defaults(func=_train)
    presets = sub.add_parser("presets", help="list the built-in presets")
    presets.set_defaults(func=_presets)
    show = sub.add_parser("show", help="print a run's metrics.json")
    show.add_argument("run_dir")
    show.set_defaults(func=_show)
    plot = sub.add_parser("plot", help="draw a run's learning curves and one sample's spike raster")
    plot.add_argument("run_dir")
    plot.add_argument("--output", help="PNG path (default: RUN_DIR/run.png)")
    plot.add_argument("--sample", type=int, default=0, help="test sample to draw")
    plot.set_defaults(func=_plot)
    report = sub.add_parser("report", help="efficiency metrics, energy estimates and plots of a finished run")
    report.add_argument("run_dir")
    report.add_argument("--samples", type=int, default=256,
                        help="test sequences (classification) or test tokens (language models) to run (default 256)")
    report.add_argument("--no-plots", action="store_true", help="write report.json and report.md only")
    report.add_argument("--data-dir", help="data root, if not the one recorded in the run's config.toml")
    report.set_defaults(func=_report)
    _add_engine_commands(sub)
    _add_export_parser(sub)  # issue 10
    return parser


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .distributed import WorkerLostError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, DataError, CheckpointError,
            WorkerLostError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
