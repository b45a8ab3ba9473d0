"""The generated sketch2color.v1 messages and stubs, built from proto/ on first use."""

from service.codegen import ensure_generated

ensure_generated()

from sketch2color.v1 import sketch2color_pb2 as pb  # noqa: E402
from sketch2color.v1 import sketch2color_pb2_grpc as pb_grpc  # noqa: E402

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Colorizer"].full_name

__all__ = ["pb", "pb_grpc", "SERVICE_NAME"]
