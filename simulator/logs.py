"""What the simulated containers print: each workload's usual start-up and steady-state lines,
then the story of whatever is wrong with it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

_PERIOD = 10.0  # simulated seconds between steady-state lines
_MAX_PERIODIC = 30


def _stamp(start: datetime, offset: float, style: str) -> str:
    moment = start + timedelta(seconds=offset)
    if style == "klog":  # Go services (klog): I0102 15:04:05.000000       1 file.go:12]
        return moment.strftime("%m%d %H:%M:%S.%f")
    if style == "vllm":  # vLLM: INFO 01-02 15:04:05
        return moment.strftime("%m-%d %H:%M:%S")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def role(pod: dict, container: str) -> str:
    labels = pod["metadata"].get("labels") or {}
    if container == "storage-initializer":
        return "storage-initializer"
    if labels.get("app") == "llm-d-operator":
        return "operator"
    if labels.get("name") == "nvidia-device-plugin-ds":
        return "device-plugin"
    if labels.get("app") == "litellm":
        return "litellm"
    if container in ("vllm", "kserve-container"):
        return "vllm"
    return "other"


def startup(kind: str, container: dict, start: datetime) -> list[str]:
    ts = lambda off, style="iso": _stamp(start, off, style)  # noqa: E731
    args = container.get("args") or []
    model = args[args.index("--model") + 1] if "--model" in args else "model"
    if kind == "operator":
        return [
            f'{ts(0)}\tINFO\tsetup\tstarting manager\t{{"version": "{container.get("image", "").rsplit(":", 1)[-1]}"}}',
            f"{ts(0.1)}\tINFO\tcontroller-runtime.metrics\tStarting metrics server",
            f"{ts(0.2)}\tINFO\tattempting to acquire leader lease llm-d-system/llm-d-operator-lock...",
            f"{ts(1.3)}\tINFO\tsuccessfully acquired lease llm-d-system/llm-d-operator-lock",
            f'{ts(1.4)}\tINFO\tStarting Controller\t{{"controller": "llmdeployment", "controllerGroup": "inference.llm-d.io", "controllerKind": "LLMDeployment"}}',
            f'{ts(1.5)}\tINFO\tStarting workers\t{{"controller": "llmdeployment", "worker count": 4}}',
        ]
    if kind == "device-plugin":
        return [
            f"I{ts(0, 'klog')}       1 main.go:154] Starting FS watcher.",
            f"I{ts(0, 'klog')}       1 main.go:161] Starting OS watcher.",
            f"I{ts(0.1, 'klog')}       1 main.go:176] Starting Plugins.",
            f"I{ts(0.1, 'klog')}       1 main.go:234] Loading configuration.",
            f"I{ts(0.2, 'klog')}       1 main.go:279] Retrieving plugins.",
            f"I{ts(0.2, 'klog')}       1 factory.go:107] Detected NVML platform: found NVML library",
        ]
    if kind == "storage-initializer":
        return [
            f"{ts(0)} INFO:kserve:Initializing, args: src_uri [{args[0] if args else ''}] dest_path[ [/mnt/models]",
            f"{ts(0.1)} INFO:kserve:Copying contents of {args[0] if args else ''} to local",
        ]
    if kind == "vllm":
        return [
            f"INFO {ts(0, 'vllm')} api_server.py:495] vLLM API server version 0.6.3",
            f"INFO {ts(0.1, 'vllm')} api_server.py:496] args: model='{model}'",
            f"INFO {ts(1, 'vllm')} llm_engine.py:237] Initializing an LLM engine (v0.6.3) with config: model='{model}', dtype=torch.bfloat16, max_seq_len=8192",
            f"INFO {ts(9, 'vllm')} model_runner.py:1067] Loading model weights took 14.9888 GB",
            f"INFO {ts(12, 'vllm')} gpu_executor.py:122] # GPU blocks: 27910, # CPU blocks: 2048",
            f"INFO {ts(14, 'vllm')} launcher.py:19] Available routes are: /health, /v1/models, /v1/completions, /v1/chat/completions",
            "INFO:     Started server process [1]",
            f"INFO:     Uvicorn running on http://0.0.0.0:{8080 if container['name'] == 'kserve-container' else 8000} (Press CTRL+C to quit)",
        ]
    if kind == "litellm":
        return [
            "INFO:     Started server process [1]",
            f"{ts(1)} - LiteLLM Proxy:INFO: proxy_server.py:1453 - Loaded model_list from litellm-config",
            "INFO:     Uvicorn running on http://0.0.0.0:4000 (Press CTRL+C to quit)",
        ]
    return []


def steady(kind: str, start: datetime, elapsed: float, stats: dict[str, float]) -> list[str]:
    """Periodic lines since start; `stats` carries the live numbers (queue, KV cache use)."""
    count = min(_MAX_PERIODIC, int(elapsed // _PERIOD))
    first = max(0, int(elapsed // _PERIOD) - count)
    lines = []
    for i in range(first, first + count):
        off = 15 + i * _PERIOD
        if kind == "vllm":
            lines.append(
                f"INFO {_stamp(start, off, 'vllm')} metrics.py:351] Avg prompt throughput: "
                f"{stats.get('prompt_tps', 0):.1f} tokens/s, Avg generation throughput: "
                f"{stats.get('gen_tps', 0):.1f} tokens/s, Running: {int(stats.get('running', 0))} reqs, "
                f"Swapped: 0 reqs, Pending: {int(stats.get('pending', 0))} reqs, GPU KV cache usage: "
                f"{stats.get('kv', 0):.1f}%, CPU KV cache usage: 0.0%."
            )
        elif kind == "operator":
            lines.append(
                f'{_stamp(start, off, "iso")}\tINFO\tReconciled LLMDeployment\t'
                f'{{"controller": "llmdeployment", "reconcileID": "{i:08x}-5c1e-4b7a-9d51-2f0c4e8a{i % 9999:04d}"}}'
            )
        elif kind == "device-plugin" and i == 0:
            lines += [
                f"I{_stamp(start, off, 'klog')}       1 server.go:165] Starting GRPC server for 'nvidia.com/gpu'",
                f"I{_stamp(start, off, 'klog')}       1 server.go:117] Starting to serve 'nvidia.com/gpu' on /var/lib/kubelet/device-plugins/nvidia-gpu.sock",
                f"I{_stamp(start, off, 'klog')}       1 server.go:125] Registered device plugin for 'nvidia.com/gpu' with Kubelet",
            ]
        elif kind == "storage-initializer" and i == 0:
            lines.append(f"{_stamp(start, 3, 'iso')} INFO:kserve:Successfully copied model to /mnt/models")
    return lines


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def access_denied(uri: str) -> tuple[str, ...]:
    """KServe's storage-initializer when the pod's IAM role may not read the model's bucket."""
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    return (
        "Traceback (most recent call last):",
        '  File "/storage-initializer/scripts/initializer-entrypoint", line 18, in <module>',
        "    kserve.Storage.download(src_uri, dest_path)",
        '  File "/kserve/kserve/storage/storage.py", line 94, in download',
        "    model_dir = Storage._download_s3(uri, out_dir)",
        '  File "/kserve/kserve/storage/storage.py", line 237, in _download_s3',
        "    for obj in bucket.objects.filter(Prefix=bucket_path):",
        "botocore.exceptions.ClientError: An error occurred (AccessDenied) when calling the "
        f"ListObjectsV2 operation: User: arn:aws:sts::123456789012:assumed-role/kserve-inference-role/"
        f"botocore-session-1735689600 is not authorized to perform: s3:ListBucket on resource: "
        f'"arn:aws:s3:::{bucket}" because no identity-based policy allows the s3:ListBucket action',
    )
