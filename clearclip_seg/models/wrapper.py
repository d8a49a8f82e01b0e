"""A model wrapper for distributed evaluation without DistributedDataParallel.

Evaluation needs no gradient synchronisation: each rank scores its shard and
the metric gathers the areas. Wrapping in DDP would only add start-up cost,
and on CPU (gloo) DDP rejects the ``device_ids`` MMEngine passes.
"""
import torch.nn as nn
from mmengine.registry import MODEL_WRAPPERS  # Runner.wrap_model looks wrappers up in the root registry


@MODEL_WRAPPERS.register_module()
class ClearCLIPTestWrapper(nn.Module):
    """Holds the model as ``.module`` and forwards the test/val steps."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def test_step(self, data):
        return self.module.test_step(data)

    def val_step(self, data):
        return self.module.val_step(data)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
