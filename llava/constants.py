"""Special token ids and strings shared by data, model and inference (reference values, docs/reference.md#templates-and-prompt-strings)."""

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200

DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"

# CLIP normalisation; the pad colour of "pad" aspect ratio is this mean in 0..255 (122, 116, 104).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Answer-format instructions that LLaVA-1.5's instruction data and eval files append to questions (short VQA,
# multiple choice); a model that learned to ask questions from that data writes them too
# (llava.inference.self_questioning).
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."
ANSWER_FORMAT_INSTRUCTIONS = (SHORT_ANSWER_PROMPT, SINGLE_PRED_PROMPT)
