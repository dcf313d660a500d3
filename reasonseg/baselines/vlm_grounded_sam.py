"""Two stages, as the paper's "LLaVA-1.5 + OVSeg" rows: a vision-language model turns the implicit instruction into a
short noun phrase, then grounded-sam segments that phrase. The phrase is recorded with each prediction (`info`).

The VLM is any `transformers` image-text-to-text model (`--weights vlm=DIR`, default LLaVA-1.5-7B from the local
cache), or any OpenAI-compatible chat endpoint (`--vlm-base-url URL --vlm-model NAME`; key from OPENAI_API_KEY).
"""
from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MethodError
from ..schema import Query, Sample
from .grounded_sam import DINO, SAM, GroundedSam, build_grounded
from .predict import MaskInfo, option, read_rgb, weight_path
from .registry import MethodContext, register
from .weights import Slot, declare, quiet_transformers, resolve

VLM = Slot("vlm", "llava-hf/llava-1.5-7b-hf", "hub", "vision-language model")
PHRASE_PROMPT = ("{instruction}\nAnswer with only a short noun phrase (at most five words) naming the object in the "
                 "image that this request refers to.")
MAX_PHRASE_WORDS = 8


def clean_phrase(answer: str) -> str:
    """The first line of an answer, without quotes, lead-ins or a final period, at most a few words."""
    line = next((part for part in answer.strip().splitlines() if part.strip()), "")
    line = re.sub(r"^(answer|phrase|object)\s*:\s*", "", line.strip(), flags=re.IGNORECASE)
    line = line.strip(" \t\"'`*.")
    return " ".join(line.split()[:MAX_PHRASE_WORDS])


class TransformersPhraser:
    """An image-text-to-text model from a `save_pretrained` folder, greedy decoding, batched with left padding."""

    def __init__(self, path: Path, device: str = "cpu", max_new_tokens: int = 16):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        quiet_transformers()
        self.torch = torch
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.processor.tokenizer.padding_side = "left"  # generation continues after the last prompt token
        self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True).to(device).eval()
        self.source = str(path)

    def prompt(self, instruction: str) -> str:
        text = PHRASE_PROMPT.format(instruction=instruction)
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return f"USER: <image>\n{text} ASSISTANT:"

    def phrases(self, images: Sequence[np.ndarray], instructions: Sequence[str]) -> list[str]:
        inputs = self.processor(images=list(images), text=[self.prompt(t) for t in instructions],
                                return_tensors="pt", padding=True).to(self.device)
        with self.torch.inference_mode():
            generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = generated[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)


class EndpointPhraser:
    """Any OpenAI-compatible chat-completions endpoint that accepts image content (vLLM, SGLang, Ollama, …)."""

    def __init__(self, base_url: str, model: str, timeout: float = 120.0, retries: int = 2):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY",
                             timeout=timeout, max_retries=retries)
        self.base_url = base_url
        self.model = model
        self.source = f"{base_url} model {model}"

    def phrase(self, image_path: Path, instruction: str) -> str:
        mime = "image/png" if image_path.suffix.lower() == ".png" else "image/jpeg"
        data = base64.b64encode(image_path.read_bytes()).decode("ascii")
        content = [{"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}},
                   {"type": "text", "text": PHRASE_PROMPT.format(instruction=instruction)}]
        try:
            reply = self.client.chat.completions.create(model=self.model, temperature=0, max_tokens=24,
                                                        messages=[{"role": "user", "content": content}])
        except Exception as exc:  # noqa: BLE001 - the client raises many types; the user needs one line
            raise MethodError(f"the VLM endpoint failed: {type(exc).__name__}: {exc}", path=self.base_url,
                              hint="check --vlm-base-url and --vlm-model") from None
        return reply.choices[0].message.content or ""


class VlmGroundedSam:
    def __init__(self, phraser, grounded: GroundedSam):
        self.phraser = phraser
        self.grounded = grounded

    def describe(self) -> dict:
        return {"weights": self.grounded.weights, "vlm": self.phraser.source, "phrase_prompt": PHRASE_PROMPT,
                "detector_text": "the VLM's phrase (the instruction when the answer is empty)"}

    def predict_batch(self, pairs: Sequence[tuple[Sample, Query]]) -> list[MaskInfo]:
        images = {s.id: read_rgb(s) for s, _ in pairs}
        if isinstance(self.phraser, EndpointPhraser):
            answers = [self.phraser.phrase(s.image_path, q.text) for s, q in pairs]
        else:
            answers = self.phraser.phrases([images[s.id] for s, _ in pairs], [q.text for _, q in pairs])
        phrases = [clean_phrase(a) for a in answers]
        texts = [p or q.text for p, (_, q) in zip(phrases, pairs, strict=True)]
        out = self.grounded.segment(pairs, texts, images)
        return [MaskInfo(o.mask, {"phrase": p, "vlm_answer": a.strip()[:200], **o.info})
                for o, p, a in zip(out, phrases, answers, strict=True)]

    def predict(self, sample: Sample, query: Query) -> MaskInfo:
        return self.predict_batch([(sample, query)])[0]


declare("vlm-grounded-sam", VLM, DINO, SAM)


@register("vlm-grounded-sam", "a VLM turns the instruction into a noun phrase, then grounded-sam (the paper's "
                              "'LLaVA1.5 + OVSeg' analogue; --vlm-base-url for an OpenAI-compatible endpoint)",
          weights=f"{VLM.model_id} + {DINO.model_id} + {SAM.model_id}")
def build_vlm_grounded_sam(ctx: MethodContext) -> VlmGroundedSam:
    base_url = option(ctx, "vlm_base_url", None)
    if base_url:
        model = option(ctx, "vlm_model", None)
        if not model:
            raise MethodError("--vlm-base-url needs --vlm-model NAME (the model the endpoint serves)")
        phraser = EndpointPhraser(base_url, model, option(ctx, "vlm_timeout", 120.0, float),
                                  option(ctx, "vlm_retries", 2, int))
    else:
        path = resolve("vlm-grounded-sam", VLM, weight_path(ctx, "vlm") or ctx.weights)
        phraser = TransformersPhraser(path, ctx.device, option(ctx, "max_new_tokens", 16, int))
    return VlmGroundedSam(phraser, build_grounded(ctx, "vlm-grounded-sam", bare_is_detector=False))
