"""Real vLLM on the CPU: the openai backend against a vLLM OpenAI-compatible server on loopback,
and the in-process vllm backend inside the vLLM environment, both with a tiny random Llama.

vLLM lives in its own environment (scripts/vllm_cpu_env.sh), found through
ACTION100M_VLLM_PYTHON (default <repo>/.venv-vllm/bin/python). Without it these tests skip,
except under CI (CI=true), where its absence is a failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from action100m_hf.build.stages.aggregate import prompts

from action100m_hf.data import tree
from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows, parse_annotation
from action100m_hf.errors import AnnotationError
from action100m_hf.build.stages.aggregate.backends import build_llm_backend
from action100m_hf.build.tiny import build_tiny_causal_lm

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
VLLM_PYTHON = Path(os.environ.get("ACTION100M_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
MAX_MODEL_LEN = 8192
SERVED_NAME = "tiny-llama"
STARTUP_TIMEOUT_S = 300
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# A random model never closes a string by itself; compact JSON keeps outputs short.
STRUCTURED_OUTPUTS = {"backend": "guidance", "disable_any_whitespace": True}


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    if not VLLM_PYTHON.is_file():
        message = f"no vLLM environment at {VLLM_PYTHON} (create it with scripts/vllm_cpu_env.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return VLLM_PYTHON


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """The tiny random Llama with 32-dim attention heads: vLLM's CPU attention has kernels for
    head sizes 32, 64, 80, ... only, not for the 16 of `tiny_models`' default."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = build_tiny_causal_lm("llama", tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)
    config = AutoConfig.from_pretrained(folder)
    if config.head_dim not in VLLM_CPU_HEAD_SIZES:
        config.head_dim = 32
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def row() -> dict:
    return json.loads((GOLDEN / "stage3_tree.json").read_text())


def _vllm_env() -> dict:
    env = dict(os.environ)
    # The package on the path, the CPU engine's KV cache small (GiB), no usage report.
    env.update(PYTHONPATH=str(REPO), VLLM_CPU_KVCACHE_SPACE="1", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(vllm_python, tiny_llama, tmp_path_factory):
    """A vLLM OpenAI-compatible server on 127.0.0.1; always stopped at the end of the module."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        str(vllm_python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_llama), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN), "--gpu-memory-utilization", "0.1",
        "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS), "--enforce-eager",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_vllm_env())
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"vLLM server exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not ready in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def openai_backend(base_url: str, *extra: str):
    """The tiny profile's aggregate stage on the openai backend, served by the vLLM server."""
    profile = load_profile("tiny", ["aggregate.backend=openai", f"aggregate.model={SERVED_NAME}",
                                    f"aggregate.backends.openai.base_url={base_url}", *extra])  # fmt: skip
    return AggregateStage(profile["aggregate"], profile.run).models


def test_openai_backend_against_real_vllm_server(vllm_server, row):
    backend = openai_backend(vllm_server, "aggregate.backends.openai.max_concurrency=4")
    out, errors = aggregate_rows([row], backend, rounds=3, retries=2, global_depth=3, subtree_depth=3)
    assert errors == []
    schema = prompts.response_schema(backend.max_string_length)
    annotated = {n["node_id"] for n in tree.annotatable(row["nodes"])}
    for node in out[0]["nodes"]:
        if node["node_id"] in annotated:
            assert parse_annotation(json.dumps(node["gpt"]), schema) == node["gpt"]
        else:
            assert node["gpt"] is None


def test_openai_backend_turns_a_refused_request_into_that_node_error(vllm_server):
    backend = openai_backend(vllm_server, "aggregate.backends.openai.retries=0")
    too_long = [{"role": "user", "content": "onion " * (2 * MAX_MODEL_LEN)}]
    short = [{"role": "user", "content": "Describe the video."}]
    refused, answered = backend.generate_json([too_long, short], prompts.response_schema(24))
    assert isinstance(refused, AnnotationError)
    assert str(refused).startswith(f"{vllm_server} refused the request: ")
    assert "maximum context length" in str(refused) or "too long" in str(refused)
    parse_annotation(answered, prompts.response_schema(24))


def test_in_process_vllm_backend_in_the_vllm_environment(vllm_python, tiny_llama, row, tmp_path):
    schema = prompts.response_schema(24)
    targets = tree.annotatable(row["nodes"])
    conversations = [
        prompts.first_turn(p) for p in prompts.node_prompts(row["metadata"], row["nodes"], targets, schema, global_depth=3, subtree_depth=3)
    ]
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps({"schema": schema, "conversations": conversations}))
    out = tmp_path / "outputs.json"
    overrides = ["aggregate.backend=vllm", f"aggregate.model={tiny_llama}",
                 f"aggregate.backends.vllm.max_model_len={MAX_MODEL_LEN}"]  # fmt: skip
    command = [
        str(vllm_python), "-m", "action100m_hf.cli.llm_requests", "--profile", "tiny",
        *[x for o in overrides for x in ("--set", o)], "--requests", str(requests), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=_vllm_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    outputs = json.loads(out.read_text())["outputs"]
    assert len(outputs) == len(targets) == 4
    for text in outputs:
        value = parse_annotation(text, schema)
        assert set(value) == {"summary", "action"}
