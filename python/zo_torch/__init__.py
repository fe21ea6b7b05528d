# SPDX-License-Identifier: Apache-2.0
"""zo's zeroth-order optimizers (MeZO, LOZO, LOZO-M, LoHO) for PyTorch models, torch.optim-style.

    opt = zo_torch.MeZO(model.named_parameters(), lr=1e-6, eps=1e-3, seed=0)
    loss = opt.step(lambda: loss_fn(model(x), y))

The parameters are perturbed and updated in place, in their own memory (CPU float32, bfloat16
or float16 tensors, all of one dtype; LoHO float32 only; a parameter with requires_grad=False is
left out). Over bfloat16 and float16 parameters zo computes in float, restores exactly and rounds
each update stochastically (docs/precision.md). The closure returns the loss tensor and is run
under torch.no_grad() for the zeroth-order evaluations; LoHO also runs it once with autograd for
its first-order layers. A run is the C++ optimizer's run bit for bit (docs/torch.md).

Every class takes restore="exact" (zo's default: a snapshot of the zeroth-order parameters, one
extra copy of them in memory, so perturbations leave no rounding residue) or "arithmetic" (no
memory beyond the parameters: a perturbation is undone by adding its negative, as the MeZO
reference does).
"""

import torch  # noqa: F401  (libtorch and the Tensor type first: the extension links them)

from . import _zo_torch

__all__ = ["MeZO", "LOZO", "LOZOM", "LOZO_M", "LoHO"]

# Name components that carry a layer index after them ("model.layers.3.", "encoder.layer.3.",
# "transformer.h.3."): LoHO's first-order layers are the deepest ones found this way.
DEFAULT_LAYER_PREFIXES = ("layers", "layer", "h")


def _named(params):
    """(name, tensor) pairs from named_parameters(), or names made up for bare tensors."""
    out = []
    for index, item in enumerate(params):
        if isinstance(item, tuple):
            out.append((str(item[0]), item[1]))
        else:
            out.append((str(index), item))
    return out


# The extension's class for each dtype of the trained parameters. Any other dtype, or a mix,
# goes to the float32 class, which refuses it naming the parameter.
_SUFFIXES = {torch.float32: "", torch.bfloat16: "_bf16", torch.float16: "_f16"}


def _core_class(name, named):
    dtypes = {tensor.dtype for _, tensor in named if tensor is not None and tensor.requires_grad}
    suffix = _SUFFIXES.get(dtypes.pop(), "") if len(dtypes) == 1 else ""
    return getattr(_zo_torch, name + suffix)


class _Optimizer:
    def __init__(self, core, hyperparameters, trajectory):
        self._core = core
        self.defaults = dict(hyperparameters)
        if trajectory is not None:
            description = type(self).__name__ + " " + " ".join(
                f"{key}={value}" for key, value in sorted(self.defaults.items())
            )
            self._core.log_trajectory(str(trajectory), description)

    def step(self, closure):
        """One step; returns the loss of the step (the estimator's) as a float64 tensor."""
        return self._core.step(closure)

    def zero_grad(self, set_to_none=True):
        """Nothing to clear: the zeroth-order steps use no .grad (LoHO restores what it sets)."""

    def state_dict(self):
        """The optimizer's state: zo's own state bytes (step index, momentum, Adam moments)."""
        return {"zo_state": self._core.state(), "defaults": dict(self.defaults)}

    def load_state_dict(self, state_dict):
        self._core.load_state(bytes(state_dict["zo_state"]))

    def finish_trajectory(self):
        """Ends the trajectory log (writes its end record)."""
        self._core.finish_trajectory()

    def last_report(self):
        return self._core.last_report()

    @property
    def step_count(self):
        return self._core.step_count()

    @property
    def parameter_names(self):
        return self._core.names()

    @property
    def left_out(self):
        return self._core.left_out()


class MeZO(_Optimizer):
    def __init__(self, params, lr=1e-6, eps=1e-3, weight_decay=0.0, seed=0,
                 layer_prefixes=DEFAULT_LAYER_PREFIXES, trajectory=None, restore="exact"):
        named = _named(params)
        core = _core_class("MeZO", named)(named, list(layer_prefixes), lr, eps, weight_decay,
                                          seed, restore)
        super().__init__(core, dict(lr=lr, eps=eps, weight_decay=weight_decay, seed=seed,
                                    restore=restore), trajectory)


class LOZO(_Optimizer):
    def __init__(self, params, lr=1e-6, eps=1e-3, rank=2, interval=50, weight_decay=0.0, seed=0,
                 layer_prefixes=DEFAULT_LAYER_PREFIXES, trajectory=None, restore="exact"):
        named = _named(params)
        core = _core_class("LOZO", named)(named, list(layer_prefixes), lr, eps, rank, interval,
                                          weight_decay, seed, restore)
        super().__init__(core, dict(lr=lr, eps=eps, rank=rank, interval=interval,
                                    weight_decay=weight_decay, seed=seed, restore=restore),
                         trajectory)


class LOZOM(_Optimizer):
    def __init__(self, params, lr=1e-6, eps=1e-3, rank=2, interval=50, beta=0.9,
                 weight_decay=0.0, seed=0, layer_prefixes=DEFAULT_LAYER_PREFIXES,
                 trajectory=None, restore="exact"):
        named = _named(params)
        core = _core_class("LOZOM", named)(named, list(layer_prefixes), lr, eps, rank, interval,
                                           beta, weight_decay, seed, restore)
        super().__init__(core, dict(lr=lr, eps=eps, rank=rank, interval=interval, beta=beta,
                                    weight_decay=weight_decay, seed=seed, restore=restore),
                         trajectory)


LOZO_M = LOZOM


class LoHO(_Optimizer):
    """MeZO on the shallow layers, Adam (with gradient-norm clipping) on the deepest
    first_order_layers layers, whose gradients autograd writes straight into zo's buffers."""

    def __init__(self, params, lr=1e-6, eps=1e-3, weight_decay=0.0, fo_lr=1e-5,
                 first_order_layers=1, betas=(0.9, 0.999), adam_eps=1e-8, fo_weight_decay=0.0,
                 clip_norm=1.0, seed=0, layer_prefixes=DEFAULT_LAYER_PREFIXES, trajectory=None,
                 restore="exact"):
        core = _zo_torch.LoHO(_named(params), list(layer_prefixes), lr, eps, weight_decay, fo_lr,
                              first_order_layers, tuple(betas), adam_eps, fo_weight_decay,
                              clip_norm, seed, restore)
        super().__init__(core, dict(lr=lr, eps=eps, weight_decay=weight_decay, fo_lr=fo_lr,
                                    first_order_layers=first_order_layers, betas=tuple(betas),
                                    adam_eps=adam_eps, fo_weight_decay=fo_weight_decay,
                                    clip_norm=clip_norm, seed=seed, restore=restore),
                         trajectory)
