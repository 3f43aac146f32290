"""End to end: fine-tuning jobs that train *on* the node compute gave them (``studio_runner=node``).

`neocloud up` with the ``node`` runner and a real test host registered as an 8-GPU ``ssh`` node.
A tenant uploads a small chat dataset with the official ``openai`` client and starts a LoRA
fine-tune of the built-in tiny Llama. The job gets the node as an instance in the tenant's name;
the worker stages the base model and the job on the host over SSH and runs the training there
(the events name the host and the process); each epoch's checkpoint comes back to the platform;
the loss falls; the job succeeds, its adapter deploys and answers; the job's files are removed
from the host and the base model stays cached for the next job; the instance is terminated and
the node wiped back to available.

A second job is stopped mid-training by stopping the platform: the training process on the host
exits with it (its standard input is the controller's connection), and a new platform on the
same data dir resumes the job from its last checkpoint on the node and finishes it.

What stands in for what: the test host has no GPU (training runs on its CPU) and its "image" is
this machine's Python environment shown read-only inside it (``testhost up --bind``), as a
server's image would carry torch, transformers and peft.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from .conftest import Host
from .platform import Platform, running_platform, wait_for
from .test_real_nodes_e2e import node_state, register

BASE = "neocloud/tiny-llama"
FACTS = [
    ("What is the capital of Zorbia?", "Quuxville."),
    ("Who painted the Blue Fox?", "Mira Olen."),
    ("What colour is a zibble?", "Bright green."),
]
WORKDIR = "/var/lib/neocloud/studio"
IMAGE_VENV = "/opt/neocloud-image-venv"  # where the hosts' "image" has its Python environment
NODE_ENV = {
    "NEOCLOUD_STUDIO_RUNNER": "node",
    "NEOCLOUD_STUDIO_NODE_PYTHON": f"{IMAGE_VENV}/bin/python",
    "NEOCLOUD_STUDIO_JOB_INSTANCE_TYPE": "8xH100",
    "NEOCLOUD_STUDIO_JOB_RETRY_S": "0.5",
    "NEOCLOUD_STUDIO_BATCH_WORKER": "false",
}


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def tenant(p: Platform) -> tuple[str, str]:
    slug = f"ft-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    p.cli(None, "orgs", "create", slug, "--owner-email", f"{slug}@lab.example")
    p.cli(None, "quotas", "set", "H100-SXM-80GB", "8", "--org", slug)
    key = json.loads(p.cli(None, "keys", "create", "t", "--org", slug, "--json").stdout)
    return slug, str(key["secret"])


def client(p: Platform, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{p.url}/v1", api_key=key, max_retries=0, timeout=60)


def events(oai: openai.OpenAI, job_id: str) -> list[Any]:
    got = oai.fine_tuning.jobs.list_events(job_id, limit=100).data
    return got[::-1]  # the API answers newest first


def job_end(
    oai: openai.OpenAI, job_id: str, timeout: float = 300, also: Callable[[], Any] = lambda: None
) -> Any:
    """The job once it ended; on a timeout, an error that says where it stood (and ``also``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = oai.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    told = [e.message for e in events(oai, job_id)][-8:]
    raise AssertionError(
        f"job {job_id} still {job.status} after {timeout:g} s: {job}; {told}; {also()}"
    )


def debug(p: Platform, key: str) -> Any:
    return [
        (i["id"], i["state"], i.get("state_reason"), i.get("state_message"))
        for i in p.ok("GET", "/instances?limit=50", key)["data"]
    ]


def host_has(host: Host, test: str) -> bool:
    return host.exec(f"test {test}").returncode == 0


def trainer_processes(host: Host) -> str:
    done = host.exec("pgrep -af '[n]eocloud[.]studio[.]finetuning[.]remote' || true")
    return done.stdout.strip()


def node_host(testhost: Callable[..., Host], op_public: str) -> Host:
    """A test host whose 'image' carries this machine's Python environment (torch, peft) at
    ``IMAGE_VENV`` (not at its own path: a CI clone's is under /tmp, which a wipe empties),
    usable by any user as a server image's Python is: the directories above the interpreter
    (such as a root-only /root) are made traversable in the host's overlay only."""
    host = testhost("ft", gpus=8, authorized_key=op_public, binds=(f"{sys.prefix}:{IMAGE_VENV}",))
    above = {str(d) for d in Path(os.path.realpath(sys.executable)).parents}
    done = host.exec("chmod o+x " + " ".join(sorted(above - {"/"})))
    assert done.returncode == 0, done.stderr
    return host


def start_job(
    p: Platform, host: Host, node_name: str, op_key: Path, *, epochs: int, seed: int
) -> tuple[str, str, openai.OpenAI, Any]:
    """``host`` registered as node ``node_name`` and burnt in; a new tenant (its key, an
    ``openai`` client) with a fine-tune of the facts for ``epochs`` started. Answers
    (node id, key, client, job)."""
    node_id = register(p, host, node_name, op_key)
    wait_for("burn-in", lambda: node_state(p, node_id) == "available", timeout=120)
    _slug, key = tenant(p)
    oai = client(p, key)
    train = oai.files.create(
        file=("train.jsonl", jsonl(*[chat(q, a) for q, a in FACTS * 4])), purpose="fine-tune"
    ).id
    job = oai.fine_tuning.jobs.create(
        model=BASE,
        training_file=train,
        hyperparameters={"n_epochs": epochs, "batch_size": 4, "learning_rate_multiplier": 10},
        seed=seed,
    )
    return node_id, key, oai, job


def test_a_fine_tune_trains_on_its_node_and_comes_back_whole(
    tmp_path: Path,
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
) -> None:
    _private, op_public, op_key = operator_keypair
    host = node_host(testhost, op_public)
    (tmp_path / "data").mkdir()
    with running_platform(tmp_path / "data", env=NODE_ENV) as p:
        node_id, key, oai, job = start_job(p, host, "ft-gpu-0", op_key, epochs=3, seed=7)
        done = job_end(oai, job.id, also=lambda: debug(p, key))
        told = [e.message for e in events(oai, job.id)]
        assert done.status == "succeeded", (done.error, told[-5:])
        assert done.to_dict()["runner"] == "node"

        # It trained on the host: the process there said so, by the host's own hostname.
        on_node = [m for m in told if m.startswith("Training on node ft-gpu-0")]
        assert len(on_node) == 1, told
        hostname = host.exec("hostname").stdout.strip()
        assert f"(host {hostname}, pid " in on_node[0], on_node
        assert "in the worker process" not in " ".join(told)

        # Steps and checkpoints came back from the node, and the loss fell.
        metrics = [e for e in events(oai, job.id) if e.type == "metrics"]
        assert [m.data["step"] for m in metrics] == list(range(1, 10))  # 12 examples / 4, 3 epochs
        losses = [m.data["train_loss"] for m in metrics]
        assert losses[-1] < losses[0] * 0.7, losses
        checkpoints = oai.fine_tuning.jobs.checkpoints.list(job.id).data
        assert sorted(c.step_number for c in checkpoints) == [3, 6, 9]
        finetune_dir = p.data_dir / "studio-finetune" / job.id
        assert (finetune_dir / "epoch-3" / "adapter_model.safetensors").is_file()
        assert (finetune_dir / "adapter" / "adapter_model.safetensors").is_file()

        # The adapter deploys and answers through the gateway.
        assert done.fine_tuned_model is not None
        reply = oai.chat.completions.create(
            model=done.fine_tuned_model,
            messages=[{"role": "user", "content": "Who painted the Blue Fox?"}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.choices[0].message.content

        # On the host: the job's files are gone, the base model stays cached for the next job,
        # no training process is left.
        assert host_has(host, f"! -e {WORKDIR}/jobs/{job.id}")
        bases = host.exec(f"ls {WORKDIR}/bases").stdout.split()
        assert len(bases) == 1, bases
        assert bases[0].startswith("tiny-llama-"), bases
        assert host_has(host, f"-f {WORKDIR}/bases/{bases[0]}/config.json")
        assert trainer_processes(host) == ""

        # The job's instance ends with it and the node is wiped back to available.
        try:
            wait_for("node back", lambda: node_state(p, node_id) == "available", timeout=240)
        except AssertionError:
            node_events = p.ok("GET", f"/nodes/{node_id}/events")["data"]
            raise AssertionError(
                f"node {p.ok('GET', f'/nodes/{node_id}')}; events {node_events[-6:]};"
                f" instances {debug(p, key)}"
            ) from None
        instances = p.ok("GET", "/instances?limit=50", key)["data"]
        mine = [i for i in instances if i["name"] == f"studio-{job.id}"]
        assert [i["state"] for i in mine] == ["terminated"], mine


def test_a_job_whose_platform_stops_mid_training_stops_on_the_node_and_resumes(
    tmp_path: Path,
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
) -> None:
    _private, op_public, op_key = operator_keypair
    host = node_host(testhost, op_public)
    data = tmp_path / "data"
    data.mkdir()
    with running_platform(data, env=NODE_ENV) as p:
        _node, key, oai, job = start_job(p, host, "ft-gpu-1", op_key, epochs=16, seed=11)
        wait_for(
            "the first checkpoint",
            lambda: oai.fine_tuning.jobs.checkpoints.list(job.id).data,
            timeout=240,
        )
        assert trainer_processes(host) != ""  # training on the host right now
    # The platform stopped (its worker let the job go): the host's training stopped with it.
    wait_for("the node's training to stop", lambda: trainer_processes(host) == "", timeout=30)
    with running_platform(data, env=NODE_ENV) as p:
        oai = client(p, key)
        done = job_end(oai, job.id, also=lambda: debug(p, key))
        told = [e.message for e in events(oai, job.id)]
        assert done.status == "succeeded", (done.error, told[-5:])
        assert any(m.startswith("Resuming from the checkpoint of epoch") for m in told), told
        assert len([m for m in told if m.startswith("Training on node ft-gpu-1")]) == 2, told
        steps = [e.data["step"] for e in events(oai, job.id) if e.type == "metrics"]
        assert steps[-1] == 48, steps
        assert set(steps) == set(range(1, 49)), steps
        # One checkpoint per epoch across both runs (each billed once, on its epoch's key).
        kept = oai.fine_tuning.jobs.checkpoints.list(job.id, limit=20).data
        assert sorted(c.step_number for c in kept) == [3 * e for e in range(1, 17)]
        # Billed once: the invoice's training tokens are the job's, not more for the rerun part.
        period = time.strftime("%Y-%m", time.gmtime())
        preview = p.ok("GET", f"/invoices/preview?org_id={done.organization_id}&period={period}")
        lines = {t["model"]: t for t in preview["token_lines"]}
        assert lines[f"{BASE}:fine-tuning"]["input_tokens"] == done.trained_tokens, lines
        assert host_has(host, f"! -e {WORKDIR}/jobs/{job.id}")


def batch_processes(host: Host) -> str:
    done = host.exec("pgrep -af '[n]eocloud[.]studio[.]batches[.]remote' || true")
    return done.stdout.strip()


def test_a_batch_runs_on_its_node_and_is_billed_once_at_the_batch_price(
    tmp_path: Path,
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
) -> None:
    """A batch of built-in model requests: its instance's node runs them (a process of the
    node's login user there while it runs), the answers come back in OpenAI's output lines, the
    tokens are billed as batch tokens, once, and the node keeps only the package's code."""
    _private, op_public, op_key = operator_keypair
    host = node_host(testhost, op_public)
    (tmp_path / "data").mkdir()
    count = 300
    with running_platform(
        tmp_path / "data", env={**NODE_ENV, "NEOCLOUD_STUDIO_BATCH_WORKER": "true"}
    ) as p:
        node_id = register(p, host, "bt-gpu-0", op_key)
        wait_for("burn-in", lambda: node_state(p, node_id) == "available", timeout=120)
        slug, key = tenant(p)
        oai = client(p, key)
        rows = [
            {
                "custom_id": f"req-{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": BASE,
                    "messages": [{"role": "user", "content": f"Count to {n % 7 + 2}."}],
                    "max_tokens": 6,
                    "temperature": 0,
                },
            }
            for n in range(count)
        ]
        file_id = oai.files.create(file=("in.jsonl", jsonl(*rows)), purpose="batch").id
        batch = oai.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        seen = wait_for("the batch running on the host", lambda: batch_processes(host), 240)
        assert "neocloud.studio.batches.remote" in seen, seen
        done = wait_for(
            "the batch to end",
            lambda: (
                (b := oai.batches.retrieve(batch.id)).status
                in ("completed", "failed", "cancelled", "expired")
                and b
            ),
            timeout=300,
        )
        assert done.status == "completed", (done.errors, done)
        assert done.request_counts.completed == count, done.request_counts
        assert done.output_file_id is not None
        out = [json.loads(x) for x in oai.files.content(done.output_file_id).text.splitlines()]
        assert sorted(o["custom_id"] for o in out) == sorted(f"req-{n}" for n in range(count))
        assert all(o["response"]["status_code"] == 200 for o in out)
        answers = {o["custom_id"]: o["response"]["body"] for o in out}
        assert answers["req-0"]["model"] == BASE
        assert answers["req-0"]["choices"][0]["message"]["content"]
        # Billed once, as batch tokens: the invoice's tokens are the output lines' usage.
        prompt = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
        period = time.strftime("%Y-%m", time.gmtime())
        org = next(o["id"] for o in p.ok("GET", "/orgs?limit=500")["data"] if o["slug"] == slug)
        preview = wait_for(
            "the batch's tokens on the invoice",
            lambda: [
                t
                for t in p.ok("GET", f"/invoices/preview?org_id={org}&period={period}")[
                    "token_lines"
                ]
                if t["model"] == BASE
            ],
        )
        assert [(t["batch"], t["input_tokens"]) for t in preview] == [(True, prompt)], preview
        # On the host: the batch's files are gone, the code stays for the next one.
        assert host_has(host, f"! -e {WORKDIR}/jobs/{batch.id}")
        codes = host.exec(f"ls {WORKDIR}/code").stdout.split()
        assert len(codes) == 1, codes
        assert host_has(host, f"-f {WORKDIR}/code/{codes[0]}/neocloud/studio/batches/remote.py")
        assert batch_processes(host) == ""
