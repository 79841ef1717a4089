"""Calls ModelInfer over gRPC until the endpoint's rate limit refuses, with grpcio and the stubs
tritonclient ships; prints the codes and what the refusal carried (JSON)."""

import json
import struct
import sys

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


def main():
    address, calls = sys.argv[1], int(sys.argv[2])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    request = service_pb2.ModelInferRequest(model_name="churn-predictor")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 6])
    request.raw_input_contents.append(struct.pack("<6f", 42.5, 12, 1, 0, 0, 1))
    codes, refusal = [], None
    for _ in range(calls):
        try:
            stub.ModelInfer(request, timeout=10)
            codes.append("OK")
        except grpc.RpcError as e:
            codes.append(e.code().name)
            metadata = dict(e.trailing_metadata() or ())
            refusal = {
                "message": e.details(),
                "retry_after": metadata.get("retry-after"),
                "x_aifn_error": metadata.get("x-aifn-error"),
                "has_status_details": "grpc-status-details-bin" in metadata,
            }
    json.dump({"codes": codes, "refusal": refusal}, sys.stdout)


if __name__ == "__main__":
    main()
