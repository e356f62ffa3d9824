"""mbrl_jax.data: a fixed-capacity ring replay buffer over any experience pytree."""

from mbrl_jax.data.replay_buffer import BufferState
from mbrl_jax.data.replay_buffer import add
from mbrl_jax.data.replay_buffer import add_masked
from mbrl_jax.data.replay_buffer import capacity
from mbrl_jax.data.replay_buffer import chronological_slots
from mbrl_jax.data.replay_buffer import from_numpy
from mbrl_jax.data.replay_buffer import init
from mbrl_jax.data.replay_buffer import load
from mbrl_jax.data.replay_buffer import sample
from mbrl_jax.data.replay_buffer import sample_newest
from mbrl_jax.data.replay_buffer import sample_sequences
from mbrl_jax.data.replay_buffer import save
from mbrl_jax.data.replay_buffer import sequence_start_mask
from mbrl_jax.data.replay_buffer import valid_mask

__all__ = [
    "BufferState",
    "add",
    "add_masked",
    "capacity",
    "chronological_slots",
    "from_numpy",
    "init",
    "load",
    "sample",
    "sample_newest",
    "sample_sequences",
    "save",
    "sequence_start_mask",
    "valid_mask",
]
