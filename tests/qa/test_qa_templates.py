"""The templates are data: every character is pinned here (docs/protocol.md §4)."""
import numpy as np

from reasonseg.builders.qa import templates as t


def test_lists_are_verbatim():
    assert t.SHORT_QUESTIONS == (
        "Can you segment the {class_name} in this image?",
        "Please segment the {class_name} in this image.",
        "What is {class_name} in this image? Please respond with segmentation mask.",
        "What is {class_name} in this image? Please output segmentation mask.",
    )
    assert t.LONG_QUESTIONS == ("{sent} Please respond with segmentation mask.",
                                "{sent} Please output segmentation mask.")
    assert t.EXPLANATORY_QUESTIONS == ("Please output segmentation mask and explain why.",
                                       "Please output segmentation mask and explain the reason.",
                                       "Please output segmentation mask and give some explanation.")
    assert t.ANSWERS == ("It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].",
                         "Sure, the segmentation result is [SEG].", "[SEG].")
    assert t.with_image("q") == "<image>\nq"


def test_short_questions_lower_case_and_ids_point_at_the_template():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        text, template_id = t.short_question(rng, "Traffic Light")
        assert text == t.template_text(template_id).format(class_name="traffic light")
        seen.add(template_id)
    assert seen == {f"short:{k}" for k in range(4)}
    text, template_id = t.long_question(rng, "Which Thing Rolls?")
    assert text.startswith("Which Thing Rolls? Please ")  # long sentences keep their case
    assert {t.seg_answer(rng)[1] for _ in range(200)} == {f"answer:{k}" for k in range(5)}


def test_part_phrasing_takes_both_forms_about_half_the_time():
    rng = np.random.default_rng(1)
    phrases = [t.part_phrase(rng, "car", "antenna") for _ in range(2000)]
    assert set(phrases) == {"car antenna", "the antenna of the car"}
    assert 0.45 < phrases.count("car antenna") / len(phrases) < 0.55
