"""All-reduce across every rank of a torchrun job and report its bandwidth.

Launched by examples/multinode_flow.py (one torchrun per node), or by hand:

    torchrun --nnodes=1 --nproc_per_node=2 examples/train_allreduce.py --size-mb 16   # CPU, gloo

With CUDA it uses NCCL (over EFA when the image carries libfabric and aws-ofi-nccl); without it,
gloo on the CPU, so the same script smoke-tests on a laptop. Rank 0 prints one result line.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=float, default=float(os.environ.get("ALLREDUCE_SIZE_MB", "256")))
    p.add_argument("--iters", type=int, default=int(os.environ.get("ALLREDUCE_ITERS", "20")))
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations (NCCL builds its rings here)")
    p.add_argument("--backend", choices=["auto", "nccl", "gloo"], default="auto")
    return p.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = _parse()
    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT: the default env:// init reads them.
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()

    # Correctness first: a sum of 1..world proves every rank took part.
    check = torch.full((4,), float(rank + 1), device=device)
    dist.all_reduce(check)
    expected = world * (world + 1) / 2
    if not torch.allclose(check, torch.full_like(check, expected)):
        raise SystemExit(f"rank {rank}: all_reduce returned {check.tolist()}, expected {expected}")

    numel = max(1, int(args.size_mb * 1024 * 1024) // 4)  # float32
    data = torch.ones(numel, dtype=torch.float32, device=device)
    for _ in range(args.warmup):
        dist.all_reduce(data)
    _sync(device)
    dist.barrier()

    start = time.perf_counter()
    for _ in range(args.iters):
        dist.all_reduce(data)
    _sync(device)
    elapsed = (time.perf_counter() - start) / max(1, args.iters)

    size_bytes = numel * 4
    algbw = size_bytes / elapsed / 1e9
    # Bus bandwidth as nccl-tests defines it for all_reduce: comparable across world sizes and
    # with the link speed (a ring moves 2*(n-1)/n of the buffer over each link).
    busbw = algbw * 2 * (world - 1) / world if world > 1 else algbw
    if rank == 0:
        print(
            f"all_reduce backend={backend} world={world} size={size_bytes / 2**20:.1f}MiB "
            f"time={elapsed * 1e3:.2f}ms algbw={algbw:.2f}GB/s busbw={busbw:.2f}GB/s",
            flush=True,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
