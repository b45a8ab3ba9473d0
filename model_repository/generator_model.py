"""The Triton Python-backend model that serves every generator variant.

Each ``<variant>/1/model.py`` links here; ``<variant>/1/generator.pt2`` holds the weights and
``<variant>/config.pbtxt`` the tensor names, dtypes and batch limits, all read at start-up.
The requests of a batch are stacked into one forward pass; a malformed request gets its own
error response and the rest of the batch is still served.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        (inp,) = config["input"]
        (out,) = config["output"]
        self.input_name, self.output_name = inp["name"], out["name"]
        self.input_shape = tuple(int(d) for d in inp["dims"])  # (C, 128, 128), batch dim excluded
        self.input_dtype = pb_utils.triton_string_to_numpy(inp["data_type"])
        self.output_dtype = pb_utils.triton_string_to_numpy(out["data_type"])
        if args["model_instance_kind"] == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        threads = int(os.environ.get("SKETCH2COLOR_TORCH_THREADS", "0"))
        if threads:  # one instance per model: cap each, or five models oversubscribe the cores
            torch.set_num_threads(threads)
        weights = Path(args["model_repository"]) / args["model_version"] / "generator.pt2"
        # Weights are stored in float16; compute in float32 (CPU kernels for half are slow).
        self.generator = torch.export.load(str(weights)).module().float().to(self.device)
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{args['model_name']}: {weights.name} on {self.device}, input {self.input_shape}")

    def execute(self, requests):
        responses = [None] * len(requests)
        arrays, owners = [], []
        for i, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if tensor is None:
                responses[i] = self._error(f"missing input tensor '{self.input_name}'")
                continue
            x = tensor.as_numpy()
            if x.ndim != 4 or x.shape[1:] != self.input_shape:
                responses[i] = self._error(f"'{self.input_name}' must be [N, {self.input_shape}], got {list(x.shape)}")
            elif not np.isfinite(x).all():
                responses[i] = self._error(f"'{self.input_name}' holds NaN or infinite values")
            else:
                arrays.append(x.astype(np.float32, copy=False))
                owners.append(i)
        if arrays:
            # One forward pass for the whole dynamic batch: (sum N_i, C, 128, 128) -> (sum N_i, 3, 128, 128).
            batch = torch.from_numpy(np.concatenate(arrays)).to(self.device)
            with torch.inference_mode():
                colors = self.generator(batch).cpu().numpy().astype(self.output_dtype, copy=False)
            offsets = np.cumsum([0] + [a.shape[0] for a in arrays])
            for owner, start, stop in zip(owners, offsets[:-1], offsets[1:]):
                out = pb_utils.Tensor(self.output_name, colors[start:stop])
                responses[owner] = pb_utils.InferenceResponse(output_tensors=[out])
        return responses

    @staticmethod
    def _error(message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
