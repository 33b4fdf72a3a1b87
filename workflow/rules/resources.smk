# What a job runs on and asks the scheduler for: device and dtype, memory, runtime and GPU per
# stage, and the code fingerprint that reruns a stage when its library code changes.

# Requests per stage come from structprune.spec.resources: host memory from the stage benchmark
# (results/bench/llama7b-width*.json) where it runs the stage, else from the embedded model's
# Snakemake benchmarks; a profile's set-resources or a model's mem_mb/runtime override them.
GPU_STAGES = {"data_calib", "calibrate", "dense_stream", "gradients", "prune", "select", "depth_order", "disp_search", "evaluate", "speed"}


def model_compute(model):
    """(device, dtype) of a model's jobs: the model's own settings over the compute section."""
    m, compute = config["models"][model], config["compute"]
    return m.get("device") or compute["device"], m.get("dtype") or compute["dtype"]


def compute_args(wildcards):
    device, dtype = model_compute(wildcards.model)
    return sh("--device", device, "--dtype", dtype)


def parameter_count(model):
    """models.<m>.n_params as a number: YAML reads 6.7e9 as a string, and 135M / 6.7B read well."""
    value = config["models"][model]["n_params"]
    if value is None or isinstance(value, (int, float)):
        return value
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(value[-1], 1)
    return float(value[:-1] if scale != 1 else value) * scale


def _on_gpu(model):
    return model_compute(model)[0] == "cuda"


def _weights_dtype(model):
    device, dtype = model_compute(model)
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"  # auto device: count float32 (safe)
    return dtype


def job_tokens(stage, wildcards):
    """Calibration tokens a job streams through the layers: the set its samples come from (a
    recovery's remedy set, a select's samples), else its calibration set's; 0 without one."""
    name = getattr(wildcards, "calib", None)
    method = config["methods"].get(getattr(wildcards, "method", None) or "")
    if method and stage == "prune":
        name = stage_calib(method, wildcards.stage)
    elif method and stage == "select":
        name = select_samples(method)
    c = config["calibration"].get(name or "")
    if method and stage == "disp_search" and c:  # one batch's activations are kept for the backward pass
        return int(method["search"]["batch_size"]) * int(c["seq_len"])
    return int(c["n_samples"]) * int(c["seq_len"]) if c else 0


def stage_resources(stage):
    """mem_mb, runtime (minutes) and gpu of a stage's jobs, scaled with the model they run on."""

    def mem_mb(wildcards, attempt):
        m = config["models"][wildcards.model]
        if m["mem_mb"] or not m["n_params"]:
            return (m["mem_mb"] or 8000) * attempt
        return job_memory_mb(stage, parameter_count(wildcards.model), _weights_dtype(wildcards.model),
                             tokens=job_tokens(stage, wildcards), on_gpu=_on_gpu(wildcards.model)) * attempt

    def runtime(wildcards, attempt):
        m = config["models"][wildcards.model]
        if m["runtime"] or not m["n_params"]:
            return (m["runtime"] or 120) * attempt
        return job_runtime_minutes(stage, parameter_count(wildcards.model), _on_gpu(wildcards.model)) * attempt

    def gpu(wildcards):
        return int(stage in GPU_STAGES and _on_gpu(wildcards.model))

    return {"mem_mb": mem_mb, "runtime": runtime, "gpu": gpu}


def code_version(command):
    """Fingerprint of the library code behind `python -m structprune <command>` (a params
    entry, so that editing a function a stage uses reruns that stage)."""
    return stage_code_version(command, SRC / "structprune")
