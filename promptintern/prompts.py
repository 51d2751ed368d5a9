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
