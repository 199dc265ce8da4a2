"""Prompt rendering: a ``Problem`` -> the exact string fed to the sampler.

``data.template``: ``chat`` uses the tokenizer's chat template (an error when it has none),
``plain`` a plain-text layout, ``auto`` the chat template when the tokenizer has one.
The instruction is ``data.instruction`` when set ('' = none), else the caller's
``default_instruction``, else the set's own (``problem.meta["instruction"]``); the
synthetic set has none. With no instruction, no system prompt and no few-shot examples
the plain render is exactly the problem text (the tiny model is trained on ``12+35=``).

Plain layout (blocks joined by a blank line)::

    <system prompt>
    <example prompt>\\n<instruction>\\n<example completion>     (one block per few-shot example)
    <problem>\\n<instruction>
"""
from __future__ import annotations

from typing import Any

from reasoner.types import Problem

TEMPLATES = ("auto", "plain", "chat")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def instruction_for(problem: Problem, cfg: Any, default_instruction: str | None = None) -> str:
    if cfg.instruction is not None:
        return cfg.instruction
    if default_instruction is not None:
        return default_instruction
    return problem.meta.get("instruction") or ""


def _with_instruction(text: str, instruction: str) -> str:
    return f"{text}\n{instruction}" if instruction else text


def to_messages(problem: Problem, cfg: Any, default_instruction: str | None = None) -> list[dict[str, str]]:
    """System prompt, few-shot turns, then the problem with its instruction, as chat messages."""
    instruction = instruction_for(problem, cfg, default_instruction)
    msgs: list[dict[str, str]] = []
    if cfg.system_prompt:
        msgs.append({"role": "system", "content": cfg.system_prompt})
    for shot_prompt, shot_completion in problem.meta.get("few_shot", [])[: cfg.few_shot or None]:
        msgs.append({"role": "user", "content": _with_instruction(shot_prompt, instruction)})
        msgs.append({"role": "assistant", "content": shot_completion})
    if isinstance(problem.prompt, str):
        msgs.append({"role": "user", "content": _with_instruction(problem.prompt, instruction)})
    else:
        own = [dict(m) for m in problem.prompt]
        if own and own[0]["role"] == "system" and msgs and msgs[0]["role"] == "system":
            msgs = msgs[1:]  # the problem's own system message wins
        if own and own[-1]["role"] == "user":
            own[-1]["content"] = _with_instruction(own[-1]["content"], instruction)
        msgs.extend(own)
    return msgs


def _plain(messages: list[dict[str, str]]) -> str:
    blocks: list[str] = []
    for m in messages:
        if m["role"] == "assistant" and blocks:
            blocks[-1] = f"{blocks[-1]}\n{m['content']}"
        else:
            blocks.append(m["content"])
    return "\n\n".join(blocks)


def render(problem: Problem, tokenizer: Any, cfg: Any, default_instruction: str | None = None) -> str:
    """The prompt string for ``problem`` under ``cfg.template`` (auto | plain | chat)."""
    if cfg.template not in TEMPLATES:
        raise ValueError(f"unknown data.template {cfg.template!r}; valid choices: {', '.join(TEMPLATES)}")
    use_chat = cfg.template == "chat" or (cfg.template == "auto" and has_chat_template(tokenizer))
    if use_chat and not has_chat_template(tokenizer):
        raise ValueError("data.template=chat, but the tokenizer has no chat template; use template=plain or auto")
    messages = to_messages(problem, cfg, default_instruction)
    if use_chat:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return _plain(messages)


def render_all(problems: list[Problem], tokenizer: Any, cfg: Any, default_instruction: str | None = None) -> list[str]:
    return [render(p, tokenizer, cfg, default_instruction) for p in problems]
