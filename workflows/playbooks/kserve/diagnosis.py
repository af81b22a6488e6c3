"""Seed 004's judgements of what a predictor's logs say: each error line's class with the seed's
solution ("Common errors and solutions"), and what a storage-initializer's log says went wrong
("Model Not Loading", 3. Common issues). Pure functions over the log lines the KServe activities read.
"""

from __future__ import annotations

import re
from typing import Literal

ErrorClass = Literal["cuda-oom", "oom", "model-loading", "transient", "http-5xx"]

_CLASSES: list[tuple[ErrorClass, re.Pattern[str]]] = [
    ("cuda-oom", re.compile(r"CUDA out of memory|torch\.OutOfMemoryError|torch\.cuda\.OutOfMemoryError", re.I)),
    ("oom", re.compile(r"OOMKilled|Out of memory: Killed process|MemoryError|Cannot allocate memory", re.I)),
    (
        "model-loading",
        re.compile(
            r"Error\(s\) in loading state_dict|size mismatch|Failed to fetch model|No model found|"
            r"AccessDenied|Error loading model|safetensors_rust\.SafetensorError",
            re.I,
        ),
    ),
    (
        "transient",
        re.compile(
            r"CUDA error: an illegal memory access|Engine background task failed|"
            r"Connection reset by peer|NCCL error|Timeout while waiting",
            re.I,
        ),
    ),
    ("http-5xx", re.compile(r'HTTP/1\.[01]" 5\d\d')),
]

# The seed's "Common errors and solutions", per class.
SOLUTIONS: dict[ErrorClass, str] = {
    "cuda-oom": "CUDA OOM: reduce concurrent requests, increase GPU memory",
    "oom": "OOM: reduce batch size or max_tokens",
    "model-loading": "Model loading: check S3 permissions, storage URI",
    "transient": "transient engine error: restart the predictor pods",
    "http-5xx": "requests failing with 5xx",
}


def classify_line(line: str) -> ErrorClass | None:
    """The seed's error class of one log line (`grep -i error`), None for a line that is not one."""
    for kind, pattern in _CLASSES:
        if pattern.search(line):
            return kind
    return None


def classify(lines: list[str]) -> dict[ErrorClass, int]:
    """How many lines of each error class."""
    counts: dict[ErrorClass, int] = {}
    for line in lines:
        kind = classify_line(line)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# ---- storage-initializer diagnoses (seed 004 "Model Not Loading", 3. Common issues) ---------------

StorageCause = Literal["access-denied", "not-found", "disk-full", "unknown"]

_STORAGE: list[tuple[StorageCause, re.Pattern[str], str]] = [
    (
        "access-denied",
        re.compile(r"AccessDenied|not authorized to perform|403 Forbidden", re.I),
        "S3 access denied: check the IRSA role (`kubectl describe sa kserve-controller-manager -n kserve`)",
    ),
    (
        "not-found",
        re.compile(r"No model found|NoSuchKey|NoSuchBucket|does not exist|404", re.I),
        "model not found: verify storageUri",
    ),
    ("disk-full", re.compile(r"No space left on device|Errno 28|DiskPressure", re.I), "disk full: check node storage"),
]


def storage_diagnosis(lines: list[str]) -> tuple[StorageCause, str, str | None]:
    """(cause, the seed's advice, the line that shows it) for a storage-initializer's log."""
    for cause, pattern, advice in _STORAGE:
        hit = next((line for line in lines if pattern.search(line)), None)
        if hit is not None:
            return cause, advice, hit.strip()
    return "unknown", "no known storage error in the log: a human reads it", None


# ---- model server diagnoses (seed 004 "Model Not Loading": Pod in CrashLoopBackOff; "High Error Rate",
# 2. Common errors: "OOM: Reduce batch size or max_tokens", "CUDA OOM: Reduce concurrent requests,
# increase GPU memory") ------------------------------------------------------------------------------

ServerCause = Literal["kv-cache", "cuda-oom", "unknown"]

_SERVER: list[tuple[ServerCause, re.Pattern[str], str]] = [
    (
        "kv-cache",
        re.compile(
            r"larger than the maximum number of tokens that can be stored in KV cache|No available memory for the cache blocks",
            re.I,
        ),
        "the model's context does not fit the GPU's KV cache: lower the runtime's `--max-model-len` (seed 004: "
        "reduce max_tokens), or raise `--gpu-memory-utilization` / give it a larger GPU (seed 004: increase GPU memory)",
    ),
    (
        "cuda-oom",
        re.compile(r"CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError", re.I),
        "CUDA out of memory: reduce concurrent requests or batch size, or increase GPU memory (seed 004)",
    ),
]


def server_diagnosis(lines: list[str]) -> tuple[ServerCause, str, str | None]:
    """(cause, the seed's advice, the line that shows it) for a model server's log or termination message."""
    for cause, pattern, advice in _SERVER:
        hit = next((line for line in lines if pattern.search(line)), None)
        if hit is not None:
            return cause, advice, hit.strip()
    return "unknown", "no known model server error: a human reads its log (`kubectl logs -c kserve-container`)", None
