"""Convert between our checkpoints and transformers' native `LlavaForConditionalGeneration` (vLLM, SGLang, lmms-eval).

    python -m llava.model.export --model-path P [--model-base B] [--conv-mode M] --output OUT   # ours -> HF Llava
    python -m llava.model.export --to-reference --model-path HF_DIR --output OUT                 # HF Llava -> ours

The HF export is a directory that `AutoProcessor` and `LlavaForConditionalGeneration` load with nothing from
this package:

* weights and `config.json` (`LlavaConfig`: `image_token_index` is the id of the `<image>` token added to the
  tokenizer, `image_seq_length` our number of image tokens, the vision feature layer and select strategy);
* `preprocessor_config.json`: the checkpoint's own `CLIPImageProcessor` settings (resize, crop, mean, std);
* the tokenizer (`tokenizer.json`, `tokenizer_config.json`) with the `<image>` token;
* `processor_config.json` (`LlavaProcessor`): `patch_size` of the tower, `vision_feature_select_strategy`
  ("default" for `mm_vision_select_feature=patch`, "full" for `cls_patch`), `num_additional_image_tokens=1`
  (CLIP's CLS), `image_token="<image>"`; so the processor expands `<image>` to exactly our image token count;
* `chat_template.jinja`: the model's TRAINING template (see below);
* `README.md` and `llava_export.json`: what was exported, the template, and the image preprocessing caveat.

Chat template. The template is the checkpoint's `conv_mode` (recorded in config.json by training; `--conv-mode`
overrides it; absent, `v1` as our engine assumes). Every template of `llava.conversation` is supported (v1,
vicuna_v1, llava_v1, v1_sq, v0/llava_v0/default, llama_2/llava_llama_2, mpt, plain): the Jinja source is
generated from the template's separator style and strings, and renders byte for byte what `Conversation.get_prompt`
renders for the same messages (an image in a user turn becomes `<image>\\n` before its text, as our engine writes
it; a leading `system` message replaces the system prompt; `v1_sq` also accepts `vuser` turns). An unknown
`conv_mode` is an error (`ExportError`, listing the valid names), never a silently wrong prompt.

Tokenization. Our `tokenizer_image_token` tokenizes the text after each `<image>` as a new text, so a prompt
`...USER: <image>\\nWhat...` has a `▁` token after the image; a plain tokenizer with an added `<image>` token would
drop it. The exported tokenizer reproduces ours exactly: `<image>` is a normalized special token, and
`tokenizer.json`'s normalizer inserts a space after an `<image>` unless a space, another added token or the end
follows. `tokenizer_class` is `PreTrainedTokenizerFast`, so AutoTokenizer (transformers 4 and 5) uses
`tokenizer.json` as written (rebuilding the tokenizer from `tokenizer.model` would lose the normalizer). After
writing, the export reloads itself with `AutoProcessor` and checks the chat template's prompt and the processor's
token ids against ours (`ExportError` if they differ).

Images. HF's `CLIPImageProcessor` resizes the shortest edge and centre-crops. A model trained with
`image_aspect_ratio=pad` saw images padded to a square with the CLIP mean colour first (`resize`: stretched to
a square): the export warns, and the HF results equal ours only for square images unless the caller pads first
(`llava.mm_utils.expand2square(image)`, or the PIL recipe printed and written to README.md).

Projectors. transformers' Llava projector is Linear-GELU-Linear, so only `mlp2x_gelu` exports natively; `linear`,
`mlp{N}x_gelu` with N != 2, `identity`, `cluster` (SQ-LLaVA's clustering projector) and `cross_attn` raise
`ExportError`: keep those in our format and serve them with our engine (`llava.serve.cli`, the web demo,
`llava.eval.*`); vLLM/SGLang cannot load them without a custom model class.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

from llava.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
)
from llava.conversation import SeparatorStyle, conv_templates, get_template
from llava.model.builder import load_pretrained_model, save_pretrained_llava
from llava.model.config import config_from_dict
from llava.model.image_processor import CLIPImageProcessor
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

# CLIP prepends one CLS embedding to the patch embeddings: LlavaProcessor counts it as an "additional" token.
CLIP_ADDITIONAL_IMAGE_TOKENS = 1
# The tokenizer class written to tokenizer_config.json: loads tokenizer.json as is (transformers 4 and 5).
EXPORT_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


class ExportError(ValueError):
    """The model cannot be expressed in the target format."""


def _hf_projector_keys(model: LlavaLlamaForCausalLM) -> dict[str, str]:
    layers = list(model.mm_projector.children()) if isinstance(model.mm_projector, nn.Sequential) else []
    shape = [type(m).__name__ for m in layers]
    if shape != ["Linear", "GELU", "Linear"] or getattr(layers[1], "approximate", "none") != "none":
        raise ExportError(
            f"mm_projector_type={model.config.mm_projector_type!r} has no LlavaForConditionalGeneration "
            "equivalent: transformers' Llava projector is Linear-GELU-Linear, so only mlp2x_gelu exports natively "
            "(not linear, mlp{N}x_gelu with N != 2, identity, cluster or cross_attn). Keep this model in our format "
            "and run it with our engine (python -m llava.serve.cli, the web demo, llava.eval.*); vLLM and SGLang "
            "cannot load it without a custom model class."
        )
    return {"0.weight": "linear_1.weight", "0.bias": "linear_1.bias", "2.weight": "linear_2.weight",
            "2.bias": "linear_2.bias"}


def add_image_token(tokenizer) -> int:
    """Add `<image>` as a normalized special token whose following text tokenizes as the start of a new text.

    Our `tokenizer_image_token` tokenizes each `<image>`-separated chunk on its own, so a chunk that does not
    start with a space gets SentencePiece's word-start `▁` (`<image>\\nWhat` -> `<image> ▁ <0x0A> What`). A
    normalizer that inserts a space after `<image>` (unless a space, another added token or the end follows)
    gives the same ids when the whole prompt is tokenized at once, as transformers' processor does. `<image>`
    must be a *normalized* added token for the normalizer to see it. Returns the token id.
    """
    from tokenizers import AddedToken, Regex, normalizers

    token = AddedToken(DEFAULT_IMAGE_TOKEN, special=True, normalized=True)
    if DEFAULT_IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([token])
    backend = tokenizer.backend_tokenizer
    backend.add_special_tokens([token])  # an existing <image> keeps its id and becomes normalized
    added = [re.escape(t.content) for t in backend.get_added_tokens_decoder().values()]
    follow = "|".join([*added, " ", "\u2581", r"\z"])
    insert = normalizers.Replace(Regex(f"(?<={re.escape(DEFAULT_IMAGE_TOKEN)})(?!{follow})"), " ")
    backend.normalizer = insert if backend.normalizer is None else normalizers.Sequence([insert, backend.normalizer])
    return tokenizer.convert_tokens_to_ids(DEFAULT_IMAGE_TOKEN)


def to_hf(model: LlavaLlamaForCausalLM, tokenizer) -> tuple[LlavaForConditionalGeneration, object]:
    """An equivalent HF Llava model (with an `<image>` token added to the tokenizer) and that tokenizer."""
    projector_keys = _hf_projector_keys(model)
    tower = model._tower()
    tokenizer = _copy_tokenizer(tokenizer)
    image_token = add_image_token(tokenizer)
    text_config = model.language_model.config.to_dict()
    text_config = {k: v for k, v in text_config.items() if not k.startswith("mm_") and k not in (
        "image_aspect_ratio", "tune_mm_mlp_adapter", "num_latents", "architectures")}
    text_config["vocab_size"] = max(len(tokenizer), text_config["vocab_size"])
    config = LlavaConfig(
        vision_config=tower.config.to_dict(), text_config=text_config, image_token_index=image_token,
        image_seq_length=model.num_image_tokens, vision_feature_layer=tower.select_layer,
        vision_feature_select_strategy="default" if tower.select_feature == "patch" else "full",
        projector_hidden_act="gelu", multimodal_projector_bias=True,
    )
    hf = LlavaForConditionalGeneration(config).to(model.dtype)
    state = {}
    for key, value in model.language_model.state_dict().items():
        if key.startswith("model."):
            state["model.language_model." + key[len("model.") :]] = value
        elif key.startswith("lm_head."):
            state[key] = value
    for key, value in tower.vision_tower.state_dict().items():
        state["model.vision_tower." + key] = value
    for ours, theirs in projector_keys.items():
        state["model.multi_modal_projector." + theirs] = model.mm_projector.state_dict()[ours]
    vocab = text_config["vocab_size"]
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        old = state[key]
        if old.shape[0] < vocab:  # rows for the added <image> token: its embedding is always replaced by features
            extra = old.mean(0, keepdim=True).expand(vocab - old.shape[0], -1).clone()
            state[key] = torch.cat([old, extra], 0)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ExportError(f"key mapping incomplete: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return hf.eval(), tokenizer


def from_hf(hf: LlavaForConditionalGeneration) -> LlavaLlamaForCausalLM:
    """Our model from an HF Llava model (MLP projector); the added `<image>` embedding rows are kept."""
    cfg = hf.config
    data = cfg.text_config.to_dict()
    tower = CLIPVisionTower(
        cfg.vision_config, cfg.vision_feature_layer,
        "patch" if cfg.vision_feature_select_strategy == "default" else "cls_patch",
    )
    data.update(mm_projector_type="mlp2x_gelu", mm_hidden_size=cfg.vision_config.hidden_size,
                mm_vision_config=cfg.vision_config.to_dict(), mm_vision_select_layer=cfg.vision_feature_layer,
                mm_vision_select_feature=tower.select_feature, mm_vision_tower=None)
    model = LlavaLlamaForCausalLM(config_from_dict(data), vision_tower=tower).to(hf.dtype)
    state = {}
    for key, value in hf.state_dict().items():
        if key.startswith("model.language_model."):
            state["language_model.model." + key[len("model.language_model.") :]] = value
        elif key.startswith("lm_head."):
            state["language_model." + key] = value
        elif key.startswith("model.vision_tower."):
            state["vision_tower.vision_tower." + key[len("model.vision_tower.") :]] = value
        elif key.startswith("model.multi_modal_projector."):
            name = key[len("model.multi_modal_projector.") :]
            state["mm_projector." + name.replace("linear_1", "0").replace("linear_2", "2")] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


def _copy_tokenizer(tokenizer):
    import copy

    return copy.deepcopy(tokenizer)


# ---------------------------------------------------------------------------------------------- chat template
def training_conv_mode(config) -> str:
    """The template the checkpoint was trained with: `conv_mode` from its config (training records it), else
    what our engine assumes (`v1` for LLaMA-family models). A recorded name we do not know is an error."""
    from llava.inference.engine import default_conv_mode

    name = getattr(config, "conv_mode", None)
    if name is None:
        return default_conv_mode(config)
    if name not in conv_templates:
        raise ExportError(f"config.json names conv_mode={name!r}, which is not a template of llava.conversation "
                          f"({', '.join(sorted(conv_templates))}); pass --conv-mode")
    return name


def _lit(text: str) -> str:
    """A Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(text)


def chat_template(conv_mode: str, image_placeholder: str = DEFAULT_IMAGE_TOKEN) -> str:
    """Jinja source rendering `conv_mode` exactly as `llava.conversation` does (see the module docstring).

    Messages are HF chat messages: `role` is system (first message only), user, assistant (or vuser where the
    template has a VUSER role); `content` is a string or a list of `{"type": "image"}` / `{"type": "text",
    "text": ...}` parts. The images of a user turn become `image_placeholder + "\\n"` each, before its text,
    unless the text already holds `<image>`. `add_generation_prompt` appends the assistant cue.
    """
    if conv_mode not in conv_templates:
        raise ExportError(f"unknown conv_mode {conv_mode!r}; choose one of {', '.join(sorted(conv_templates))}")
    conv = get_template(conv_mode)
    style, sep, sep2 = conv.sep_style, conv.sep, conv.sep2 or ""
    user, assistant = conv.roles
    roles = [("user", user), ("assistant", assistant)] + ([("vuser", conv.vuser_role)] if conv.vuser_role else [])
    allowed = "system (first message only), " + ", ".join(kind for kind, _ in roles)
    lines = [
        f"{{#- SQ-LLaVA training template {conv_mode!r} (llava.conversation), written by llava.model.export -#}}",
        f"{{%- set ns = namespace(system={_lit(conv.system)}, start=0, text='', images=0, kind='', role='') -%}}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set ns.start = 1 -%}",
        "{%- if messages[0]['content'] is string -%}{%- set ns.system = messages[0]['content'] -%}",
        "{%- else -%}{%- set ns.system = '' -%}",
        "{%- for part in messages[0]['content'] -%}",
        "{%- if part['type'] == 'text' -%}{%- set ns.system = ns.system + part['text'] -%}{%- endif -%}",
        "{%- endfor -%}",
        "{%- endif -%}",
        "{%- endif -%}",
    ]
    if style in (SeparatorStyle.TWO, SeparatorStyle.SINGLE, SeparatorStyle.MPT):
        lines.append(f"{{{{- ns.system + {_lit(sep)} -}}}}")
    elif style == SeparatorStyle.PLAIN:
        lines.append("{{- ns.system -}}")
    lines += [
        "{%- for message in messages[ns.start:] -%}",
        "{%- set ns.text = '' -%}{%- set ns.images = 0 -%}",
        "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}",
        "{%- elif message['content'] is not none -%}",
        "{%- for part in message['content'] -%}",
        "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}{%- set ns.images = ns.images + 1 -%}",
        "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- endif -%}",
        f"{{%- if ns.images > 0 and {_lit(DEFAULT_IMAGE_TOKEN)} not in ns.text -%}}",
        f"{{%- for _ in range(ns.images) -%}}{{%- set ns.text = {_lit(image_placeholder + chr(10))} + ns.text -%}}"
        "{%- endfor -%}",
        "{%- endif -%}",
    ]
    for k, (kind, name) in enumerate(roles):
        lines.append(f"{{%- {'if' if k == 0 else 'elif'} message['role'] == {_lit(kind)} -%}}"
                     f"{{%- set ns.kind = {_lit(kind)} -%}}{{%- set ns.role = {_lit(name)} -%}}")
    lines += [
        f"{{%- else -%}}{{{{- raise_exception({_lit(f'template {conv_mode}: roles are {allowed}; got ')} "
        "+ message['role']) -}}",
        "{%- endif -%}",
    ]
    i = "loop.index0"
    if style == SeparatorStyle.TWO:  # the separator alternates with the message's position, not its role
        turn_sep = f"({_lit(sep)} if {i} % 2 == 0 else {_lit(sep2)})"
        lines.append("{%- if not ns.text -%}{{- ns.role + ':' -}}")
        if conv.vuser_role:  # a VUSER question ends with its own sep2 before the turn's separator
            lines.append(f"{{%- elif ns.kind == 'vuser' -%}}"
                         f"{{{{- ns.role + ': ' + ns.text + {_lit(sep2)} + {turn_sep} -}}}}")
        lines += [f"{{%- else -%}}{{{{- ns.role + ': ' + ns.text + {turn_sep} -}}}}", "{%- endif -%}"]
    elif style == SeparatorStyle.SINGLE:
        lines.append(f"{{%- if not ns.text -%}}{{{{- ns.role + ':' -}}}}{{%- else -%}}"
                     f"{{{{- ns.role + ': ' + ns.text + {_lit(sep)} -}}}}{{%- endif -%}}")
    elif style == SeparatorStyle.MPT:
        lines.append(f"{{%- if not ns.text -%}}{{{{- ns.role -}}}}{{%- else -%}}"
                     f"{{{{- ns.role + ns.text + {_lit(sep)} -}}}}{{%- endif -%}}")
    elif style == SeparatorStyle.PLAIN:  # position decides: image (or text) then caption + sep
        lines += [
            "{%- if ns.text -%}",
            f"{{%- if {i} % 2 == 0 -%}}{{{{- {_lit(DEFAULT_IMAGE_TOKEN)} if {_lit(DEFAULT_IMAGE_TOKEN)} in ns.text "
            "else ns.text -}}",
            f"{{%- else -%}}{{{{- ns.text + {_lit(sep)} -}}}}",
            "{%- endif -%}",
            "{%- endif -%}",
        ]
    elif style == SeparatorStyle.LLAMA_2:
        lines += [
            f"{{%- if {i} == 0 and (not ns.text or ns.kind != 'user') -%}}"
            f"{{{{- raise_exception({_lit('llama_2 conversations must start with a user message')}) -}}}}"
            "{%- endif -%}",
            "{%- if ns.text -%}",
            "{%- if ns.kind == 'user' -%}",
            f"{{{{- ('' if {i} == 0 else {_lit(sep)}) + '[INST] ' + ({_lit('<<SYS>>' + chr(10))} + ns.system + "
            f"{_lit(chr(10) + '<</SYS>>' + chr(10) * 2)} if {i} == 0 else '') + ns.text + ' [/INST]' -}}}}",
            f"{{%- else -%}}{{{{- ' ' + ns.text + ' ' + {_lit(sep2)} -}}}}",
            "{%- endif -%}",
            "{%- endif -%}",
        ]
    else:  # pragma: no cover - every SeparatorStyle is handled above
        raise ExportError(f"no chat template for separator style {style}")
    lines.append("{%- endfor -%}")
    cue = {SeparatorStyle.TWO: assistant + ":", SeparatorStyle.SINGLE: assistant + ":", SeparatorStyle.MPT: assistant}
    if style in cue:
        lines.append(f"{{%- if add_generation_prompt -%}}{{{{- {_lit(cue[style])} -}}}}{{%- endif -%}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- processor
def hf_processor(hf: LlavaForConditionalGeneration, tokenizer, image_processor, template: str):
    """The `LlavaProcessor` for an exported model: image token count, image token and chat template as ours."""
    from transformers import LlavaProcessor

    config = hf.config
    tokenizer.chat_template = template
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=CLIP_ADDITIONAL_IMAGE_TOKENS, image_token=DEFAULT_IMAGE_TOKEN,
        chat_template=template,
    )
    if processor.image_token_id != config.image_token_index:
        raise ExportError(f"the processor's <image> id {processor.image_token_id} is not the config's "
                          f"image_token_index {config.image_token_index}")
    crop = _input_side(image_processor)
    count = (crop // processor.patch_size) ** 2 + processor.num_additional_image_tokens
    count -= 1 if processor.vision_feature_select_strategy == "default" else 0
    if count != config.image_seq_length:
        raise ExportError(f"the image processor's {crop}px input gives {count} image tokens, the model "
                          f"{config.image_seq_length} (tower image_size {config.vision_config.image_size})")
    return processor


def _input_side(image_processor) -> int:
    crop = getattr(image_processor, "crop_size", None) or {}
    if getattr(image_processor, "do_center_crop", True) and "height" in crop:
        return int(crop["height"])
    size = getattr(image_processor, "size", None) or {}
    return int(size.get("shortest_edge") or size.get("height"))


def image_placeholder(config) -> str:
    """What stands for one image in a user turn, as our engine writes it."""
    if getattr(config, "mm_use_im_start_end", False):
        return DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
    return DEFAULT_IMAGE_TOKEN


# ---------------------------------------------------------------------------------------------- notes
def preprocessing_note(aspect: str, image_processor) -> str | None:
    """What a caller must do to an image before HF's processor to get our results; None for `square`."""
    mean = getattr(image_processor, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    colour = tuple(int(x * 255) for x in mean)
    side = _input_side(image_processor)
    if aspect == "pad":
        return (
            f"this model was trained with image_aspect_ratio=pad: every image was padded to a square with the CLIP "
            f"mean colour {colour} before resizing, and transformers' CLIPImageProcessor does not pad (it resizes "
            "the shortest edge and centre-crops). Results match ours only for square images unless you pad first: "
            "`image = llava.mm_utils.expand2square(image)`, or with PIL only: "
            f"`s = max(image.size); sq = Image.new('RGB', (s, s), {colour}); "
            "sq.paste(image, ((s - image.width) // 2, (s - image.height) // 2)); image = sq`"
        )
    if aspect == "resize":
        return (
            f"this model was trained with image_aspect_ratio=resize: every image was stretched to {side}x{side}, "
            "and transformers' CLIPImageProcessor centre-crops instead. Results match ours only for square images "
            f"unless you resize first: `image = image.resize(({side}, {side}), Image.BICUBIC)`"
        )
    return None


def _readme(source: str, conv_mode: str, aspect: str, config: LlavaConfig, note: str | None) -> str:
    prompt = get_template(conv_mode)
    prompt.reset_messages()
    prompt.append_message(prompt.roles[0], DEFAULT_IMAGE_TOKEN + "\nWhat is in the image?")
    prompt.append_message(prompt.roles[1], None)
    images = note[0].upper() + note[1:] + "." if note else (
        "The model was trained with image_aspect_ratio=square (the processor's resize and centre crop): "
        "transformers' CLIPImageProcessor preprocesses exactly as we do.")
    return f"""# SQ-LLaVA model in transformers' Llava format

Exported by `python -m llava.model.export` from `{source}`: `LlavaForConditionalGeneration`
({config.image_seq_length} image tokens per image, `vision_feature_select_strategy={config.vision_feature_select_strategy}`),
its `LlavaProcessor` (CLIP preprocessing of the checkpoint, tokenizer with `<image>` = id {config.image_token_index})
and the chat template it was trained with, `{conv_mode}`.

```python
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

PATH = "path/to/this/directory"
processor = AutoProcessor.from_pretrained(PATH)
model = LlavaForConditionalGeneration.from_pretrained(PATH)
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is in the image?"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=Image.open("photo.jpg"), text=prompt, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=128, do_sample=False)
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

## Prompt

`chat_template.jinja` renders the training template `{conv_mode}` of `llava.conversation` byte for byte; the
example above renders as

```
{prompt.get_prompt()}
```

An image in a user turn becomes `<image>` + newline before the text; a leading `system` message replaces the
system prompt; assistant answers end with the template's separator (`</s>` for the v1 family).

## Images

{images}

## Tokenizer

Our training tokenizes the text after each `<image>` as a new text (a `▁` token follows the image). The
exported `tokenizer.json` reproduces this: `<image>` is a normalized special token and the normalizer inserts a
space after it. Load the tokenizer from `tokenizer.json` (AutoTokenizer / AutoProcessor / vLLM do), not by
rebuilding it from `tokenizer.model`.
"""


def _check_export(out: Path, tokenizer, num_image_tokens: int, conv_mode: str, placeholder: str,
                  image_side: int) -> None:
    """Reload `out` with transformers only; the chat template's prompt and the processor's ids must be ours."""
    from PIL import Image
    from transformers import AutoProcessor

    from llava.data.tokenization import tokenizer_image_token

    processor = AutoProcessor.from_pretrained(str(out))
    conv = get_template(conv_mode)
    conv.reset_messages()
    conv.append_message(conv.roles[0], placeholder + "\nDescribe the image.")
    conv.append_message(conv.roles[1], "A photo of a cat.")
    conv.append_message(conv.roles[0], "What colour is it?")
    conv.append_message(conv.roles[1], None)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
        {"role": "assistant", "content": "A photo of a cat."},
        {"role": "user", "content": [{"type": "text", "text": "What colour is it?"}]},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    if prompt != conv.get_prompt():
        raise ExportError(f"{out}: the chat template renders {prompt!r}, our template {conv.get_prompt()!r}")
    image = Image.new("RGB", (image_side, image_side), (90, 160, 30))
    ids = processor(images=[image] * prompt.count(DEFAULT_IMAGE_TOKEN), text=prompt)["input_ids"][0]
    expected = []
    for t in tokenizer_image_token(prompt, tokenizer):
        expected += [processor.image_token_id] * num_image_tokens if t == IMAGE_TOKEN_INDEX else [t]
    ids = list(ids)
    if ids != expected:
        k = next((k for k, (a, b) in enumerate(zip(ids, expected)) if a != b), min(len(ids), len(expected)))
        raise ExportError(f"{out}: transformers' processor tokenizes {prompt!r} differently from us from token {k} "
                          f"on: {ids[k:k + 8]} vs our {expected[k:k + 8]}")


def export_hf(model: LlavaLlamaForCausalLM, tokenizer, image_processor, out: str | Path,
              conv_mode: str | None = None, source: str = "?") -> None:
    """Write `out`: the HF Llava model, its processor (tokenizer, image processor, chat template) and notes."""
    out = Path(out)
    conv_mode = conv_mode or training_conv_mode(model.config)
    if conv_mode not in conv_templates:
        raise ExportError(f"unknown conv_mode {conv_mode!r}; choose one of {', '.join(sorted(conv_templates))}")
    placeholder = image_placeholder(model.config)
    hf, hf_tokenizer = to_hf(model, tokenizer)
    processor = hf_processor(hf, hf_tokenizer, image_processor, chat_template(conv_mode, placeholder))
    hf.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    image_processor.save_pretrained(str(out))  # preprocessor_config.json too, for loaders before transformers 5
    tok_config = out / "tokenizer_config.json"
    data = json.loads(tok_config.read_text())
    data["tokenizer_class"] = EXPORT_TOKENIZER_CLASS
    tok_config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    aspect = getattr(model.config, "image_aspect_ratio", None) or "square"
    note = preprocessing_note(aspect, image_processor)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    (out / "README.md").write_text(_readme(source, conv_mode, aspect, hf.config, note))
    record = {"source": source, "conv_mode": conv_mode, "image_aspect_ratio": aspect,
              "mm_projector_type": getattr(model.config, "mm_projector_type", None),
              "num_image_tokens": hf.config.image_seq_length, "image_token": DEFAULT_IMAGE_TOKEN,
              "image_token_index": hf.config.image_token_index, "note": note or "square: no preprocessing caveat"}
    (out / "llava_export.json").write_text(json.dumps(record, indent=2) + "\n")
    _check_export(out, tokenizer, model.num_image_tokens, conv_mode, placeholder, _input_side(image_processor))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--lora-pretrain", default=None)
    parser.add_argument("--output", required=True)
    parser.add_argument("--conv-mode", default=None,
                        help="chat template to export (default: the checkpoint's conv_mode, else v1)")
    parser.add_argument("--to-reference", action="store_true", help="convert an HF Llava directory to our format")
    args = parser.parse_args(argv)
    out = Path(args.output)
    if args.to_reference:
        hf = LlavaForConditionalGeneration.from_pretrained(args.model_path)
        model = from_hf(hf)
        tokenizer = AutoTokenizer.from_pretrained(args.model_path)
        save_pretrained_llava(model, out, tokenizer, CLIPImageProcessor.from_pretrained(args.model_path))
    else:
        tokenizer, model, processor, _ = load_pretrained_model(
            args.model_path, args.model_base, lora_pretrain=args.lora_pretrain, dtype="auto"
        )
        export_hf(model, tokenizer, processor, out, conv_mode=args.conv_mode, source=str(args.model_path))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
