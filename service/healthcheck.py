"""Container health check for the gateway: exit 0 when its gRPC health service says SERVING.

python -m service.healthcheck [127.0.0.1:50051]
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api import DEFAULT_HOST, DEFAULT_PORT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else f"{DEFAULT_HOST}:{os.environ.get('SKETCH2COLOR_PORT', DEFAULT_PORT)}"
    try:
        with grpc.insecure_channel(target) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3).status
    except grpc.RpcError as e:
        print(f"{target}: {e.code().name}", file=sys.stderr)
        return 1
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
