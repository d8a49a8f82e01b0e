# ClearCLIP on OpenAI CLIP ViT-B/16: the paper's defaults.
data_preprocessor = dict(
    type='ClearCLIPDataPreProcessor',
    mean=[122.771, 116.746, 104.094],   # CLIP's mean/std x 255, RGB
    std=[68.501, 66.632, 70.323],
    bgr_to_rgb=True,
)
model = dict(
    type='ClearCLIPSegmentor',
    data_preprocessor=data_preprocessor,
    clip=dict(
        arch='ViT-B-16',        # any open_clip ViT name
        pretrained='openai',    # open_clip tag or a local checkpoint file
        arch_file=None,         # JSON architecture to register (tests, custom models)
        precision='auto',       # fp16 on GPU (paper), fp32 on CPU; or fp32/fp16/bf16
        quick_gelu=None,        # None: follow the pretrained tag
    ),
    last_block=dict(attn='qq', residual=False, ffn=False),  # ClearCLIP
    vocabulary='voc21',
    templates='openai_imagenet',
    logit_scale=50.0,
    prob_thd=0.0,
    test_cfg=dict(mode='slide', crop_size=(448, 448), stride=(224, 224), max_windows='auto'),  # 16 on GPU, 1 on CPU
)
