"""nnU-Net v2's trainer with a wall-clock budget, the peer's trainer in ``benchmarks/nnunet_peer.py``.

It runs inside nnU-Net's own environment (found through ``nnUNet_extTrainer``), never in medfm's.
nnU-Net's stock short trainers (``nnUNetTrainer_5epochs``…) fix the number of 250-step epochs,
which on a CPU does not end within minutes; ``medfm train seg`` instead fits its polynomial
learning-rate decay to a wall-time budget. This trainer gives nnU-Net the same terms and changes
nothing else (plan, network, loss, augmentation, sampling, optimiser):

- the budget (``MEDFM_BENCH_BUDGET_S`` seconds) starts when training starts, after nnU-Net's own
  set-up, and stops training at the first step that spends it, mid-epoch if need be;
- nnU-Net's poly decay, ``(1 - t)^0.9``, runs over the elapsed fraction of the budget instead of
  over epochs, set at each epoch's start as nnU-Net sets it;
- epochs of ``MEDFM_BENCH_EPOCH_STEPS`` steps and validation steps (the benchmark gives 25 and 5;
  nnU-Net: 250 and 50), so that its per-epoch pseudo-Dice, learning rate and checkpoints follow
  the budget at a finer grain;
- ``checkpoint_final.pth`` is written when the budget is spent; nnU-Net's end-of-training
  validation (which predicts its own monitored training images) is skipped: the benchmark
  scores the held-out images itself.
"""

import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class PolyOverBudget:
    """nnU-Net's ``PolyLRScheduler`` rule with the budget's elapsed fraction in place of epoch / epochs."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, elapsed_fraction):
        self.optimizer, self.initial_lr, self.elapsed_fraction = optimizer, initial_lr, elapsed_fraction

    def step(self, current_step=None):
        learning_rate = self.initial_lr * max(0.0, 1.0 - self.elapsed_fraction()) ** 0.9
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate


class nnUNetTrainer_WallBudget(nnUNetTrainer):  # noqa: N801 - nnU-Net finds trainers by this naming
    # nnU-Net records its trainers' constructor arguments by name, so the signature is spelt out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ["MEDFM_BENCH_BUDGET_S"])
        self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = (
            int(n) for n in os.environ["MEDFM_BENCH_EPOCH_STEPS"].split(","))
        self.training_started = None

    def elapsed_fraction(self) -> float:
        return 0.0 if self.training_started is None else (time.monotonic() - self.training_started) / self.budget_s

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        return optimizer, PolyOverBudget(optimizer, self.initial_lr, self.elapsed_fraction)

    def run_training(self):
        self.on_train_start()
        self.training_started = time.monotonic()
        while self.elapsed_fraction() < 1.0:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                if self.elapsed_fraction() >= 1.0:
                    break
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("End-of-training validation skipped: the benchmark scores the held-out images.")
