# Runtime shared by every ClearCLIP-Seg config: test-only, MMSeg scope.
default_scope = 'mmseg'
custom_imports = dict(imports=['clearclip_seg.registration'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/test.py switches to gloo without a GPU
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
)
test_cfg = dict(type='TestLoop')
test_evaluator = dict(type='ClearCLIPIoUMetric', iou_metrics=['mIoU'])
# Fixed seed: runs with random weights (tests, speed checks) are reproducible,
# and every rank of a distributed run builds the same model.
randomness = dict(seed=0)
