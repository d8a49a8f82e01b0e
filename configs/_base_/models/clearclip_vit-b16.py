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
    last_block=dict(attn='qq', residual=False, ffn=False),  # ClearCLIP (the LastBlock method)
    # other methods: method=dict(type='SCLIP' | 'NACLIP' | ..., **options) with last_block=None;
    # post-processing: postprocess=dict(type='PAMR', num_iter=10, dilations=(8, 16))
    # (not set here: MMEngine cannot merge a leaf's dict into a base None)
    vocabulary='voc21',
    templates='openai_imagenet',
    logit_scale=50.0,
    prob_thd=0.0,
    area_thd=None,          # SCLIP's small-class suppression (fraction of the foreground area)
    test_cfg=dict(mode='slide', crop_size=(448, 448), stride=(224, 224),
                  max_windows='auto',   # 16 on GPU, 1 on CPU
                  patch_fit='pad',      # windows zero-padded to patch multiples ('truncate': SCLIP-family code)
                  keep_probs=False),    # evaluation needs labels only: bounded memory on large images
)
