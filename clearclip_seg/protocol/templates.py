"""The prompt templates of the protocol (docs/protocol.md, "Text side").

The template sets themselves are in ``clearclip_seg/vocab.py``; the protocol
names the one the paper uses, which the base model config is generated with.
"""

# The 80 OpenAI ImageNet templates, in open_clip's order: the paper's text classifier.
DEFAULT_TEMPLATES = 'openai_imagenet'
