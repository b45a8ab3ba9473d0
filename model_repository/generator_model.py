"""The Triton Python-backend model that serves every generator variant.

Each ``<variant>/1/model.py`` links here; ``<variant>/1/generator.pt2`` holds the weights and
``<variant>/config.pbtxt`` the hint encoding, tensor names and batch limits, all read at start-up.
Requests carry the compact uint8 tensors of `contract.wire` (the sketch on the model grid, plus a
hints table or a rough colour image); the model encodes a whole batch with `contract.batch`, the
code training uses, so any Triton client gets what the gateway gets. The requests of a batch are
stacked into forward passes of at most the instance kind's batch limit (a hinted ``points`` input
takes two, `contract.batch.generate`, so that its hints stay in their regions); a malformed request gets
its own error response and the rest of the batch is still served. The answer is uint8 RGB.

Tensors cross into and out of torch through DLPack, never numpy: on a GPU box the numpy path
answered every request with an empty output tensor, and DLPack also leaves a GPU instance's
output on the GPU for Triton to copy once. A GPU instance computes in float16 with
channels_last (the tensor cores' layout); a CPU instance in float32 (CPU half kernels are slow).
"""

import json
import os
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack

from contract import batch as B
from contract import wire
from contract.hints import HintKind


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.hint = HintKind(params["hint_encoding"])
        self.inputs = wire.inputs(self.hint)
        declared = [(i["name"], tuple(int(d) for d in i["dims"])) for i in config["input"]]
        if declared != [(spec.name, spec.dims) for spec in self.inputs]:
            raise ValueError(
                f"config.pbtxt declares inputs {declared}; a {self.hint.value} generator takes "
                f"{[(spec.name, spec.dims) for spec in self.inputs]}: re-export it"
            )
        (out,) = config["output"]
        self.output_name = out["name"]
        kind = "GPU" if args["model_instance_kind"] == "GPU" else "CPU"
        self.forward_batch = int(params.get(f"max_forward_batch_{kind.lower()}", wire.FORWARD_BATCH[kind.lower()]))
        if kind == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
            self.dtype, self.memory_format = torch.float16, torch.channels_last
        else:
            self.device, self.dtype, self.memory_format = torch.device("cpu"), torch.float32, torch.contiguous_format
        threads = int(os.environ.get("SKETCH2COLOR_TORCH_THREADS", "0"))
        if not threads and kind == "CPU":
            threads = wire.cpu_threads(len(os.sched_getaffinity(0)), wire.instances(config)[0])
        if threads:
            torch.set_num_threads(threads)
        weights = Path(args["model_repository"]) / args["model_version"] / wire.WEIGHTS_FILE
        module = torch.export.load(str(weights)).module()  # float16 weights as stored
        self.generator = module.to(self.device, self.dtype).to(memory_format=self.memory_format)
        pb_utils.Logger.log_info(
            f"{args['model_name']}: {weights.name} on {self.device} in {self.dtype}, {self.hint.value} hints, "
            f"forward batches of <= {self.forward_batch}, {torch.get_num_threads()} torch threads"
        )

    def execute(self, requests):
        responses = [None] * len(requests)
        batches, owners = [], []
        for i, request in enumerate(requests):
            tensors, error = {}, None
            for spec in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is None:
                    error = f"missing input tensor '{spec.name}'"
                    break
                tensors[spec.name] = from_dlpack(tensor.to_dlpack())
            if error is None and wire.HINTS in tensors:
                error = wire.check_hints(tensors[wire.HINTS].reshape(-1, wire.HINT_FIELDS).cpu().numpy())
            if error is not None:
                responses[i] = self._error(error)
            else:
                batches.append(tensors)
                owners.append(i)
        if batches:
            joined = {spec.name: torch.cat([t[spec.name] for t in batches]) for spec in self.inputs}
            images = self.forward(joined)  # (sum N_i, 128, 128, 3) uint8 on the instance's device
            start = 0
            for owner, tensors in zip(owners, batches):
                n = tensors[wire.SKETCH].shape[0]
                part = images[start : start + n].contiguous()
                start += n
                out = pb_utils.Tensor.from_dlpack(self.output_name, to_dlpack(part))
                responses[owner] = pb_utils.InferenceResponse(output_tensors=[out])
        return responses

    @torch.inference_mode()
    def forward(self, tensors):
        sketch = tensors[wire.SKETCH].to(self.device, non_blocking=True)
        hints, color = tensors.get(wire.HINTS), tensors.get(wire.COLOR_HINT)
        x = B.encode_wire(self.hint, sketch, hints, color)
        x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
        return B.to_image(B.generate(self.generator, self.hint, x, self.forward_batch))

    @staticmethod
    def _error(message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
