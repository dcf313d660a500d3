"""The LISA reference model as a registered method (`reasonseg predict --method lisa --weights DIR`)."""
from __future__ import annotations

from .registry import MethodContext, register


@register("lisa", "LISA (LLaVA + SAM, embedding-as-mask); validation prompt with `[SEG].` teacher-forced "
                  "(--set prompt_mode=generate, --set precision=bf16|fp16|fp32)",
          weights="xinlai/LISA-7B-v1 (or any folder in the released layout, e.g. from `reasonseg lisa init/export`)")
def build_lisa_method(ctx: MethodContext):
    from ..errors import MethodError
    from .predict import option

    if ctx.weights is None:
        raise MethodError("lisa needs --weights DIR (a released LISA folder)",
                          hint="download xinlai/LISA-7B-v1, or make a tiny one with `reasonseg lisa init --out DIR`")
    from ..lisa.infer import LisaMethod, LisaPredictor, default_precision

    precision = option(ctx, "precision", default_precision(ctx.device))
    prompt_mode = option(ctx, "prompt_mode", "teacher-forced")
    predictor = LisaPredictor.from_pretrained(ctx.weights, device=ctx.device, precision=precision)
    return LisaMethod(predictor, prompt_mode, str(ctx.weights))
