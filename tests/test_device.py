"""Device and precision settings, and layer-by-layer placement."""

from __future__ import annotations

import pytest
import torch

from structprune.calibration.statistics import collect_statistics
from structprune.model.device import (
    execution_device,
    layer_on_device,
    place_layerwise,
    resolve_device,
    resolve_dtype,
)
from structprune.model.geometry import decoder_layers


def test_auto_means_float32_on_cpu_and_bfloat16_on_gpu():
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) is torch.float16
    with pytest.raises(ValueError, match="dtype 'fp8'"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_a_gpu_that_is_not_there_is_an_error_not_a_silent_cpu_run():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="torch sees no GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="choose auto, cpu or cuda"):
        resolve_device("tpu")


def test_layer_on_device_moves_a_layer_for_the_block_and_back(model):
    layer = decoder_layers(model)[0]
    place_layerwise(model, torch.device("cpu"))
    assert execution_device(model) == torch.device("cpu")
    moves, move = [], layer.to
    layer.to = lambda device: moves.append(torch.device(device)) or move("cpu")  # record, stay on the host
    try:
        with layer_on_device(layer, torch.device("cuda")):
            assert moves == [torch.device("cuda")]
        with layer_on_device(layer, torch.device("cpu")):  # already home: no move
            pass
    finally:
        del layer.to
    assert moves == [torch.device("cuda"), torch.device("cpu")]


def test_bfloat16_weights_give_float64_statistics_close_to_float32(model, input_ids):
    reference, _ = collect_statistics(model, input_ids, batch_size=2, progress=False)
    half = type(model)(model.config).to(torch.bfloat16)
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    half.eval()
    stats, _ = collect_statistics(half, input_ids, batch_size=2, progress=False)
    key = "layers.1.mlp_in.second_moment"
    assert stats[key].dtype is torch.float64
    relative = (stats[key] - reference[key]).norm() / reference[key].norm()
    assert 0 < relative < 0.05
