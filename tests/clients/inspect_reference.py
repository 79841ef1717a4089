"""What onnxruntime's Python API and the onnx package say about each model given on the command
line, as one JSON object per model, for `aifn inspect` to be compared with (tests/inspect.rs)."""
import json
import sys

import onnx
import onnxruntime as ort

for path in sys.argv[1:]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta()
    model = onnx.load(path, load_external_data=False)
    ports = lambda args: [{"name": a.name, "type": a.type, "shape": a.shape} for a in args]
    print(json.dumps({
        "path": path,
        "inputs": ports(session.get_inputs()),
        "outputs": ports(session.get_outputs()),
        "producer_name": meta.producer_name,
        "producer_version": model.producer_version,
        "ir_version": model.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "metadata": meta.custom_metadata_map,
    }))
