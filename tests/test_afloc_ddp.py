"""DDP on CPU (gloo, 2 processes) with gathered negatives equals one process on the global batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from afloc_helpers import tiny_batch, tiny_model

from bench.train.loop import make_gather

CHECK = ["img_encoder.local_embedder.weight", "img_encoder.local2_embedder.weight",
         "img_encoder.global_embedder.weight",
         "text_encoder.model.embeddings.word_embeddings.weight", "img_encoder.model.conv1.weight"]


def _setup(n=8):
    model, tok = tiny_model(word_num=24, seed=11)
    model.eval()  # BN running stats and no dropout: the comparison is deterministic
    images, text = tiny_batch(tok, n=n, word_num=24)
    return model, images, text


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model, images, text = _setup()
    b = images.shape[0] // world
    idx = list(range(rank * b, (rank + 1) * b))
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    enc = ddp(images[idx], text.select(idx))
    terms = model.loss(enc, gather=make_gather(True))
    terms["loss"].backward()
    loss = terms["loss"].detach().clone()
    dist.all_reduce(loss)
    if rank == 0:
        grads = {k: dict(model.named_parameters())[k].grad.clone() for k in CHECK}
        torch.save({"loss": loss / world, "grads": grads}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_equals_single_process(tmp_path):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    out = str(tmp_path / "ddp.pt")
    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_worker, args=(2, init, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)

    model, images, text = _setup()
    terms = model.loss(model(images, text))
    terms["loss"].backward()
    torch.testing.assert_close(got["loss"], terms["loss"].detach(), atol=1e-5, rtol=1e-5)
    params = dict(model.named_parameters())
    for k in CHECK:
        torch.testing.assert_close(got["grads"][k], params[k].grad, atol=2e-5, rtol=1e-4)
    assert got["grads"][CHECK[0]].abs().sum() > 0
