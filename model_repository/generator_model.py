"""The Triton Python-backend model that serves every generator variant.

Each ``<variant>/1/model.py`` links here; ``<variant>/1/generator.pt2`` holds the weights and
``<variant>/config.pbtxt`` the tensor names, dtypes and batch limits, all read at start-up.
The requests of a batch are stacked into forward passes of at most the instance kind's batch
limit; a malformed request gets its own error response and the rest of the batch is still served.

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

DEFAULT_FORWARD_BATCH = {"CPU": 32, "GPU": 256}  # unless config.pbtxt's max_forward_batch_{cpu,gpu} says


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        (inp,) = config["input"]
        (out,) = config["output"]
        self.input_name, self.output_name = inp["name"], out["name"]
        self.input_shape = tuple(int(d) for d in inp["dims"])  # (C, 128, 128), batch dim excluded
        kind = "GPU" if args["model_instance_kind"] == "GPU" else "CPU"
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.forward_batch = int(params.get(f"max_forward_batch_{kind.lower()}", DEFAULT_FORWARD_BATCH[kind]))
        if kind == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
            self.dtype, self.memory_format = torch.float16, torch.channels_last
        else:
            self.device, self.dtype, self.memory_format = torch.device("cpu"), torch.float32, torch.contiguous_format
        threads = int(os.environ.get("SKETCH2COLOR_TORCH_THREADS", "0"))
        if threads:  # one instance per model: cap each, or five models oversubscribe the cores
            torch.set_num_threads(threads)
        weights = Path(args["model_repository"]) / args["model_version"] / "generator.pt2"
        module = torch.export.load(str(weights)).module()  # float16 weights as stored
        self.generator = module.to(self.device, self.dtype).to(memory_format=self.memory_format)
        pb_utils.Logger.log_info(
            f"{args['model_name']}: {weights.name} on {self.device} in {self.dtype}, input {self.input_shape}, "
            f"forward batches of <= {self.forward_batch}"
        )

    def execute(self, requests):
        responses = [None] * len(requests)
        inputs, owners = [], []
        for i, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if tensor is None:
                responses[i] = self._error(f"missing input tensor '{self.input_name}'")
                continue
            x = from_dlpack(tensor.to_dlpack())
            if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
                responses[i] = self._error(f"'{self.input_name}' must be [N, {self.input_shape}], got {list(x.shape)}")
            elif not torch.isfinite(x).all():
                responses[i] = self._error(f"'{self.input_name}' holds NaN or infinite values")
            else:
                inputs.append(x)
                owners.append(i)
        if inputs:
            colors = self.forward(torch.cat(inputs))  # (sum N_i, C, 128, 128) -> (sum N_i, 3, 128, 128) float32
            start = 0
            for owner, x in zip(owners, inputs):
                part = colors[start : start + x.shape[0]].contiguous()
                start += x.shape[0]
                out = pb_utils.Tensor.from_dlpack(self.output_name, to_dlpack(part))
                responses[owner] = pb_utils.InferenceResponse(output_tensors=[out])
        return responses

    @torch.inference_mode()
    def forward(self, batch):
        batch = batch.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=self.memory_format)
        parts = [self.generator(chunk) for chunk in batch.split(self.forward_batch)]
        return torch.cat(parts).float()  # output FP32 as config.pbtxt declares, on the instance's device

    @staticmethod
    def _error(message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
