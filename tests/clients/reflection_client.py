"""A grpcurl-style client: it knows nothing of aifn's proto. It asks the host's gRPC health
service, lists the services by server reflection, learns ModelInfer's message types from the
descriptors reflection serves, builds a request from them, and calls it.

argv: ADDRESS MODEL. Prints JSON: {"health": {service: status}, "services": [...],
"infer_input_type": ..., "outputs": {name: [floats]}}.
"""

import json
import struct
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    address, model = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    statuses = {}
    for service in ("", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("inference.GRPCInferenceService").FindMethodByName("ModelInfer")
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)

    request = request_type(model_name=model)
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 6])
    tensor.contents.fp32_contents.extend([42.5, 12, 1, 0, 0, 1])
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    answer = call(request, timeout=10)
    outputs = {}
    for output, raw in zip(answer.outputs, answer.raw_output_contents):
        if output.datatype == "FP32":
            outputs[output.name] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    json.dump(
        {
            "health": statuses,
            "services": services,
            "infer_input_type": method.input_type.full_name,
            "outputs": outputs,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
