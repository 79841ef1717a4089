#!/usr/bin/env python3
"""Makes `sentiment.onnx`: all-MiniLM-L6-v2 followed by the trained classifier head, in one graph.

The text-embedder's model (fetched by ./scripts/setup.sh) is extended with mean pooling over the
attention mask, L2 normalisation and the logistic-regression head from `head.json` (made by
`train.py`), so one inference answers `probabilities` float32 [batch, 2] (negative, positive).
Run by ./scripts/setup.sh; remade when the model or the head changes.
"""
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
BASE = HERE.parent.parent / "text-embedder" / "model" / "model.onnx"
OUT = HERE / "sentiment.onnx"


def main() -> None:
    head = json.loads((HERE / "head.json").read_text())
    model = onnx.load(str(BASE))
    graph = model.graph
    weights = np.array(head["weights"], dtype=np.float32).reshape(-1, 1)
    graph.initializer.extend([
        numpy_helper.from_array(weights, "head_weights"),
        numpy_helper.from_array(np.array([head["bias"]], dtype=np.float32), "head_bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "tiny"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ])
    node = helper.make_node
    graph.node.extend([
        # Mean of the token vectors the attention mask keeps.
        node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["mask_f", "axis_2"], ["mask_3d"]),
        node("Mul", ["last_hidden_state", "mask_3d"], ["masked"]),
        node("ReduceSum", ["masked", "axis_1"], ["summed"], keepdims=0),
        node("ReduceSum", ["mask_3d", "axis_1"], ["count"], keepdims=0),
        node("Max", ["count", "tiny"], ["count_safe"]),
        node("Div", ["summed", "count_safe"], ["mean"]),
        node("LpNormalization", ["mean"], ["sentence_embedding"], axis=1, p=2),
        # Logistic regression: p(positive) = sigmoid(w . x + b).
        node("MatMul", ["sentence_embedding", "head_weights"], ["logit_raw"]),
        node("Add", ["logit_raw", "head_bias"], ["logit"]),
        node("Sigmoid", ["logit"], ["p_positive"]),
        node("Sub", ["one", "p_positive"], ["p_negative"]),
        node("Concat", ["p_negative", "p_positive"], ["probabilities"], axis=1),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]))
    onnx.checker.check_model(model)
    partial = OUT.with_suffix(".onnx.partial")
    onnx.save(model, str(partial))
    partial.replace(OUT)
    print(f"{OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
