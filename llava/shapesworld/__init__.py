"""ShapesWorld: a synthetic vision-language world with exact ground truth (the embedded default dataset).

Images hold 1-4 coloured shapes on a 3x3 grid; a closed grammar yields questions with exact answers,
captions and descriptions; `judge` scores free-form generated questions against a scene; `export` writes
LLaVA-format training data and benchmark-format eval sets (`python -m llava.shapesworld --help`).
"""

from .grammar import QTYPES, SHORT_ANSWER_SUFFIX, GrammarError, Query, Ref, answer, grounded, normalize, parse
from .judge import BAR, Verdict, judge_question, meets_bar, score_questions
from .language import (
    CAPTION_PROMPT,
    DETAIL_PROMPT,
    QA,
    describe,
    existence_probe,
    make_captions,
    make_question,
    make_questions,
    vocabulary,
    with_suffix,
)
from .render import render_scene
from .scene import (
    ALL_COLORS,
    ALL_SHAPES,
    COLOR_RGB,
    SIZES,
    Scene,
    SceneObject,
    WorldConfig,
    position_name,
    sample_scene,
    scene_stream,
)

__all__ = [
    "ALL_COLORS", "ALL_SHAPES", "BAR", "CAPTION_PROMPT", "COLOR_RGB", "DETAIL_PROMPT", "QA", "QTYPES",
    "SHORT_ANSWER_SUFFIX", "SIZES", "GrammarError", "Query", "Ref", "Scene", "SceneObject", "Verdict",
    "WorldConfig", "answer", "describe", "existence_probe", "grounded", "judge_question", "make_captions", "make_question",
    "make_questions", "meets_bar", "normalize", "parse", "position_name", "render_scene", "sample_scene",
    "scene_stream", "score_questions", "vocabulary", "with_suffix",
]
