"""Makes model.onnx, the small model every `aifn new` template starts with (committed; run again to
remake it): score = sigmoid(x · w + b) for x = [bytes, words] of a text, f32 [batch, 2] → [batch, 1].
The numbers mean nothing; replace the model with yours."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHTS = np.array([[0.01], [0.1]], dtype=np.float32)
BIAS = np.array([-1.0], dtype=np.float32)

graph = helper.make_graph(
    [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ],
    "template",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
    [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
    [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BIAS, "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="aifn")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, Path(__file__).with_name("model.onnx"))
