"""The peer side of bench_onnx_encode.py, run in an environment that has sentence-transformers' ONNX backend
(optimum-onnx, which pins transformers<4.58 and so cannot sit beside hydrabert): export the encoder with
sentence-transformers' own O2 optimisation, then time `SentenceTransformer(..., backend="onnx").encode`.

    python st_onnx_peer.py MODEL_DIR WORK_DIR SENTENCES_JSON BATCH_SIZE MAX_LENGTH ROUNDS

Prints one JSON line: the seconds of each round, the embedding of the first sentences, versions.
"""

import json
import os
import shutil
import sys
import time

import onnxruntime
import sentence_transformers
import transformers
from sentence_transformers import SentenceTransformer, export_optimized_onnx_model

model_dir, work, sentences_json, batch_size, max_length, rounds = sys.argv[1:7]
batch_size, max_length, rounds = int(batch_size), int(max_length), int(rounds)
with open(sentences_json, encoding="utf-8") as handle:
    sentences = json.load(handle)

copy = os.path.join(work, "st_model")
shutil.copytree(model_dir, copy, dirs_exist_ok=True)  # the export writes onnx/ next to the weights
exporting = SentenceTransformer(copy, backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"})
exporting.save_pretrained(copy)  # onnx/model.onnx, the plain export
export_optimized_onnx_model(exporting, "O2", copy)  # onnx/model_O2.onnx
options = onnxruntime.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
model = SentenceTransformer(
    copy,
    backend="onnx",
    model_kwargs={
        "file_name": "onnx/model_O2.onnx",
        "provider": "CPUExecutionProvider",
        "session_options": options,
    },
)
model.max_seq_length = max_length
model.encode(sentences[:64], batch_size=batch_size)  # warm-up
seconds = []
for _ in range(rounds):
    start = time.perf_counter()
    embeddings = model.encode(sentences, batch_size=batch_size, show_progress_bar=False)
    seconds.append(time.perf_counter() - start)
print(
    json.dumps(
        {
            "seconds": seconds,
            "first_embeddings": embeddings[:4].tolist(),
            "versions": {
                "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        }
    )
)
