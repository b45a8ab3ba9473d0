"""Export a trained generator into the Triton model repository.

``python -m training.export runs/guided/last.pt`` writes ``model_repository/guided/``:

- ``config.pbtxt``: the Triton model (Python backend, dynamic batching, warm-up), its inputs and
  output as `contract.wire` defines them for the hint kind, and, as parameters, the variant's hint
  encoding and description: the gateway and the Triton model read them from there.
- ``1/generator.pt2``: the generator as a ``torch.export`` program with float16 weights (half
  the bytes; the Triton model computes in float32 on a CPU, float16 on a GPU), batches of 1-256.
- ``1/model.py``: a link to the one shared ``model_repository/generator_model.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from contract import wire
from contract.hints import MODEL_SIZE, HintKind
from contract.wire import WEIGHTS_FILE
from training.checkpoint import read_checkpoint
from training.networks import UNet, UNetConfig

SHARED_MODEL_PY = "generator_model.py"
MAX_BATCH = 256  # Triton's dynamic batches and the exported program's batch dimension


@dataclass(frozen=True)
class ExportInfo:
    """What the model card and config.pbtxt say about an exported generator."""

    variant: str
    hint: HintKind
    description: str
    channels: int
    parameters: int
    sha256: str


def load_generator(
    checkpoint: Path | str, half_weights: bool = False, use_eval_state: bool = True
) -> tuple[UNet, dict]:
    """The generator of a checkpoint, in eval mode, rebuilt from the checkpoint alone.

    With use_eval_state, the weights with batch-norm statistics measured over many batches
    (``G_eval``, `training.calibrate`) where the checkpoint has them. half_weights rounds the
    weights through float16, as export stores them, so the result is the network Triton serves.
    """
    ckpt = read_checkpoint(checkpoint)
    generator = UNet(UNetConfig(**ckpt["generator_config"]))
    generator.load_state_dict(ckpt["G_eval"] if use_eval_state and ckpt.get("G_eval") else ckpt["G"])
    if half_weights:
        generator.half().float()
    return generator.eval(), ckpt


def load_exported(path: Path | str) -> torch.nn.Module:
    """An exported generator.pt2 as a float32 module: (B, C, 128, 128) -> (B, 3, 128, 128)."""
    return torch.export.load(str(path)).module().float()


def export(checkpoint: Path | str, repository: Path | str = "model_repository", name: str | None = None) -> ExportInfo:
    generator, ckpt = load_generator(checkpoint)
    variant = ckpt["variant"]
    name = name or variant["name"]
    hint = HintKind(variant["hint"])
    model_dir = Path(repository) / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)

    generator.half()
    example = torch.zeros(2, hint.channels, MODEL_SIZE, MODEL_SIZE, dtype=torch.float16)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(generator, (example,), dynamic_shapes=({0: batch},))
    for node in program.graph.nodes:  # source paths of the exporting machine: not for shipping
        node.meta.pop("stack_trace", None)
    weights = version_dir / WEIGHTS_FILE
    torch.export.save(program, str(weights))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()

    link = version_dir / "model.py"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path("..") / ".." / SHARED_MODEL_PY)

    info = ExportInfo(
        variant=name,
        hint=hint,
        description=variant["description"],
        channels=hint.channels,
        parameters=sum(p.numel() for p in generator.parameters()),
        sha256=sha,
    )
    trained = {k: ckpt["config"][k] for k in ("data", "width", "batch_size", "seed")}
    trained.update(epochs=round(ckpt["epoch"], 2), steps=ckpt["step"])
    if ckpt["history"].get("wall_time_s"):  # runs from before it was recorded have none
        trained["wall_time_min"] = round(ckpt["history"]["wall_time_s"] / 60, 1)
    if ckpt["config"].get("refine"):
        trained["refine"] = ckpt["config"]["refine"]
    if ckpt["config"].get("init_from"):  # a fine-tune: the figures above are this run's alone
        trained["fine_tuned_from"] = ckpt["config"]["init_from"]
    (model_dir / "config.pbtxt").write_text(triton_config(info, trained))
    return info


def triton_config(info: ExportInfo, trained: dict) -> str:
    def param(key: str, value: str) -> str:
        return f'  {{ key: "{key}" value: {{ string_value: {json.dumps(value)} }} }}'

    def dims(spec: wire.TensorSpec) -> str:
        return "[ " + ", ".join(map(str, spec.dims)) + " ]"

    specs = wire.inputs(info.hint)
    declared = ",\n".join(f'  {{ name: "{t.name}" data_type: TYPE_{t.data_type} dims: {dims(t)} }}' for t in specs)
    warmup = "\n".join(
        f'    inputs {{ key: "{t.name}" value: {{ data_type: TYPE_{t.data_type} dims: {dims(t)} zero_data: true }} }}'
        for t in specs
    )
    return f"""# Written by `python -m training.export`; the gateway and the model read the parameters below.
name: "{info.variant}"
backend: "python"
max_batch_size: {MAX_BATCH}
input [
{declared}
]
output [
  {{ name: "{wire.OUTPUT.name}" data_type: TYPE_{wire.OUTPUT.data_type} dims: {dims(wire.OUTPUT)} }}
]
dynamic_batching {{
  preferred_batch_size: [ 8, 16, 32 ]
  max_queue_delay_microseconds: 2000
}}
# KIND_AUTO: GPU instances where Triton sees one, else the CPU.
instance_group [ {{ count: {wire.INSTANCES} kind: KIND_AUTO }} ]
parameters [
{param("hint_encoding", info.hint.value)},
{param("description", info.description)},
{param("weights_sha256", info.sha256[:16])},
{param("max_forward_batch_cpu", str(wire.FORWARD_BATCH["cpu"]))},
{param("max_forward_batch_gpu", str(wire.FORWARD_BATCH["gpu"]))},
{param("trained", json.dumps(trained, sort_keys=True))}
]
model_warmup [
  {{
    name: "zeros"
    batch_size: 1
{warmup}
  }}
]
"""


def rewrite_config(model_dir: Path | str) -> None:
    """Write an exported model's config.pbtxt anew from its own parameters (after the wire or the
    config format changed), without the checkpoint: the weights stay as they are."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = Path(model_dir) / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    params = {k: v.string_value for k, v in config.parameters.items()}
    hint = HintKind(params["hint_encoding"])
    info = ExportInfo(config.name, hint, params["description"], hint.channels, 0, params["weights_sha256"])
    path.write_text(triton_config(info, json.loads(params["trained"])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="+", help="runs/<variant>/last.pt ...")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--name", help="model name in the repository (default: the variant's)")
    parser.add_argument(
        "--rewrite-config",
        action="store_true",
        help="the arguments are exported model dirs: rewrite their config.pbtxt only",
    )
    args = parser.parse_args(argv)
    if args.rewrite_config:
        for model_dir in args.checkpoint:
            rewrite_config(model_dir)
            print(f"{model_dir}/config.pbtxt rewritten")
        return
    for checkpoint in args.checkpoint:
        info = export(checkpoint, args.repository, args.name)
        print(f"{checkpoint} -> {args.repository / info.variant} ({info.parameters:,} parameters, {info.hint.value})")


if __name__ == "__main__":
    main()
