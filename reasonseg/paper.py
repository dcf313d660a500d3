"""Numbers reported in the LISA paper (v3, Table 1), as read-only rows beside measured ones.

Values are gIoU / cIoU ×100 as printed; `ft` = fine-tuned on the 239 ReasonSeg train samples. v1 LISA weights were
trained on train+val, so their val numbers are contaminated (reference issue #74).
"""
from __future__ import annotations

from dataclasses import dataclass

SOURCE = "Lai et al., LISA: Reasoning Segmentation via Large Language Model, CVPR 2024 (arXiv 2308.00692 v3), Table 1"


@dataclass(frozen=True)
class ReportedRow:
    method: str
    val: tuple[float, float]
    test_short: tuple[float, float]
    test_long: tuple[float, float]
    test_overall: tuple[float, float]
    source: str = SOURCE

    def groups(self, split: str) -> dict[str, dict]:
        """The row in the results contract's shape (fractions), for one split."""
        cells = {"overall": self.val} if split == "val" else {
            "short": self.test_short, "long": self.test_long, "overall": self.test_overall}
        return {group: {"giou": g / 100, "ciou": c / 100} for group, (g, c) in cells.items()}

    @property
    def meta(self) -> dict[str, str]:
        """The leaderboard's metadata columns, as the paper describes the row's method (Table 1 and section 5)."""
        name = self.method
        size = "13B" if "13B" in name else "7B" if "7B" in name else "n/a"
        if name.startswith("LISA"):
            base = ("LLaVA-1.5" if "LLaVA1.5" in name else "LLaVA (Vicuna)") + " + SAM ViT-H"
            data = "semantic seg., referring seg. and VQA data" + (
                " + ReasonSeg train (239)" if name.endswith("(ft)") else "; no ReasonSeg")
        elif "+ OVSeg" in name:
            base, data = "LLaVA-1.5 answers, OVSeg segments the answer", "no ReasonSeg"
        else:
            base, data = f"{name} (its own segmentation model)", "its own; no ReasonSeg"
        return {"model_size": size, "base_model": base, "training_data": data, "checkpoint_selected_on": "not stated"}


PAPER_TABLE1 = (
    ReportedRow("OVSeg", (28.5, 18.6), (18.0, 15.5), (28.7, 22.5), (26.1, 20.8)),
    ReportedRow("GRES", (22.4, 19.9), (17.6, 15.0), (22.6, 23.8), (21.3, 22.0)),
    ReportedRow("X-Decoder", (22.6, 17.9), (20.4, 11.6), (22.2, 17.5), (21.7, 16.3)),
    ReportedRow("SEEM", (25.5, 21.2), (20.1, 11.5), (25.6, 20.8), (24.3, 18.7)),
    ReportedRow("Grounded-SAM", (26.0, 14.5), (17.8, 10.8), (22.4, 18.6), (21.3, 16.4)),
    ReportedRow("LISA-7B", (44.4, 46.0), (37.6, 34.4), (36.6, 34.7), (36.8, 34.1)),
    ReportedRow("LISA-7B (ft)", (52.9, 54.0), (40.6, 40.6), (49.4, 51.0), (47.3, 48.4)),
    ReportedRow("LISA-13B", (48.9, 46.9), (39.9, 43.3), (46.4, 46.5), (44.8, 45.8)),
    ReportedRow("LISA-13B (ft)", (56.2, 62.9), (44.3, 42.0), (54.0, 54.3), (51.7, 51.1)),
    ReportedRow("LLaVA1.5-7B + OVSeg", (38.2, 23.5), (24.2, 18.7), (44.6, 37.1), (39.7, 31.8)),
    ReportedRow("LISA-7B-LLaVA1.5", (53.6, 52.3), (47.1, 48.5), (49.2, 48.9), (48.7, 48.8)),
    ReportedRow("LISA-7B-LLaVA1.5 (ft)", (61.3, 62.9), (48.3, 46.3), (57.9, 59.7), (55.6, 56.9)),
    ReportedRow("LLaVA1.5-13B + OVSeg", (37.9, 26.4), (27.1, 19.4), (46.1, 40.6), (41.5, 34.1)),
    ReportedRow("LISA-13B-LLaVA1.5", (57.7, 60.3), (50.8, 50.0), (54.7, 50.9), (53.8, 50.8)),
    ReportedRow("LISA-13B-LLaVA1.5 (ft)", (65.0, 72.9), (55.4, 50.6), (63.2, 65.3), (61.3, 62.2)),
)


def reported_row(method: str) -> ReportedRow | None:
    return next((row for row in PAPER_TABLE1 if row.method == method), None)


# ---------------------------------------------------------------------------------------------- refCOCO family

REFER_SOURCE = ("Lai et al., LISA: Reasoning Segmentation via Large Language Model, CVPR 2024 (arXiv 2308.00692 v3), "
                "Table 2 (referring segmentation, cIoU)")


@dataclass(frozen=True)
class ReferRow:
    """The paper's referring-segmentation row of one method: cIoU ×100 per (dataset, split); no gIoU is reported."""

    method: str
    ciou: dict                      # dataset -> split -> cIoU ×100
    source: str = REFER_SOURCE


PAPER_TABLE2 = (
    ReferRow("LISA-7B", {"refcoco": {"val": 74.1, "testA": 76.5, "testB": 71.1},
                         "refcoco+": {"val": 62.4, "testA": 67.4, "testB": 56.5},
                         "refcocog": {"val": 66.4, "test": 68.5}}),
)


def refer_rows(dataset: str, split: str) -> list[tuple[str, float]]:
    """(method, cIoU ×100) of every paper row that reports this dataset and split."""
    return [(row.method, row.ciou[dataset][split]) for row in PAPER_TABLE2 if split in row.ciou.get(dataset, {})]
