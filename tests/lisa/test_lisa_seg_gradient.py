"""The mask loss reaches the query: gradients flow from SAM's prompt back through the [SEG] state (the LLM state one
before [SEG]) to the query tokens' embeddings, and never to the tokens at or after the read position."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import tiny_model  # noqa: E402

from reasonseg.lisa.checkpoint import load_lisa  # noqa: E402
from reasonseg.lisa.config import IMAGE_TOKEN_INDEX  # noqa: E402
from reasonseg.lisa.conversation import render, tokenize, validation_question  # noqa: E402
from reasonseg.lisa.model import LisaBatch  # noqa: E402


def _token_embedding_grads(model, ids: list[int]) -> torch.Tensor:
    """Per token of `ids`: the norm of d(mask logits . random weights)/d(token embedding), one image."""
    embed = model.llm.get_input_embeddings()
    caught = []

    def keep(module, args, out):
        out.retain_grad()
        caught.append(out)

    handle = embed.register_forward_hook(keep)
    side, sam_side = model.vision_tower.config.image_size, model.config.sam.image_size
    g = torch.Generator().manual_seed(0)
    batch = LisaBatch(torch.randn(1, 3, sam_side, sam_side, generator=g), torch.randn(1, 3, side, side, generator=g),
                      torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([0]),
                      [(sam_side, sam_side)], [(32, 32)])
    try:
        out = model(batch, with_logits=False)
    finally:
        handle.remove()
    (out.mask_logits[0] * torch.randn(out.mask_logits[0].shape, generator=g)).sum().backward()
    return caught[0].grad.norm(dim=-1)  # expand() embeds each sequence's ids (the image token as id 0)


def test_mask_loss_reaches_the_query_tokens_through_the_seg_state():
    loaded = load_lisa(tiny_model("v1"))
    model = loaded.model.train()
    tok = loaded.tokenizer
    prompt, _ = render([(validation_question("the yellow star", False), "[SEG].")])
    ids = tokenize(tok, prompt).input_ids
    query = tok.encode("yellow star", add_special_tokens=False)
    grads = _token_embedding_grads(model, ids)
    seg = ids.index(model.seg_token_id)
    before = [i for i, t in enumerate(ids[:seg]) if t != IMAGE_TOKEN_INDEX]
    at_query = [i for i in before if ids[i] in query[1:]]
    assert at_query and all(float(grads[i]) > 0 for i in at_query)
    assert all(float(grads[i]) > 0 for i in before)  # every text token before the read position feeds the state
    assert all(float(grads[i]) == 0 for i in range(seg, len(ids)))  # causal: [SEG] and after do not
