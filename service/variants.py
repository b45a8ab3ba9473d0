"""What Triton serves, seen from the API: the generator variants it holds, their hint kinds as the
proto names them, and Triton's errors as the gRPC status a caller should get."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2

from contract import wire
from contract.hints import HintKind
from service.api import pb
from service.imaging import RequestError

log = logging.getLogger("sketch2color.gateway")

HINT_KINDS = {kind: [pb.HintKind.Value(name) for name in names] for kind, names in wire.HINT_KIND_API.items()}


@dataclass
class VariantInfo:
    name: str
    hint: HintKind
    description: str
    version: str
    max_batch: int = 1  # the model's max_batch_size: the gateway's batches stay within it
    instances: int = 1  # model instances per Triton (its instance_group, KIND_AUTO resolved)
    gpu: bool = False
    ready: bool = True


def as_dict(message) -> dict:
    """A Triton answer as the JSON Triton's own tools print (proto field names; int64 as strings)."""
    return MessageToDict(message, preserving_proto_field_name=True)


async def discover(stub) -> dict[str, VariantInfo]:
    """The READY generators in one Triton's repository (a GRPCInferenceService stub) that speak `contract.wire`."""
    variants = {}
    index = as_dict(await stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=2))
    for model in index.get("models", []):
        name = model["name"]
        if model.get("state") != "READY":
            continue
        cfg = as_dict((await stub.ModelConfig(service_pb2.ModelConfigRequest(name=name), timeout=2)).config)
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        if "hint_encoding" not in params:
            continue  # not a generator
        hint = HintKind(params["hint_encoding"])
        if not speaks_wire(cfg, hint):
            log.warning(
                "%s: its inputs/outputs are not contract.wire's for %s hints: re-export it; not served",
                name,
                hint.value,
            )
            continue
        count, gpu = wire.instances(cfg)
        variants[name] = VariantInfo(
            name=name,
            hint=hint,
            description=params.get("description", ""),
            version=f"{model.get('version', '1')}+{params.get('weights_sha256', '')}".rstrip("+"),
            max_batch=max(1, int(cfg.get("max_batch_size", 1))),
            instances=count,
            gpu=gpu,
        )
    return variants


def speaks_wire(config: dict, hint: HintKind) -> bool:
    """Whether a Triton model config declares exactly the `contract.wire` tensors of its hint kind."""
    declared = [(t["name"], t.get("data_type"), tuple(int(d) for d in t["dims"])) for t in config["input"]]
    wanted = [(t.name, "TYPE_" + t.data_type, t.dims) for t in wire.inputs(hint)]
    out = [(t["name"], t.get("data_type"), tuple(int(d) for d in t["dims"])) for t in config["output"]]
    return declared == wanted and out == [(wire.IMAGE, "TYPE_" + wire.OUTPUT.data_type, wire.OUTPUT.dims)]


def accepts(variant: VariantInfo) -> str:
    kinds = [pb.HintKind.Name(k) for k in HINT_KINDS[variant.hint]]
    return "it accepts " + (", ".join(kinds) if kinds else "the sketch alone")


def triton_error(e: grpc.RpcError, variant: str) -> RequestError:
    """A failed inference as the caller's status: a deadline stays a deadline, Triton down is retryable."""
    code, message = e.code(), e.details() or ""
    if code is grpc.StatusCode.DEADLINE_EXCEEDED or "Deadline" in message:
        return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, f"the deadline passed during inference on {variant!r}")
    if code is grpc.StatusCode.UNAVAILABLE or "failed to connect" in message.lower():
        return RequestError(grpc.StatusCode.UNAVAILABLE, f"Triton is unavailable: {message}")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return RequestError(grpc.StatusCode.INTERNAL, f"Triton refused the encoded input for {variant!r}: {message}")
    return RequestError(grpc.StatusCode.UNAVAILABLE, f"Triton failed on {variant!r}: {code.name} {message}")
