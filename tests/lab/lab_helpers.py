"""Helpers of the lab tests: a hand-made run record."""

from ermlab.lab import results


def make_record(problem="relu4", optimizer="sgd", lr=0.01, seed=0, epochs=2, accuracy=True,
                **extra):
    record = {"format": results.FORMAT, "testproblem": problem, "optimizer_name": optimizer,
              "optimizer_hyperparams": {"lr": lr}, "random_seed": seed, "batch_size": 32,
              "weight_decay": 0.0, "num_epochs": epochs,
              "train_losses": [2.0 - 0.5 * e for e in range(epochs + 1)],
              "valid_losses": [2.1 - 0.5 * e for e in range(epochs + 1)],
              "test_losses": [2.2 - 0.5 * e for e in range(epochs + 1)],
              "train_times": [0.1 * e for e in range(epochs + 1)], "wall_time": 1.0,
              "minibatch_train_losses": [1.0] * (3 * epochs), "diverged": False,
              "problem": {"name": problem}}
    if accuracy:
        for split in ("train", "valid", "test"):
            record[f"{split}_accuracies"] = [0.1 + 0.2 * e for e in range(epochs + 1)]
    record.update(extra)
    return record
