"""What every benchmark records beside its numbers: the machine it ran on (shared with `dediffusion evaluate`)."""

from dediffusion.eval.report import machine_info as machine

__all__ = ["machine"]
