"""training.export: a checkpoint becomes a Triton model directory that serves the same generator."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contract import wire
from training import export as E
from training.variants import VARIANTS

# One variant with the 10-channel point encoding, one with a 3-channel dense hint.
EXPORTED_VARIANTS = ["guided", "unet_patches20"]


@pytest.fixture(scope="module")
def exported(trained_checkpoint, tmp_path_factory):
    """A factory: (checkpoint, repository) after exporting a variant's checkpoint into a fresh repository."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(variant: str) -> tuple[Path, Path]:
        if variant not in done:
            repository = tmp_path_factory.mktemp(f"repository_{variant}")
            (repository / E.SHARED_MODEL_PY).write_text("# the shared Triton model\n")
            checkpoint = trained_checkpoint(variant)
            E.export(checkpoint, repository)
            done[variant] = checkpoint, repository
        return done[variant]

    return get


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def random_inputs(batch: int, channels: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, 128, 128, generator=generator) * 2 - 1


@pytest.mark.parametrize("variant", EXPORTED_VARIANTS)
def test_export_writes_a_triton_config_declaring_the_variant_tensors_and_hint_encoding(variant, exported):
    checkpoint, repository = exported(variant)
    hint = VARIANTS[variant].hint

    config = parse_config(repository / variant / "config.pbtxt")

    assert config.name == variant and config.backend == "python"
    assert config.max_batch_size == E.MAX_BATCH > 1
    assert config.HasField("dynamic_batching")
    inputs = [(i.name, list(i.dims), i.data_type) for i in config.input]
    assert inputs == [(t.name, list(t.dims), model_config_pb2.TYPE_UINT8) for t in wire.inputs(hint)]
    assert inputs[0] == ("sketch", [128, 128], model_config_pb2.TYPE_UINT8)
    (out,) = config.output
    assert out.name == "image" and out.data_type == model_config_pb2.TYPE_UINT8 and list(out.dims) == [128, 128, 3]
    parameters = {key: p.string_value for key, p in config.parameters.items()}
    assert parameters["hint_encoding"] == hint.value
    assert parameters["description"] == VARIANTS[variant].description
    weights = repository / variant / "1" / E.WEIGHTS_FILE
    assert parameters["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    trained = json.loads(parameters["trained"])
    assert trained["steps"] == torch.load(checkpoint, weights_only=False)["step"] and trained["data"] == "synthetic"
    (warmup,) = config.model_warmup
    assert {k: list(v.dims) for k, v in warmup.inputs.items()} == {name: dims for name, dims, _ in inputs}


def test_rewrite_config_writes_the_same_config_as_export_from_the_config_alone(exported, tmp_path):
    _, repository = exported("guided")
    path = repository / "guided" / "config.pbtxt"
    written = path.read_text()
    path.write_text(written.replace('name: "sketch"', 'name: "sketch_and_hints"'))  # as an older export
    E.rewrite_config(repository / "guided")
    assert path.read_text() == written


def test_export_links_model_py_to_the_one_shared_generator_model(exported):
    _, repository = exported("guided")
    link = repository / "guided" / "1" / "model.py"

    assert link.is_symlink()
    assert os.readlink(link) == os.path.join("..", "..", E.SHARED_MODEL_PY)
    assert link.resolve() == (repository / E.SHARED_MODEL_PY).resolve()
    assert link.read_text() == "# the shared Triton model\n"


def test_the_shipped_repository_has_the_shared_model_the_links_point_to(repo_root):
    assert (repo_root / "model_repository" / E.SHARED_MODEL_PY).is_file()


def test_exported_weights_are_stored_in_float16(exported):
    _, repository = exported("guided")

    program = torch.export.load(str(repository / "guided" / "1" / E.WEIGHTS_FILE))

    floats = [t for t in program.state_dict.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)


@pytest.mark.parametrize("batch", [1, 5])
def test_exported_generator_reloads_to_the_outputs_of_the_half_rounded_pytorch_generator(batch, exported):
    checkpoint, repository = exported("guided")
    served = E.load_exported(repository / "guided" / "1" / E.WEIGHTS_FILE)
    reference, _ = E.load_generator(checkpoint, half_weights=True)
    x = random_inputs(batch, VARIANTS["guided"].hint.channels, seed=batch)

    with torch.no_grad():
        got, want = served(x), reference(x)

    assert got.shape == (batch, 3, 128, 128) and got.dtype == torch.float32
    assert want.std() > 1e-3  # the outputs vary, so agreeing to 1e-5 says something
    assert np.allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_exported_generator_is_within_fp16_rounding_of_the_full_precision_generator(exported):
    checkpoint, repository = exported("guided")
    served = E.load_exported(repository / "guided" / "1" / E.WEIGHTS_FILE)
    full, _ = E.load_generator(checkpoint)
    x = random_inputs(4, VARIANTS["guided"].hint.channels)

    with torch.no_grad():
        got, want = served(x), full(x)

    assert not torch.equal(got, want)  # the weights were rounded to float16 ...
    assert np.allclose(got.numpy(), want.numpy(), atol=1e-2)  # ... and that is all that changed


def test_a_fine_tune_with_a_refinement_head_exports_the_head_and_says_what_it_started_from(
    trained_checkpoint, tiny_train_config, tmp_path
):
    from training.train import train

    start = trained_checkpoint("guided")
    train(tiny_train_config("guided", tmp_path / "run", refine=4, init_from=str(start)), resume=False)
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / E.SHARED_MODEL_PY).write_text("# the shared Triton model\n")
    E.export(tmp_path / "run" / "last.pt", repository)
    served = E.load_exported(repository / "guided" / "1" / E.WEIGHTS_FILE)
    reference, _ = E.load_generator(tmp_path / "run" / "last.pt", half_weights=True)
    x = random_inputs(2, VARIANTS["guided"].hint.channels)

    with torch.no_grad():
        assert np.allclose(served(x).numpy(), reference(x).numpy(), atol=1e-5)
    assert any(k.startswith("refine.") for k in served.state_dict())
    parameters = {k: v.string_value for k, v in parse_config(repository / "guided" / "config.pbtxt").parameters.items()}
    trained = json.loads(parameters["trained"])
    assert trained["refine"] == 4 and trained["fine_tuned_from"] == str(start)
