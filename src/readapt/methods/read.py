"""READ as a method of the common interface (the model itself lives in readapt.model)."""

from __future__ import annotations

from readapt.config import ReadConfig
from readapt.methods import HeadSpec, Method
from readapt.model import get_read_model

# options a run may set -> ReadConfig fields
READ_OPTIONS = ("rnn_type", "rnn_dim", "layers", "layer_stride", "aggregation", "input_scale", "output_scale",
                "mixing", "joiner", "bidirectional")


def build(backbone, head: HeadSpec | None, options: dict):
    fields = {k: options[k] for k in READ_OPTIONS if options.get(k) is not None}
    if head is None:
        fields.pop("mixing", None)  # LM tasks: token mixing is for classification only
        task_type = "SEQ_2_SEQ_LM" if hasattr(backbone, "decoder") and hasattr(backbone, "encoder") else "CAUSAL_LM"
        return get_read_model(backbone, ReadConfig(task_type=task_type, **fields))
    config = ReadConfig(task_type="SEQ_CLS", num_labels=head.num_labels, pooling=head.pooling,
                        head_dropout=head.dropout, **fields)
    return get_read_model(backbone, config)


METHOD = Method(name="read", help="READ: recurrent side network over the frozen backbone's layers",
                default_lr=3e-3, build=build, backbone_backprop=False, pair_encoding="separate", side_network=True)
