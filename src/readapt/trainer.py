"""ReadTrainer: transformers.Trainer, saving and resuming a ReadModel as READ.

    from readapt.trainer import ReadTrainer
    trainer = ReadTrainer(model=read_model, args=TrainingArguments(...), train_dataset=...)
    trainer.train()                                   # checkpoint-N/: READ files + optimizer, RNG...
    trainer.train(resume_from_checkpoint=True)        # picks the READ weights back up
    trainer.save_model("out")                         # ReadModel.from_pretrained(backbone, "out")

A plain Trainer treats a model that is not a PreTrainedModel/PeftModel as a bare nn.Module: it
writes the whole state dict, frozen backbone included, as model.safetensors and no
read_config.json. ReadTrainer changes only the three places where Trainer writes or reads model
weights (`_save`, `_load_from_checkpoint`, `_load_best_model`, as transformers does for PEFT) and
keeps the tokenizer (`processing_class`) away from Trainer's own handling (see __init__); optimizer,
scheduler, RNG and trainer state stay Trainer's own. DeepSpeed/FSDP are not supported.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Optional

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import align_special_tokens

from readapt.config import CONFIG_NAME
from readapt.model import ReadModel


class ReadTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        # Trainer.train aligns the tokenizer's special tokens with `model.config`, taking it for a
        # transformers config; a ReadModel's config is its ReadConfig and the tokens are the
        # backbone's. So the tokenizer is kept here (saved with every checkpoint, as Trainer does)
        # and aligned on the backbone, and Trainer itself gets none: its default collator for a
        # tokenizer (padding) is set up here instead.
        arguments = inspect.signature(Trainer.__init__).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        tokenizer = arguments.pop("processing_class", None)
        if arguments.get("data_collator") is None and isinstance(tokenizer, PreTrainedTokenizerBase):
            arguments["data_collator"] = DataCollatorWithPadding(tokenizer)
        super().__init__(**arguments)
        self.read_tokenizer = tokenizer
        if tokenizer is not None:
            align_special_tokens(self._read_model().get_base_model(), tokenizer)

    def _read_model(self, model=None) -> ReadModel:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        if not isinstance(model, ReadModel):
            raise TypeError(f"ReadTrainer trains a readapt ReadModel, got {type(model).__name__}; use "
                            f"transformers.Trainer for other models")
        return model

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._read_model().save_pretrained(output_dir, state_dict=state_dict, metrics=self._last_eval_metrics())
        if self.read_tokenizer is not None:  # as Trainer._save: the tokenizer, the training arguments
            self.read_tokenizer.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not (Path(resume_from_checkpoint) / CONFIG_NAME).is_file():
            raise ValueError(f"{resume_from_checkpoint} holds no {CONFIG_NAME}: it is not a checkpoint ReadTrainer "
                             f"wrote (a plain transformers.Trainer saves the whole model instead)")
        self._read_model(model).load_read_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        self._read_model().load_read_weights(self.state.best_model_checkpoint)

    def _last_eval_metrics(self) -> dict:
        """The latest evaluation's numbers from the log history, for the model card."""
        for entry in reversed(self.state.log_history):
            found = {k: v for k, v in entry.items()
                     if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))}
            if found:
                return found
        return {}
