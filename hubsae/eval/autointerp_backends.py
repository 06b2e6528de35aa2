"""Chat backends for autointerp: one small Protocol, a local transformers model, any OpenAI-compatible server.

`ChatBackend.chat(messages, max_tokens, temperature) -> str` is all the explainer and the scorers
need. `TransformersChat` runs a local chat model (default: the embedded SmolLM2-135M-Instruct, so
autointerp runs offline); `OpenAIChat` talks to any server that speaks OpenAI's
`POST /v1/chat/completions` (Hugging Face Inference Providers, TGI, vLLM, llama.cpp's server)
through `huggingface_hub.InferenceClient(base_url=...)`.
"""

import logging
from typing import Protocol, runtime_checkable

import torch

from .autointerp_prompts import Messages

logger = logging.getLogger(__name__)


class ChatBackendError(RuntimeError):
    """A chat backend could not produce an answer (server error, unreadable reply, offline mode)."""


@runtime_checkable
class ChatBackend(Protocol):
    """What autointerp calls: `name` (recorded as the explanation/score model) and `chat`."""

    name: str

    def chat(self, messages: Messages, max_tokens: int, temperature: float = 0.0) -> str:
        """The assistant's reply to `messages` ([{"role", "content"}]), at most `max_tokens` tokens."""
        ...


class TransformersChat:
    """A local transformers chat model, greedy at temperature 0, through the tokenizer's chat template.

    The default is the embedded SmolLM2-135M-Instruct (`hubsae.llm.load_causal_lm()`), so explaining
    and scoring run offline on a CPU. It is a very weak explainer and judge. On 8 latents of a hubsae
    TopK SAE at its own layer 6 (recipes/smollm2-cpu.yaml), whose marked tokens were plain to see
    (one fires on " know" in each context shown): 1 of its 8 explanations named the marked token, the
    others quote an excerpt ('The latent responds to the sentence "The Fiend'); given a worked
    example it copied the example's text instead. As a scorer at 5 excerpts per prompt none of its
    448 answers was a readable list (it runs on past 5 items); at one excerpt per prompt it answered
    "[2]" (no such example) to all 32 prompts of the latent measured, and in a probe with other
    wording "[1]" to all 14 contexts of the " know" latent under the correct explanation (balanced
    accuracy 0.5). The papers use far larger models (delphi,
    arXiv 2410.13928: Llama-3.1-70B; SAEBench, arXiv 2503.09532: GPT-4o-mini): read SmolLM2 numbers
    beside their shuffled control, and use `OpenAIChat` with a strong model for comparable numbers.
    """

    def __init__(self, model=None, tokenizer=None, name: str | None = None):
        if (model is None) != (tokenizer is None):
            raise ValueError("TransformersChat needs both model and tokenizer, or neither (the embedded SmolLM2)")
        if model is None:
            from ..llm import SMOLLM2_NAME, load_causal_lm

            model, tokenizer = load_causal_lm()
            name = name or SMOLLM2_NAME
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"the tokenizer of {type(model).__name__} has no chat template: use an instruct model")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name = name or getattr(model.config, "name_or_path", None) or type(model).__name__

    @torch.no_grad()
    def chat(self, messages: Messages, max_tokens: int, temperature: float = 0.0) -> str:
        device = next(self.model.parameters()).device
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].to(device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            pad_token_id=pad,
            top_p=None,
            top_k=None,
            **sampling,
        )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


class OpenAIChat:
    """Any OpenAI-compatible chat endpoint, through `huggingface_hub.InferenceClient(base_url=...)`.

    `base_url` is the server (e.g. "http://127.0.0.1:8080" for llama.cpp, ".../v1" for vLLM);
    huggingface_hub appends `/v1/chat/completions`. `model` is sent in the request (servers that
    host one model ignore it). Every failure (HTTP error, a reply that is not the OpenAI JSON, no
    server) is a `ChatBackendError` naming the URL. huggingface_hub refuses every request, even to
    127.0.0.1, while HF_HUB_OFFLINE=1 is set; that is reported as such.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, timeout: float = 120):
        from huggingface_hub import InferenceClient

        self.base_url, self.model = base_url, model
        self.name = model or base_url
        self.client = InferenceClient(base_url=base_url, api_key=api_key, timeout=timeout)

    def chat(self, messages: Messages, max_tokens: int, temperature: float = 0.0) -> str:
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled

        try:
            out = self.client.chat_completion(
                messages, model=self.model, max_tokens=max_tokens, temperature=temperature
            )
            content = out.choices[0].message.content
        except OfflineModeIsEnabled as e:
            raise ChatBackendError(
                f"chat endpoint {self.base_url}: HF_HUB_OFFLINE=1 makes huggingface_hub refuse every request, "
                "local servers included; unset it to use an OpenAI-compatible server"
            ) from e
        except (HfHubHTTPError, InferenceTimeoutError) as e:
            raise ChatBackendError(f"chat endpoint {self.base_url} failed: {e}") from e
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise ChatBackendError(
                f"chat endpoint {self.base_url} sent a reply that is not an OpenAI chat completion: {e!r}"
            ) from e
        except Exception as e:  # the transport's own errors (connection refused, DNS, TLS) have no common base
            raise ChatBackendError(f"chat endpoint {self.base_url} could not be reached: {e!r}") from e
        if not isinstance(content, str):
            raise ChatBackendError(f"chat endpoint {self.base_url} sent no message content: {out!r}")
        return content.strip()
