"""Stop a training run after a given step through the public `Trainer.train(on_step=...)` hook,
as a kill would (its checkpoints written, nothing after)."""


class Interrupted(Exception):
    """Raised by `interrupt_after` in place of a kill."""


def interrupt_after(steps: int):
    def on_step(trainer):
        if trainer.step == steps:
            raise Interrupted

    return on_step
