"""Prompts: the template / examples / query split, and how a prompt is rendered at each stage.

Every prompt the pipeline builds has three parts, in this order:

    [template]                      instructions + documentation; compressed to rate tau_t
    [k examples]                    retrieved (query, target) pairs, rendered like the query
    [query] [answer cue]            the only part that changes per call

and the training target follows the answer cue. ``render_prompt`` builds the text; the loss is
taken on the target only (see ``promptintern.train``).

A ``Template`` is a list of sections, each an instruction or a document; compressors can treat the
kinds differently, and a section marked ``compressible=False`` is kept verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

SectionKind = Literal["instruction", "document"]


class TemplateSection(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: SectionKind = "instruction"
    text: str
    compressible: bool = True


class Template(BaseModel):
    """The recurring part of a task's prompt."""

    model_config = ConfigDict(frozen=True)

    sections: tuple[TemplateSection, ...] = Field(default_factory=tuple)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text.strip() for s in self.sections if s.text.strip())

    @classmethod
    def from_text(cls, text: str, kind: SectionKind = "instruction") -> "Template":
        return cls(sections=(TemplateSection(kind=kind, text=text),))


@dataclass(frozen=True)
class PromptFormat:
    """How a query and an example look in a prompt.

    ``query_prefix + query + answer_cue`` ends every prompt; an example is the same followed by its
    target. ``target_prefix`` is glued before every target (e.g. a space after ``Command:``).
    """

    query_prefix: str
    answer_cue: str
    target_prefix: str = ""
    examples_header: str = "Examples:"
    separator: str = "\n\n"

    def render_query(self, query: str) -> str:
        return f"{self.query_prefix}{query}{self.answer_cue}"

    def render_target(self, target: str) -> str:
        return f"{self.target_prefix}{target}"

    def render_example(self, query: str, target: str) -> str:
        return self.render_query(query) + self.render_target(target)


def render_prompt(
    fmt: PromptFormat,
    query: str,
    template_text: str = "",
    examples: Sequence[tuple[str, str]] = (),
) -> str:
    """The full input text for one row: template, then examples, then the query and its cue."""
    parts: list[str] = []
    if template_text.strip():
        parts.append(template_text.strip())
    if examples:
        shots = fmt.separator.join(fmt.render_example(q, t) for q, t in examples)
        parts.append(f"{fmt.examples_header}{fmt.separator}{shots}" if fmt.examples_header else shots)
    parts.append(fmt.render_query(query))
    return fmt.separator.join(parts)


# ---------------------------------------------------------------------------------------------
# Chat models: system = template, user = examples + query, rendered by the model's chat template
# ---------------------------------------------------------------------------------------------

ChatMode = Literal["auto", "on", "off"]


def chat_messages(fmt: PromptFormat, query: str, template_text: str = "",
                  examples: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """The prompt as chat messages: the template as the system message (none at tau = 0), the
    examples and the query with its answer cue as the user message."""
    messages = [{"role": "system", "content": template_text.strip()}] if template_text.strip() else []
    messages.append({"role": "user", "content": render_prompt(fmt, query, "", examples)})
    return messages


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def use_chat(mode: str, tokenizer, what: str) -> bool:
    """Whether prompts go through the chat template: ``auto`` when the tokenizer has one, ``on``
    always (an error without one), ``off`` never."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"{what}: chat={mode!r}; allowed: auto, on, off")
    if mode == "off":
        return False
    if mode == "on" and not has_chat_template(tokenizer):
        raise ValueError(f"{what}: chat=on, but the model's tokenizer has no chat template; "
                         f"use chat: auto (plain text for such models) or off")
    return has_chat_template(tokenizer)


def render(fmt: PromptFormat, query: str, template_text: str = "", examples: Sequence[tuple[str, str]] = (),
           *, tokenizer=None, chat: bool = False) -> str:
    """The model's input text: ``render_prompt`` as plain text, or the chat messages through the
    tokenizer's chat template, ending with the assistant's turn header (``add_generation_prompt``)."""
    if not chat:
        return render_prompt(fmt, query, template_text, examples)
    return tokenizer.apply_chat_template(chat_messages(fmt, query, template_text, examples),
                                         tokenize=False, add_generation_prompt=True)


def chat_turn_end(tokenizer) -> str:
    """What the chat template writes after an assistant message, beyond the EOS token that
    training appends anyway: "" for SmolLM2 (``<|im_end|>`` is its EOS), ``<end_of_turn>`` for a
    template whose turns end in a token other than EOS."""
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ANSWER-9f2c"}]
    full = tokenizer.apply_chat_template(probe, tokenize=False)
    tail = full.split("ANSWER-9f2c", 1)[1].strip()
    eos = tokenizer.eos_token or ""
    if eos and tail.startswith(eos):
        return ""
    return tail.split()[0] if tail else ""


def render_target(fmt: PromptFormat, target: str, *, tokenizer=None, chat: bool = False) -> str:
    """What the model must produce after the prompt (EOS is appended by training): plain text
    glues the format's ``target_prefix`` on; a chat answer is the bare target plus the turn end."""
    if not chat:
        return fmt.render_target(target)
    return target + chat_turn_end(tokenizer)
