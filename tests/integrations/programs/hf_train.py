"""A tiny Hugging Face Trainer run (2-layer GPT-2 from a config, synthetic tokens, CPU) with
UnbrokenTrainerCallback; writes its final weights (all parameters, flattened, float32) to OUT.

Usage: hf_train.py OUT MAX_STEPS
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

import unbroken
from unbroken.integrations.transformers import UnbrokenTrainerCallback, resume_path

SEQ, VOCAB = 8, 32


class Tokens(torch.utils.data.Dataset):
    """Fixed random token sequences (labels = inputs, the model shifts them)."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.05)  # the "training"


def main(out, max_steps):
    out = Path(out)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)  # dropout 0.1 stays
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=str(out.parent / "hf-out"), max_steps=max_steps, per_device_train_batch_size=4,
        learning_rate=1e-2, save_strategy="steps", save_steps=3, logging_steps=2, eval_strategy="steps",
        eval_steps=6, report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    args.device  # under torchrun this starts torch.distributed, which unbroken.init then joins
    with unbroken.init(name="hf", keep=unbroken.keep_latest(3)) as run:
        trainer = Trainer(model=model, args=args, train_dataset=Tokens(40, 1), eval_dataset=Tokens(8, 2),
                          callbacks=[UnbrokenTrainerCallback(run), Slow()])
        trainer.train(resume_from_checkpoint=resume_path(run, args.output_dir))
        if not run.preempted and run.distributed.is_chief:
            weights = [p.detach().float().numpy().ravel() for p in model.parameters()]
            np.save(out, np.concatenate(weights))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
