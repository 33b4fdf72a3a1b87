"""The dense model's stream through its decoder layers: run live, or read from a cache.

Every refit (ours, and the paper's pre-pruning recovery) compares the pruned layer with the
dense one on the same calibration samples, so the engine advances a dense stream beside
the pruned one. Run live, that is one dense layer pass per layer for every method, sparsity
and select candidate using the samples, although it never changes. `record_dense_stream`
runs it once per (model, sample set) and keeps, per decoder layer, o_proj's and down_proj's
outputs, from which the layer's residual stream follows (model/blocks.py):

    mid = hidden + update(attn_out)    (attn_out: o_proj's output)
    out = mid + update(mlp_out)        (mlp_out: down_proj's output)

(`update` is the identity in a pre-norm block, the post-norm in a sandwich one.)

plus the hidden states entering layer 0, and per batch the energy ||W x||^2 per output
channel of each first-level map (q, k, v, gate, up: `output_energy`), which the paper's
recovery reports its errors against. Everything a refit reads is derived from them exactly:
the residual stream at both input norms (`hidden`, `mid`), the norms' outputs (the layer's own
norms, which pruning never changes), o_proj's and down_proj's outputs. The post-norms and
additions are the ones the layer's forward does, with the same operands, so the cached stream
is bitwise the live one (tests/test_densestream.py checks pruned weights and reports equal).

Size: (2 x layers + 1) x tokens x hidden x the weights' bytes (1.1 GB for SmolLM2-135M on
64 x 128 tokens in float32, 70 GB for LLaMA-7B on 1024 x 128 in bfloat16), one file per
layer so a job holds one layer's tensors at a time. The workflow's `recover.dense_cache`
switches it on (the default config) or off (config/paper.yaml: 7B).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load, save_file
from torch import nn
from tqdm.auto import tqdm

from structprune.calibration.streams import LayerBatch, apply_layer, capture_layer_inputs, propagate, tapped
from structprune.io.artifacts import atomic_dir, sha256_path, write_stage_json
from structprune.io.checkpoint import check_finite
from structprune.io.integrity import damaged, read_stage_json
from structprune.model.blocks import attention_update, mlp_norm, mlp_norm_path, mlp_update
from structprune.model.device import execution_device, layer_on_device
from structprune.model.geometry import decoder_layers

FORMAT = "structprune-dense-stream-2"  # 2: per-file sha256 in a sealed manifest
FIRST_LEVEL = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")


def cached_sites(layer: nn.Module) -> dict[tuple[str, str], str]:
    """The submodule tensors a cached stream can give for `layer`: (path, "in"|"out"|"energy")
    -> how it is derived (the MLP's input norm is named by the block's shape)."""
    return {
        **{(path, "energy"): f"energy.{path}" for path in FIRST_LEVEL},
        ("self_attn.o_proj", "out"): "attn_out",
        ("mlp.down_proj", "out"): "mlp_out",
        ("input_layernorm", "in"): "hidden",
        (mlp_norm_path(layer), "in"): "mid",
        ("input_layernorm", "out"): "norm(hidden)",
        (mlp_norm_path(layer), "out"): "norm(mid)",
    }


def output_energy(linear: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """||W x||^2 per output channel of `linear`, summed over a batch's tokens in float64, from
    its output: the energy of the part a refit fits (the output less the bias, which stays)."""
    y = out if linear.bias is None else out - linear.bias
    return y.reshape(-1, y.shape[-1]).pow(2).sum(0, dtype=torch.float64)


def _layer_file(folder: Path, index: int) -> Path:
    return folder / f"layer_{index:03d}.safetensors"


def record_dense_stream(model: nn.Module, samples: torch.Tensor, batch_size: int, out: str | Path,
                        manifest: dict, progress: bool = True) -> None:
    """Run the dense model layer by layer over `samples` (in batches of `batch_size`, as the
    engine will) and write the cache folder `out` atomically: `inputs.safetensors` (the
    hidden states entering layer 0), `layer_NNN.safetensors` (attn_out, mlp_out) and
    `manifest.json` (`manifest` plus the geometry the reader checks)."""
    batches = capture_layer_inputs(model, samples, batch_size)
    device = execution_device(model)
    layers = decoder_layers(model)
    with atomic_dir(out) as tmp:
        _save({"hidden": torch.cat([b.hidden for b in batches]).cpu().contiguous()}, tmp / "inputs.safetensors")
        for index, layer in enumerate(tqdm(layers, desc="dense stream", disable=not progress)):
            attn, mlp, energies = [], [], {path: [] for path in FIRST_LEVEL}
            sites = {"attn": (layer.self_attn.o_proj, "out"), "mlp": (layer.mlp.down_proj, "out"),
                     **{path: (layer.get_submodule(path), "out") for path in FIRST_LEVEL}}
            with layer_on_device(layer, device), tapped(sites) as seen:
                for batch in batches:
                    batch.hidden = apply_layer(layer, batch)
                    attn.append(seen["attn"].cpu())
                    mlp.append(seen["mlp"].cpu())
                    for path in FIRST_LEVEL:
                        energies[path].append(output_energy(sites[path][0], seen[path]).cpu())
            _save({"attn_out": torch.cat(attn).contiguous(), "mlp_out": torch.cat(mlp).contiguous(),
                   **{f"energy.{path}": torch.stack(rows) for path, rows in energies.items()}}, _layer_file(tmp, index))
        first = batches[0].hidden
        files = {p.name: sha256_path(p) for p in sorted(tmp.glob("*.safetensors"))}
        write_stage_json(tmp / "manifest.json", {
            **manifest, "format": FORMAT, "batch_size": batch_size, "layers": len(layers),
            "samples": list(samples.shape), "hidden_size": int(first.shape[-1]), "dtype": str(first.dtype),
            "files": files,
        }, "dense-stream")


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    check_finite(tensors.items(), "dense-stream", path)
    save_file(tensors, str(path))


class LiveDenseStream:
    """The dense stream run here: a copy of the pruned stream's batches, advanced through each
    dense layer (before it is changed) with hooks at the sites a refit reads."""

    def __init__(self, batches: list[LayerBatch]):
        self.batches = [LayerBatch(b.hidden.clone(), b.layer_kwargs) for b in batches]

    def taps(self, index: int, layer: nn.Module, sites: set[tuple[str, str]]) -> list[dict]:
        """Per batch, the dense layer's tensors at `sites` ((path, "in"|"out"), or (path,
        "energy"): `output_energy`); advances the stream past `layer`."""
        modules = {site: (layer.get_submodule(site[0]), "out" if site[1] == "energy" else site[1]) for site in sites}
        kept = []
        with tapped(modules) as seen:
            for batch in self.batches:
                batch.hidden = apply_layer(layer, batch)
                kept.append({site: output_energy(modules[site][0], seen[site]) if site[1] == "energy" else seen[site]
                             for site in sites})
        return kept

    def advance_shared(self, index: int, layer: nn.Module, pruned: list[LayerBatch]) -> None:
        """Before any layer is pruned both streams are one: run the layer once, share the result."""
        propagate(layer, pruned)
        for d, p in zip(self.batches, pruned, strict=True):
            d.hidden = p.hidden


class CachedDenseStream:
    """The dense stream read from a `record_dense_stream` folder, one layer at a time."""

    def __init__(self, folder: str | Path, pruned: list[LayerBatch], n_layers: int):
        self.folder = Path(folder)
        self.meta = read_cache_manifest(self.folder)
        sizes = [b.hidden.shape[0] for b in pruned]
        problem = None
        if self.meta["layers"] != n_layers:
            problem = f"it has {self.meta['layers']} layers, the model {n_layers}"
        elif any(size != self.meta["batch_size"] for size in sizes[:-1]) or sizes[-1] > self.meta["batch_size"]:
            problem = f"it was recorded in batches of {self.meta['batch_size']}, this job runs batches of {sizes[0]}"
        if problem is None:
            inputs = self._read("inputs.safetensors", ["hidden"])["hidden"]
            captured = torch.cat([b.hidden for b in pruned]).cpu()
            if inputs.shape != captured.shape or inputs.dtype != captured.dtype or not torch.equal(inputs, captured):
                problem = (f"its layer-0 inputs {tuple(inputs.shape)} {inputs.dtype} are not this job's "
                           f"{tuple(captured.shape)} {captured.dtype} (other samples, model or precision)")
        if problem:
            raise ValueError(f"dense stream cache {self.folder} does not match this job: {problem}. "
                             f"Rebuild it with `python -m structprune dense-stream` on the same model, samples "
                             f"and --batch-size (the workflow does so when its inputs change)")
        self.edges = [0]
        for size in sizes:
            self.edges.append(self.edges[-1] + size)
        self.hidden = [b.hidden for b in pruned]  # the dense stream entering layer `self.next`
        self.next = 0

    def _read(self, name: str, keys: list[str]) -> dict[str, torch.Tensor]:
        return _read(self.folder / name, keys, self.meta["files"].get(name, "(not recorded)"))

    def _layer(self, index: int, device, energies: tuple = ()) -> tuple[list, list, dict]:
        if index != self.next:
            raise RuntimeError(f"dense stream read out of order: layer {index}, expected {self.next}")
        tensors = self._read(_layer_file(self.folder, index).name, ["attn_out", "mlp_out", *energies])
        bounds = list(zip(self.edges[:-1], self.edges[1:]))
        self.next += 1
        attn_outs, mlp_outs = ([tensors[key][a:b].to(device) for a, b in bounds] for key in ("attn_out", "mlp_out"))
        return attn_outs, mlp_outs, {key: tensors[key].to(device) for key in energies}

    def taps(self, index: int, layer: nn.Module, sites: set[tuple[str, str]]) -> list[dict]:
        derived = cached_sites(layer)
        unknown = sorted(set(sites) - set(derived))
        if unknown:
            raise ValueError(f"the dense stream cache has no {unknown}: run this recipe without --dense-stream")
        energies = tuple(derived[site] for site in sites if site[1] == "energy")
        attn_outs, mlp_outs, energy = self._layer(index, self.hidden[0].device, energies)
        kept = []
        with torch.no_grad():
            for i, (hidden, attn_out, mlp_out) in enumerate(zip(self.hidden, attn_outs, mlp_outs, strict=True)):
                mid = hidden + attention_update(layer, attn_out)
                values = {"attn_out": attn_out, "mlp_out": mlp_out, "hidden": hidden, "mid": mid,
                          **{key: rows[i] for key, rows in energy.items()}}
                if ("input_layernorm", "out") in sites:
                    values["norm(hidden)"] = layer.input_layernorm(hidden)
                if (mlp_norm_path(layer), "out") in sites:
                    values["norm(mid)"] = mlp_norm(layer)(mid)
                kept.append({site: values[derived[site]] for site in sites})
                self.hidden[i] = mid + mlp_update(layer, mlp_out)
        return kept

    def advance_shared(self, index: int, layer: nn.Module, pruned: list[LayerBatch]) -> None:
        """Before any layer is pruned the pruned stream is the dense one: read, do not run, the layer."""
        attn_outs, mlp_outs, _ = self._layer(index, self.hidden[0].device)
        with torch.no_grad():
            for i, (batch, attn_out, mlp_out) in enumerate(zip(pruned, attn_outs, mlp_outs, strict=True)):
                self.hidden[i] = (self.hidden[i] + attention_update(layer, attn_out)) + mlp_update(layer, mlp_out)
                batch.hidden = self.hidden[i]


def _read(path: Path, keys: list[str], recorded: str) -> dict[str, torch.Tensor]:
    """`keys` of one cache file, whose bytes must hash to the manifest's `recorded` sha256 (a
    flipped byte in a layer file would otherwise reach every refit on the set)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the dense stream cache is incomplete; rebuild it "
                                f"(`python -m structprune dense-stream`, or rerun the workflow)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != recorded:
        raise damaged(path, "its sha256 differs from the one manifest.json recorded", rebuild=path.parent)
    tensors = load(data)
    return {key: tensors[key] for key in keys}


def cache_problem(folder: str | Path, model: str | Path, data: str | Path, batch_size: int) -> str | None:
    """Why the cache `folder` cannot serve a job on `model` and `data` in batches of
    `batch_size` (its manifest's input hashes and batch size), or None."""
    from structprune.io.artifacts import sha256_path

    try:
        meta = read_cache_manifest(folder)
    except (FileNotFoundError, ValueError) as error:
        return str(error)
    if meta["batch_size"] != batch_size:
        return f"recorded in batches of {meta['batch_size']}, this job runs batches of {batch_size}"
    for name, path in (("model", model), ("data", data)):
        recorded = meta.get("inputs", {}).get(name, {}).get("sha256")
        if recorded != sha256_path(path):
            return f"recorded on another {name} than {path}"
    return None


def read_cache_manifest(folder: str | Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a dense stream cache (no manifest.json): build it with "
                                f"`python -m structprune dense-stream --model ... --data ... --out {folder}`")
    meta = read_stage_json(path)
    if meta.get("format") != FORMAT or "files" not in meta:
        raise ValueError(f"{folder}: format {meta.get('format')!r}, expected {FORMAT!r}: rebuild the dense stream cache")
    return meta
