"""A multi-node Metaflow flow on the kit's AWS Batch queue: one torchrun per node, EFA between them.

    python -m kit metaflow-config --stack MetaflowMultinode      # writes the profile, prints the values
    export METAFLOW_PROFILE=multinode
    python examples/multinode_flow.py run --nodes 2

The `train` step is @parallel: Metaflow submits one AWS Batch multi-node job with `nodes` nodes and
runs the step on each. Every node starts torchrun for examples/train_allreduce.py with the rank,
world size and main node address Metaflow provides (current.parallel, filled from the
MF_PARALLEL_MAIN_IP / MF_PARALLEL_NUM_NODES / MF_PARALLEL_NODE_INDEX variables that Metaflow's
@batch sets from AWS Batch's AWS_BATCH_JOB_* variables).

@batch arguments are fixed when the file is imported, so they come from environment variables;
the defaults are what `metaflow-config` prints for a p5.48xlarge queue. Run-time values are
Parameters. MULTINODE_LOCAL=1 drops @batch so that @parallel runs the nodes as local processes
(gloo on the CPU) for a smoke test: `MULTINODE_LOCAL=1 python examples/multinode_flow.py run`.

@parallel flows cannot be deployed to AWS Step Functions (Metaflow raises): use `run`. Argo Workflows
takes @parallel but runs steps with @kubernetes, which refuses @batch, so not on this queue.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metaflow import FlowSpec, Parameter, batch, current, parallel, step

LOCAL = os.environ.get("MULTINODE_LOCAL", "") not in ("", "0", "false")
GPUS = int(os.environ.get("MULTINODE_GPUS", "8"))

# The metaflow-config line for p5.48xlarge: gpu=8, efa=32 (one EFA per network card), cpu and memory
# just below the instance's, /dev/shm a quarter of memory. efa= must equal the queue's
# EfaInterfaces output, since Metaflow maps /dev/infiniband/uverbs0..efa-1 into the container.
BATCH_ARGS: dict[str, Any] = {
    "gpu": GPUS,
    "efa": int(os.environ.get("MULTINODE_EFA", "32")),
    "cpu": int(os.environ.get("MULTINODE_CPU", "190")),
    "memory": int(os.environ.get("MULTINODE_MEMORY", "1991680")),
    "shared_memory": int(os.environ.get("MULTINODE_SHARED_MEMORY", "497664")),
}
# Without a queue Metaflow uses the profile's METAFLOW_BATCH_JOB_QUEUE. Passing queue=None would
# override that default with None (and Metaflow would then pick any enabled queue), so the key is
# only set when a queue is given.
if os.environ.get("MULTINODE_QUEUE"):
    BATCH_ARGS["queue"] = os.environ["MULTINODE_QUEUE"]
if os.environ.get("MULTINODE_IMAGE"):
    BATCH_ARGS["image"] = os.environ["MULTINODE_IMAGE"]


def _on_batch(func: Callable[..., Any]) -> Callable[..., Any]:
    return func if LOCAL else batch(**BATCH_ARGS)(func)


class MultinodeAllReduceFlow(FlowSpec):
    """All-reduce bandwidth across N nodes of the kit's queue."""

    nodes = Parameter(
        "nodes",
        type=int,
        default=int(os.environ.get("MULTINODE_NODES", "2")),
        help="nodes of the multi-node job; at most the queue's MaxNodes",
    )
    procs_per_node = Parameter(
        "procs_per_node",
        type=int,
        default=0,
        help="torchrun processes per node; 0: one per GPU (gpu= of @batch), or 1 when run locally",
    )
    size_mb = Parameter("size_mb", type=float, default=256.0, help="all_reduce buffer size in MiB")
    iters = Parameter("iters", type=int, default=20, help="timed all_reduce iterations")
    port = Parameter("port", type=int, default=29500, help="torchrun rendezvous port on the main node")

    @step
    def start(self) -> None:
        """Fan out to `nodes` copies of train, one per node of a single multi-node job."""
        self.next(self.train, num_parallel=self.nodes)

    @parallel
    @_on_batch
    @step
    def train(self) -> None:
        """One torchrun per node; node 0 hosts the rendezvous at current.parallel.main_ip."""
        node = current.parallel
        procs = self.procs_per_node or (1 if LOCAL or GPUS == 0 else GPUS)
        script = Path(__file__).resolve().parent / "train_allreduce.py"
        env = dict(os.environ)
        # The log then says which transport NCCL picked: "NET/OFI" is EFA, "NET/Socket" means the
        # aws-ofi-nccl plugin is missing from the image and traffic fell back to TCP.
        env.setdefault("NCCL_DEBUG", "INFO")
        env.setdefault("NCCL_DEBUG_SUBSYS", "INIT,NET")
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={node.num_nodes}",
            f"--node_rank={node.node_index}",
            f"--nproc_per_node={procs}",
            f"--master_addr={node.main_ip}",
            f"--master_port={self.port}",
            str(script),
            f"--size-mb={self.size_mb}",
            f"--iters={self.iters}",
        ]
        print(f"node {node.node_index}/{node.num_nodes}, main {node.main_ip}: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, env=env, check=True)
        self.node_index = node.node_index
        self.next(self.join)

    @step
    def join(self, inputs: Any) -> None:
        """Every node must have finished: collect their indexes."""
        self.node_indexes = sorted(i.node_index for i in inputs)
        self.next(self.end)

    @step
    def end(self) -> None:
        """Report which nodes took part."""
        print(f"all_reduce ran on nodes {self.node_indexes}")


if __name__ == "__main__":
    MultinodeAllReduceFlow()
