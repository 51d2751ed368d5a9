"""An OpenAI-compatible chat endpoint rewrites the template shorter: the paper's GPT-4 baseline.

    >>> compress_template(template, 0.3, method="api", model_dir="models/smollm2-135m",
    ...                   endpoint="http://localhost:8000/v1", api_model="gpt-4")

``POST {endpoint}/chat/completions`` with temperature 0 (OpenAI, Azure's OpenAI-compatible routes,
vLLM, llama.cpp's server and Ollama all speak it). The key is read from the environment variable
named by ``api_key_env`` (default ``OPENAI_API_KEY``) at call time and sent as a Bearer token; it is
never part of the config, a cache key or stats.json. Without the variable no Authorization header
is sent (local servers rarely want one).

The instruction follows the GPT-4 compression prompt of LLMLingua-2 (Pan et al., 2024, arXiv
2403.12968, Sec. 3.1: "compress ... such that you can reconstruct it as close as possible to the
original", remove unimportant words only, no reordering, no new words), which is how the LLMLingua
papers (Jiang et al., 2023, arXiv 2310.05736, "GPT4-Generation") let GPT-4 compress. We add the
target rate and the spans that must survive verbatim: code blocks, assert lines, {placeholders}.

A model may still drop or alter a protected span. We do not re-insert it: where it belonged in a
rewritten text is guesswork, and a silently repaired template would hide a weak compressor.
``compress_template`` checks every span and raises, naming the endpoint and the model.

Network: one retry (after ``RETRY_DELAY_S``) on a connection error, a timeout or an HTTP 5xx; any
other HTTP status fails at once. Errors name the URL and the status. Temperature 0 makes the
answer as repeatable as the server allows; the pipeline caches it, so a run never asks twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from promptintern.config import CompressionConfig

if TYPE_CHECKING:
    from promptintern.compress_common import Segment

log = logging.getLogger(__name__)

ENDPOINT_HINT = CompressionConfig.ENDPOINT_HINT
RETRY_DELAY_S = 2.0

SYSTEM_PROMPT = (
    "You are an expert linguist who compresses passages into short expressions by removing "
    "unimportant words while keeping as much of their information as possible."
)


class ApiCompressionError(RuntimeError):
    """The endpoint could not be reached or answered with an error; the message names the URL."""


def instruction(text: str, rate: float, words: int) -> str:
    """The user message: compress ``text`` to about ``rate`` of its ``words`` compressible words."""
    return (
        "Compress the text below to short expressions, such that you can reconstruct it as close as "
        "possible to the original. Follow these rules:\n"
        "1. Only remove unimportant words. Do not reorder or change the words you keep, do not use "
        "abbreviations or emojis, and do not add new words or symbols.\n"
        f"2. Keep about {rate:.0%} of the words (about {max(1, round(rate * words))} of {words}), "
        "not counting the parts of rule 3.\n"
        "3. Copy these parts exactly, character for character, in their place: fenced code blocks "
        "(``` ... ```), every line that starts with `assert`, and every placeholder in curly braces "
        "such as {name}.\n"
        "4. Answer with the compressed text only.\n\n"
        f"Text:\n{text}"
    )


def compress_via_api(segments: list[Segment], rate: float, endpoint: str, api_model: str,
                     api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0) -> str:
    """The endpoint's compression of the text of ``segments`` (protected spans are checked by the
    caller)."""
    text = "".join(s.text for s in segments)
    words = sum(len(s.text.split()) for s in segments if s.compress)
    body = {
        "model": api_model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": instruction(text, rate, words)},
        ],
        "temperature": 0,
    }
    url = endpoint.rstrip("/") + "/chat/completions"
    answer = _post_json(url, body, os.environ.get(api_key_env), api_key_env, timeout_s)
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise ApiCompressionError(f"POST {url}: no choices[0].message.content in the answer: "
                                  f"{json.dumps(answer)[:300]}")
    return content.strip()


def _post_json(url: str, body: dict, key: str | None, api_key_env: str, timeout_s: float) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    for attempt in (1, 2):
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300]
            if err.code < 500 or attempt == 2:
                raise ApiCompressionError(
                    f"POST {url} failed with HTTP {err.code}: {detail}{_status_hint(err.code, api_key_env)}"
                ) from err
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            if attempt == 2:
                raise ApiCompressionError(
                    f"POST {url} failed: {getattr(err, 'reason', err)} (timeout {timeout_s:g} s); "
                    "is compression.endpoint right and the server up?"
                ) from err
            reason = str(getattr(err, "reason", err))
        except json.JSONDecodeError as err:
            raise ApiCompressionError(f"POST {url} answered with something that is not JSON: {err}") from err
        log.warning("POST %s failed (%s); retrying once in %.0f s", url, reason, RETRY_DELAY_S)
        time.sleep(RETRY_DELAY_S)
    raise AssertionError("unreachable")


def _status_hint(status: int, api_key_env: str) -> str:
    if status in (401, 403):
        return f" (is the key in ${api_key_env} right? compression.api_key_env names the variable)"
    if status == 404:
        return " (compression.endpoint should be the API's base URL, such as http://host:8000/v1)"
    return ""
