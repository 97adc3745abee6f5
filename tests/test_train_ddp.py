"""Two-process data-parallel training on the CPU (gloo): the replicas stay identical."""

import json
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from train_helpers import ddp_worker, footage_folder, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_keep_replicas_identical(tiny_wan_folder, tmp_path):
    data = footage_folder(tmp_path / "clips", count=4, frames=9)
    cfg = tiny_config(model={"pretrained": str(tiny_wan_folder)}, data={"path": str(data)},
                      objective={"p_first": 0.5}, train={"max_steps": 3})
    run = tmp_path / "run"
    mp.start_processes(ddp_worker, args=(2, _free_port(), cfg, run), nprocs=2, join=True, start_method="spawn")

    info = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["processes"] == info[1]["processes"] == 2
    seen = [i for r in info for batch in r["batches"] for i in batch]
    assert len(seen) == len(set(seen)) == 4  # each process trained on its own half of the clips
    w0, w1 = (load_file(str(run / f"rank{r}.safetensors")) for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    base = load_file(str(tiny_wan_folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(w0[f"dit.{k}"], base[k]) for k in base)  # and they did train
    assert (run / "model" / "transformer" / "config.json").is_file()
