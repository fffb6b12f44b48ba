"""The ``imgzoo`` command: a thin layer over the library.

Each subcommand is one small function that calls the public API; add new ones to
``COMMANDS`` via :func:`_parser`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from imgzoo.evaluation import predict
from imgzoo.export import FORMATS, ExportError, export_model
from imgzoo.factory import create_model
from imgzoo.hub import download, load
from imgzoo.registry import get_model_entry, get_weights_entry, list_models, list_pretrained


def models_table(pattern: str | None = None) -> str:
    """Build every registered model with its defaults and tabulate name, parameters and shapes."""
    rows = [("name", "params", "trainable", "input shape", "output shape", "description")]
    for name in list_models(pattern):
        entry = get_model_entry(name)
        model = create_model(name).eval()
        spec = entry.default_spec
        x = torch.zeros(2, *spec.input_shape)
        with torch.no_grad():
            out = model(x)
        params = sum(p.numel() for p in model.parameters())
        # Differs from params where a backbone starts frozen (dogbreed_transfer).
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        shapes = (str(tuple(x.shape)), str(tuple(out.shape)))
        rows.append((name, f"{params / 1e6:.2f}M", f"{trainable / 1e6:.2f}M", *shapes, entry.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(rows[0][-1]))
    return "\n".join(lines)


def _align(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns under a header row and a rule."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pretrained_table(pattern: str | None = None) -> str:
    """Every registered weights entry: what it was trained on, how well, and where its files are."""
    rows: list[tuple[str, ...]] = [("name", "dataset", "metrics", "params", "files")]
    for name in list_pretrained(pattern):
        entry = get_weights_entry(name)
        metrics = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.meta["metrics"].items()
        )
        where = f"hf-hub:{entry.repo_id}@{entry.revision[:12]}" if entry.repo_id else f"package:{entry.package_dir}"
        rows.append((name, str(entry.meta["dataset"]), metrics or "-", f"{entry.meta['num_params'] / 1e6:.2f}M", where))
    return _align(rows)


def _cmd_models(args: argparse.Namespace) -> int:
    print(models_table(args.pattern))
    if list_pretrained():
        print()
        print(pretrained_table())
    return 0


def _cmd_pretrained(args: argparse.Namespace) -> int:
    print(pretrained_table(args.pattern))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    model = load(args.weights)
    for path in args.images:
        ranked = predict(model, path, topk=args.topk)
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    print(download(args.name, revision=args.revision, cache_dir=args.cache_dir, force=args.force))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Exit 2 for what the user can fix (a name, a path, a missing extra), 1 when the export itself fails."""
    try:
        model = load(args.source)
        difference = export_model(model, args.out, format=args.format)
    except ExportError as exc:
        print(f"imgzoo: export failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except (ImportError, ValueError, OSError) as exc:  # one line: the messages name what to do
        print(f"imgzoo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.format}); max abs difference from PyTorch: {difference:.3g}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgzoo", description="Small models for small images.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="build every registered model and print its parameters and shapes")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*'")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("pretrained", help="list the pretrained weights that load by name")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'mnist*'")
    p.set_defaults(func=_cmd_pretrained)
    p = sub.add_parser("predict", help="classify image files with pretrained weights")
    p.add_argument("weights", help="a weights name, hf-hub:org/repo[@revision], or a folder written by imgzoo.save")
    p.add_argument("images", nargs="+", help="image files (any size or mode: the model's eval transform is applied)")
    p.add_argument("--topk", type=int, default=3, help="classes to show per image (default 3)")
    p.set_defaults(func=_cmd_predict)
    p = sub.add_parser("download", help="fetch pretrained weights into the Hugging Face cache for offline use")
    p.add_argument("name", help="a weights name from imgzoo.list_pretrained(), or hf-hub:org/repo[@revision]")
    p.add_argument("--revision", default=None, help="branch, tag or commit sha (hf-hub: names only)")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: HF_HUB_CACHE)")
    p.add_argument("--force", action="store_true", help="download again even if cached, e.g. after a sha256 error")
    p.set_defaults(func=_cmd_download)
    p = sub.add_parser("export", help="write a model as ONNX or TorchScript, checked against PyTorch")
    p.add_argument("source", help="a weights name, hf-hub:org/repo[@revision], or a folder written by imgzoo.save")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    # OSError covers missing files, refused tokens (HubAuthError) and the Hub's HTTP errors;
    # every message is imgzoo's or the Hub's, and none of them contains a token.
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"imgzoo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
