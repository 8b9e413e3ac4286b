"""backbones/loading.py: the dtype a backbone is loaded in (--backbone-dtype and the Python API)."""

import pytest
import torch

from readapt.backbones.loading import BACKBONE_DTYPES, backbone_dtype, load_pretrained


def test_auto_is_float32_on_cpu_and_the_checkpoints_own_on_gpu():
    assert backbone_dtype("auto", "cpu") is torch.float32
    assert backbone_dtype("auto", torch.device("cuda:1")) is None  # None: as stored
    assert [backbone_dtype(name, "cuda") for name in BACKBONE_DTYPES[1:]] == [torch.float32, torch.bfloat16,
                                                                             torch.float16]


def test_an_unknown_dtype_is_one_line_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"^backbone dtype 'fp8': choose one of auto, float32, bfloat16, float16$"):
        load_pretrained("never-read", dtype="fp8")


def test_a_bf16_checkpoint_loads_as_asked(tiny_bf16_model_dir):
    dtype = lambda **kw: next(load_pretrained(tiny_bf16_model_dir, **kw)[0].parameters()).dtype  # noqa: E731
    assert dtype() == torch.float32                              # auto on CPU
    assert dtype(device="cuda") == torch.bfloat16                # auto on GPU: the checkpoint's own
    assert dtype(dtype="bfloat16") == torch.bfloat16
    assert dtype(dtype="float16", device="cuda") == torch.float16
