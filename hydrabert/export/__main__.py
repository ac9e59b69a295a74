"""Export a saved hydrabert model to formats that need no remote code.

    python -m hydrabert.export task MODEL OUTPUT --task sentiment     # a standard *ForSequenceClassification
    python -m hydrabert.export sentence-transformer MODEL OUTPUT [--normalize]
    python -m hydrabert.export onnx MODEL OUTPUT [--quantize]          # OUTPUT/model.onnx (+ model_quantized.onnx)
    python -m hydrabert.export all MODEL                                 # everything exact, next to MODEL

MODEL is a folder or Hub id of a hydrabert model; its tokenizer is used unless --tokenizer is given.
`all` writes MODEL/onnx/, MODEL-<task>/ for each task and MODEL-sentence-transformer/ (the layout
run_mtl.py --export writes; see docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from transformers import AutoTokenizer

from ..modeling_hydrabert import HydraBertModel
from .deploy import plan_exports, write_exports
from .onnx_graph import export_onnx
from .sentence_transformer import export_sentence_transformer
from .task_classifier import export_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hydrabert.export", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("task", "one task as the encoder family's own *ForSequenceClassification"),
        ("sentence-transformer", "the sentence encoder as a sentence-transformers model"),
        ("onnx", "the whole multi-task model as one ONNX graph"),
        ("all", "every export that is exact for this model, next to MODEL"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("model", help="hydrabert model folder or Hub id")
        if name != "all":
            command.add_argument("output", help="folder to write")
        command.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the model's)")
        if name == "task":
            command.add_argument("--task", required=True, help="the task to export")
        if name == "sentence-transformer":
            command.add_argument("--normalize", action="store_true", help="append a Normalize module")
        if name == "onnx":
            command.add_argument(
                "--quantize", action="store_true", help="also write an int8 model_quantized.onnx"
            )
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "all" and not os.path.isdir(args.model):
        parser.error(f"all writes next to MODEL, which must be a local folder: {args.model!r} is not one")
    # hydrabert's own lines at INFO (what was fused, where each export went); everything else at WARNING, since
    # onnxscript's optimizer and onnxruntime's quantizer log a line per pass or node at INFO (160 on a MiniLM).
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s")
    logging.getLogger("hydrabert").setLevel(logging.INFO)
    model = HydraBertModel.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    if args.command == "task":
        export_task(model, args.task, args.output, tokenizer=tokenizer, source=args.model)
        written = {f"task:{args.task}": args.output}
    elif args.command == "sentence-transformer":
        export_sentence_transformer(
            model, args.output, tokenizer=tokenizer, normalize=args.normalize, source=args.model
        )
        written = {"sentence_transformer": args.output}
    elif args.command == "onnx":
        result = export_onnx(model, args.output, tokenizer=tokenizer, quantize=args.quantize)
        written = {"onnx": args.output, "onnx_max_abs_diff": result.max_abs_diff}
    else:
        written = write_exports(model, tokenizer, args.model, plan_exports(model, "all"))
    print(json.dumps(written, indent=2))
    return written


if __name__ == "__main__":
    main()
