"""Two CPU processes (``torchrun --nproc_per_node 2``, gloo): each harvests its own share of the
round's tasks, and both train on the same gathered dataset."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = r'''
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.environ["TESTS_DIR"])
import test_trainer as T
from transformers import AutoModelForCausalLM, AutoTokenizer
from josh_hf.testing.templates import TRAINING_CHAT_TEMPLATE
from josh_hf.toolwoz import ToolWOZ

model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
tok = AutoTokenizer.from_pretrained(model_dir)
tok.chat_template = TRAINING_CHAT_TEMPLATE

class Recorded(T.nudged(T.JOSHKTOTrainer)):
    def _all_gather(self, obj):
        if isinstance(obj, dict) and "records" in obj:
            self.local_share = [r["task_id"] for r in obj["records"]]
        return super()._all_gather(obj)

args = T.JOSHKTOConfig(**T.settings(out / "run", josh_rounds=1, josh_tasks_per_round=3, max_steps=1,
                                    per_device_train_batch_size=2))
trainer = Recorded(AutoModelForCausalLM.from_pretrained(model_dir), args=args, processing_class=tok,
                   toolwoz=ToolWOZ.load(None))
trainer.train()
rank = trainer.accelerator.process_index
ds = trainer.train_dataset
(out / f"rank-{rank}.json").write_text(json.dumps({
    "rank": rank, "world": trainer.accelerator.num_processes, "share": trainer.local_share,
    "rows": [[t, list(p), list(c), bool(l)] for t, p, c, l in zip(ds["task_id"], ds["prompt_ids"], ds["completion_ids"], ds["label"])],
    "examples": trainer.josh_log_history[-1]["josh/examples"], "steps": trainer.state.global_step,
}))
'''


def test_two_processes_harvest_disjoint_shares_and_train_on_one_dataset(tmp_path, tiny_model_dir):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "TESTS_DIR": str(Path(__file__).parent), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with socket.socket() as sock:  # a free port: torchrun's "--master_port 0" could hang the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), str(tiny_model_dir),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]

    import test_trainer as T

    from josh_hf.josh import read_trees
    from josh_hf.trainer import round_schedule

    tasks = round_schedule(T.TASKS, 1, 3, T.SEED)[0]
    # Disjoint shares (tasks[rank::2]) that cover the round...
    assert ranks[0]["share"] == tasks[0::2] and ranks[1]["share"] == tasks[1::2]
    info = json.loads((tmp_path / "run" / "round-1" / "round.json").read_text())
    assert info["shares"] == [tasks[0::2], tasks[1::2]]
    # ...gathered into one harvest in the round's task order...
    assert [t.task_id for t in read_trees(tmp_path / "run" / "round-1" / "trees.jsonl")] == tasks
    # ...and one training dataset, the same on both processes, holding every share's examples.
    assert ranks[0]["rows"] == ranks[1]["rows"] and len(ranks[0]["rows"]) == ranks[0]["examples"] > 0
    assert {row[0] for row in ranks[0]["rows"]} == set(tasks)  # every task is nudged to a golden turn
    assert ranks[0]["steps"] == ranks[1]["steps"] == 1
