"""Triton's own Python client (tritonclient, unmodified) against an aifn host, over HTTP or gRPC,
plaintext or TLS. Reads what to ask from stdin as JSON and prints what came back as JSON, for
tests/transport.rs to compare with the REST answers.

stdin: {"url": "127.0.0.1:PORT", "protocol": "http" | "grpc", "ca": PATH | null,
        "api_key": KEY, "churn_rows": [[6 floats], ...],
        "embedder": {"input_ids": [[...]], "attention_mask": [[...]], "token_type_ids": [[...]]},
        "module_calls": [{"model": NAME, "body": TEXT, "key": KEY | null}]}
"""

import json
import sys

import numpy as np


def main():
    ask = json.load(sys.stdin)
    grpc = ask["protocol"] == "grpc"
    if grpc:
        import tritonclient.grpc as client_lib
    else:
        import tritonclient.http as client_lib
    from tritonclient.utils import InferenceServerException

    ca = ask.get("ca")
    if grpc:
        client = client_lib.InferenceServerClient(ask["url"], ssl=bool(ca), root_certificates=ca)
    elif ca:
        client = client_lib.InferenceServerClient(
            ask["url"], ssl=True, ssl_options={"ca_certs": ca}, concurrency=4
        )
    else:
        client = client_lib.InferenceServerClient(ask["url"], concurrency=4)

    def metadata(value):
        # gRPC answers protobuf messages; the HTTP client answers dicts.
        if grpc:
            from google.protobuf.json_format import MessageToDict

            return MessageToDict(value, preserving_proto_field_name=True)
        return value

    def tensor(name, array, datatype):
        t = client_lib.InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array)
        return t

    def error(call):
        try:
            call()
        except InferenceServerException as e:
            return {"status": str(e.status()), "message": e.message()}
        return None

    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": metadata(client.get_server_metadata()),
        "models": {},
    }
    for name in ("churn-predictor", "text-embedder"):
        out["models"][name] = {
            "ready": client.is_model_ready(name),
            "metadata": metadata(client.get_model_metadata(name)),
        }

    index = client.get_model_repository_index()
    if grpc:
        index = [metadata(m) for m in index.models]
    out["repository"] = sorted(m["name"] for m in index if m.get("state") == "READY")

    rows = np.array(ask["churn_rows"], dtype=np.float32)
    answer = client.infer("churn-predictor", [tensor("features", rows, "FP32")])
    out["churn"] = {
        "probabilities": answer.as_numpy("probabilities").tolist(),
        "label": answer.as_numpy("label").tolist(),
        "model_version": answer.get_response()["model_version"]
        if not grpc
        else answer.get_response().model_version,
    }
    # One output asked for by name (JSON on HTTP), with a request id echoed back.
    requested = [client_lib.InferRequestedOutput("probabilities")]
    if not grpc:
        requested = [client_lib.InferRequestedOutput("probabilities", binary_data=False)]
    answer = client.infer(
        "churn-predictor", [tensor("features", rows, "FP32")], outputs=requested, request_id="r-7"
    )
    out["churn_selected"] = {
        "probabilities": answer.as_numpy("probabilities").tolist(),
        "label_present": answer.as_numpy("label") is not None,
        "id": answer.get_response()["id"] if not grpc else answer.get_response().id,
    }

    embedder = ask["embedder"]
    inputs = [
        tensor(name, np.array(embedder[name], dtype=np.int64), "INT64")
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    answer = client.infer("text-embedder", inputs)
    outputs = [o["name"] for o in out["models"]["text-embedder"]["metadata"]["outputs"]]
    out["embedder"] = {name: answer.as_numpy(name).tolist() for name in outputs}

    # Through a function's module (gRPC): one BYTES input `request` carries the body.
    out["module"] = []
    for call in ask.get("module_calls", []) if grpc else []:
        body = np.array([call["body"].encode()], dtype=np.object_)
        headers = {"x-api-key": call["key"]} if call.get("key") else None
        try:
            answer = client.infer(call["model"], [tensor("request", body, "BYTES")], headers=headers)
            out["module"].append({"body": answer.as_numpy("response")[0].decode()})
        except InferenceServerException as e:
            out["module"].append({"status": str(e.status()), "message": e.message()})

    wrong = np.zeros((1, 5), dtype=np.float32)
    out["errors"] = {
        "wrong_shape": error(lambda: client.infer("churn-predictor", [tensor("features", wrong, "FP32")])),
        "unknown_model": error(lambda: client.get_model_metadata("no-such-model")),
        "unknown_version": error(
            lambda: client.infer("churn-predictor", [tensor("features", rows, "FP32")], model_version="99")
        ),
    }
    client.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
