# Evaluate ClearCLIP on your own dataset, by config only (README, "Your own dataset").
#
# Layout (any MMSeg BaseSegDataset layout works; this is the simplest):
#   data/my_dataset/images/<name>.jpg
#   data/my_dataset/labels/<name>.png     label values 0..C-1, 255 = ignore
#   data/my_dataset/classes.txt           one class per line (commas separate synonyms)
#
#   python tools/test.py docs/examples/own_dataset.py
#   python tools/collect_results.py work_dirs/ --per-class     # a column named 'my_dataset'
_base_ = ['../../configs/_base_/models/clearclip_vit-b16.py', '../../configs/_base_/default_runtime.py']

benchmark = 'my_dataset'   # the column name in the tables and the report
method = 'clearclip'
data_root = 'data/my_dataset'
classes = ('sky', 'grass', 'tree')   # in label order; the vocabulary file lists the same classes

model = dict(vocabulary=data_root + '/classes.txt', prob_thd=0.0)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BaseSegDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images', seg_map_path='labels'),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        metainfo=dict(classes=classes),
        pipeline=test_pipeline,
    ),
)
