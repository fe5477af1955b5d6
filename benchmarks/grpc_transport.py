"""The gRPC transport's own ceiling, for the serving benchmark: a PredictionService whose
Predict answers an empty response at once, on grpc.aio as the model server serves gRPC. What
the benchmark's client gets from it at concurrency 1 and 32 bounds what any Predict on this
machine can get: the model server does the same transport work plus the model's.

    python -m benchmarks.grpc_transport PORT     # serves until killed
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class EmptyPredict(prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request, context):
        return predict_pb2.PredictResponse()


async def serve(port: int) -> None:
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(EmptyPredict(), server)
    if not server.add_insecure_port(f"127.0.0.1:{port}"):
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
