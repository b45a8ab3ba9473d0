"""The generated sketch2color.v1 messages and stubs, built from proto/ on first use."""

from service.codegen import ensure_generated

ensure_generated()

from sketch2color.v1 import sketch2color_pb2 as pb  # noqa: E402
from sketch2color.v1 import sketch2color_pb2_grpc as pb_grpc  # noqa: E402

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Colorizer"].full_name
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 50051  # where a gateway listens unless told otherwise
DEFAULT_ADDRESS = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
# The largest request or answer, in MB, on either side: a 40-Mpx line drawing as PNG fits. Each received
# message is copied once on the gateway's event loop (in gRPC's own code), so this also bounds how
# long one message can hold the loop.
MAX_MESSAGE_MB = 32

__all__ = ["pb", "pb_grpc", "SERVICE_NAME", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_ADDRESS", "MAX_MESSAGE_MB"]
