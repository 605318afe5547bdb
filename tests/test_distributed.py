"""DDP training: 2 CPU processes (gloo) end where 1 process ends; a killed worker; resume."""
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from ranvier import distributed, train
from ranvier.checkpoint import read_meta
from ranvier.config import build_config
from ranvier.report import load_run

# Global batch 16 over 2 processes; MNIST-1D has 8000 training samples (even), so every global
# batch holds exactly the samples of the one-process batch.
TINY = dict(task="mnist1d", model="lif", convention="eprop", hidden_size=16, batch_size=16, epochs=1, max_steps=10,
            checkpoint_every=2, progress=False, threads=1, lr=0.01)


def flags(settings):
    out = []
    for key, value in settings.items():
        name = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(name if value else "--no-" + key.replace("_", "-"))
        else:
            out += [name, str(value)]
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def model_tensors(run_dir):
    return {k: v for k, v in load_file(str(run_dir / "checkpoint.safetensors")).items() if k.startswith("model/")}


# A worker as torchrun would start it, except that rank 1 kills itself (SIGKILL) when step
# DIE_AT begins, so the failure comes at a known step.
WORKER = """
import os, signal, sys
import ranvier.train as train
die_at = int(os.environ.get("DIE_AT", "-1"))
real_lr = train._learning_rate
def lr(cfg, step, total, *rest):
    if step == die_at and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_lr(cfg, step, total, *rest)
train._learning_rate = lr
from ranvier.cli import main
sys.exit(main(sys.argv[1:]))
"""


def spawn_pair(args, die_at=-1):
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, "train", *args], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=environment(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=2, LOCAL_WORLD_SIZE=2,
                                              MASTER_ADDR="127.0.0.1", MASTER_PORT=port, DIE_AT=die_at))
             for rank in (0, 1)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    return results


def test_one_process_order_is_the_sampler_order():
    ctx = distributed.Context()
    for epoch in (0, 3):
        assert torch.equal(distributed.epoch_order(4000, 7, epoch, ctx), train._epoch_order(4000, 7, epoch))


def test_rank_shards_make_up_the_one_process_batch():
    n, seed, epoch, b = 96, 3, 1, 4
    whole = distributed.epoch_order(n, seed, epoch, distributed.Context())
    shards = [distributed.epoch_order(n, seed, epoch, distributed.Context(rank=r, world_size=2)) for r in (0, 1)]
    for k in range(n // (2 * b)):
        together = torch.cat([s[k * b:(k + 1) * b] for s in shards])
        assert sorted(together.tolist()) == sorted(whole[k * 2 * b:(k + 1) * 2 * b].tolist())


def test_clear_errors_before_any_process_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        distributed.setup(build_config({**TINY, "batch_size": 15}))
    with pytest.raises(ValueError, match="not supported for language models"):
        distributed.setup(build_config({"task": "ptb", "model": "egru"}))


def test_two_processes_equal_one_survive_a_killed_worker_and_resume(tmp_path):
    """One 2-process run: rank 1 is SIGKILLed as step 7 begins, rank 0 stops with a clear error,
    the step-6 checkpoint loads, and torchrun resumes it to step 10, where its weights equal
    those of a 1-process run with the same global batch (up to float32 rounding: DDP sums the
    two half-batch gradients in another order)."""
    train.fit(build_config({**TINY, "out": str(tmp_path / "one")}))  # the 1-process reference, in this interpreter

    cut = tmp_path / "two"
    (rc0, _, err0), (rc1, _, _) = spawn_pair([*flags(TINY), "--out", str(cut)], die_at=7)
    assert rc1 == -9
    assert rc0 == 2 and "Another worker probably died or was killed" in err0 and "--resume" in err0, err0[-3000:]
    assert load_run(cut).model is not None and read_meta(cut / "checkpoint.safetensors")["step"] == 6

    # resume through torchrun, as the README shows it
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                          "127.0.0.1", "--master-port", str(free_port()), "-m", "ranvier", "train", "--resume",
                          "--out", str(cut), "--no-progress"],
                         cwd=REPO, env=environment(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("lif on mnist1d: test accuracy") == 1, "only rank 0 may print"
    assert read_meta(cut / "checkpoint.safetensors")["step"] == 10
    one, two = model_tensors(tmp_path / "one"), model_tensors(cut)
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
