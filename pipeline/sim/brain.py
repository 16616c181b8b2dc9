"""What the simulated model says: routes a chat request to the optimizer or the task-model role.

Routing, on the system and user messages joined in order:

1. clearly a meta-prompt (output tags such as ``<START>``/``<INS>``, "new/improved prompt", a
   request to explain a prompt's errors) -> the optimizer role (:mod:`pipeline.sim.optimizer`);
2. contains a known question (an example input of a loaded task) -> the task-model role: the
   answer is right with the probability the hidden landscape gives the rest of the text, the
   *prompt* (:mod:`pipeline.sim.landscape`, :mod:`pipeline.sim.answering`);
3. otherwise asks for a prompt or instruction -> the optimizer role;
4. otherwise a short generic reply.

A request to summarize scored prompts (trajectory summarization) gets a summary of what the
best-scoring prompt says that the worst does not.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from pipeline.sim.answering import TaskModel
from pipeline.sim.matcher import QuestionIndex
from pipeline.sim.metaprompt import meta_strength, parse_meta
from pipeline.sim.optimizer import optimizer_reply, summary
from pipeline.sim.tasks import Task, builtin_tasks, load_task_file
from pipeline.sim.textnorm import tokens

GENERIC_REPLIES = (
    "Happy to help. Based on what you describe, the most reasonable answer is {n}.",
    "Here is a short answer: it depends on the details, but I would go with {n}.",
    "Thinking about it briefly, my best answer is {n}.",
    "Good question. In short, the answer is {n}.",
)


class Brain:
    """Decides the text of one choice. The HTTP layer handles n, max_tokens, stop and usage."""

    def __init__(self, *, seed: int = 0, tasks: Sequence[Task] | None = None) -> None:
        self.seed = seed
        self.tasks: tuple[Task, ...] = builtin_tasks() if tasks is None else tuple(tasks)
        self._index = QuestionIndex(self.tasks)
        self._models = tuple(TaskModel(task, seed=seed) for task in self.tasks)
        self._parse = lru_cache(maxsize=256)(parse_meta)

    @classmethod
    def from_paths(cls, *, seed: int, paths: Sequence[str]) -> Brain:
        """The built-in tasks plus the tasks in ``paths`` (BBH .json, .jsonl, GSM8K .jsonl)."""
        return cls(seed=seed, tasks=(*builtin_tasks(), *map(load_task_file, paths)))

    def model(self, name: str) -> TaskModel:
        """The task model (with its landscape) of the first task called ``name``."""
        for model in self._models:
            if model.task.name == name:
                return model
        raise KeyError(name)

    def reply(
        self, messages: Sequence[tuple[str, str]], *, temperature: float, rng: random.Random
    ) -> str:
        """The full text of one choice for ``messages`` ((role, content) pairs).

        ``rng`` is seeded by the caller from (simulator seed, request seed, choice index), so the
        same request gives the same text; at temperature 0 the caller passes the same rng state
        for every choice index. Task answers at temperature 0 depend only on the messages.
        """
        text = "\n".join(content for role, content in messages if role != "assistant")
        if _asks_summary(text):
            meta = self._parse(text)
            if meta.scored:
                return summary(meta, rng)
        strength = meta_strength(text)
        if strength == 2:
            return optimizer_reply(self._parse(text), rng)
        toks = tokens(text)
        match = self._index.find(toks)
        if match is not None:
            prompt = " ".join(toks[: match.start] + toks[match.end :])
            model = self._models[match.task]
            return model.answer(prompt, match.example, temperature=temperature, rng=rng)
        if strength == 1:
            return optimizer_reply(self._parse(text), rng)
        return rng.choice(GENERIC_REPLIES).format(n=rng.randint(1, 20))


def _asks_summary(text: str) -> bool:
    head = text[-400:].lower()
    return "summarize" in head and "<start>" not in head
