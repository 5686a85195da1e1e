"""JOSH: tree search over simulated conversations, keeping what reached a sparse reward.

``JOSHSearch(toolwoz, backend, user, JOSHConfig(...)).run(task_ids)`` returns one
:class:`TreeRecord` per task (written as ``trees.jsonl`` by ``josh-hf harvest``).
"""

from .config import CREDIT_MODES, JOSHConfig
from .search import JOSHSearch, node_seed, user_seed
from .tree import STOP_REASONS, TreeNode, TreeRecord, iter_tree_dicts, read_trees, write_tree

__all__ = [
    "CREDIT_MODES",
    "STOP_REASONS",
    "JOSHConfig",
    "JOSHSearch",
    "TreeNode",
    "TreeRecord",
    "iter_tree_dicts",
    "node_seed",
    "read_trees",
    "user_seed",
    "write_tree",
]
