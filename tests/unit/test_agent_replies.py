"""An agent keeps its newest replies for re-sending and only the ids of older ones (bounded
memory: each reply holds a model's weights)."""

from __future__ import annotations

import numpy as np
import pytest
from support import ScriptedTrainer, make_agent

from protocol import DuplicateMessage, Envelope, TrainConfig, TrainIns, TrainRes, new_envelope


def instruction(n: int) -> Envelope:
    ins = TrainIns(model="{}", weights=(np.zeros((2, 3), np.float32),), config=TrainConfig(),
                   budget_s=10.0)  # fmt: skip
    return new_envelope(ins, sender="coordinator", job_id="job", round=n)


def test_only_the_newest_replies_are_kept_and_older_repeats_are_dropped() -> None:
    agent = make_agent("a1", "mqtt://127.0.0.1:1", "hf/v1", ScriptedTrainer())
    inbox = agent.settings.topics.inbox("a1")
    envs = [instruction(n) for n in range(1, 11)]
    for env in envs:
        agent._on_message(inbox, env, 100)
        res = TrainRes(weights=(np.ones((2, 3), np.float32),), num_examples=1, steps=1,
                       loss=0.1, train_s=0.1)  # fmt: skip
        agent._reply(env, res)
    held = [r for r in agent._answers.values() if r]
    assert len(held) == 4  # the newest four replies, not ten
    queued = agent._outbox.qsize()
    agent._on_message(inbox, envs[-1], 100)  # the newest asked again: re-sent
    assert agent._outbox.qsize() == queued + 1
    assert agent.resent == 1
    with pytest.raises(DuplicateMessage, match="answered long ago"):
        agent._on_message(inbox, envs[0], 100)  # the oldest: remembered, reply not kept
