"""Power-function EMA of a network's parameters (EDM2, Karras et al. 2024, Sec. 3.1 and App. C.1).

A power-function EMA at training time t averages the past parameters theta(tau), tau in [0, t], with the
profile p(tau) = (gamma + 1) / t (tau / t)^gamma. Unlike a classic EMA its width scales with t, so it is
described by the relative standard deviation sigma_rel of p divided by t, independently of the run length.
Post-hoc reconstruction of other profiles from snapshots lives in `phema.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserInputError

# sigma_rel(gamma) rises from 0 at gamma = -1 to its maximum at gamma^2 + 3 gamma + 1 = 0 (where its log
# derivative 1/(g+1) - 2/(g+2) - 1/(g+3) vanishes) and then falls like 1/gamma. We use the falling branch,
# so sigma_rel beyond this maximum (about 0.3003) has no profile. sqrt(1/12) (gamma = 0) is a plain average.
GAMMA_AT_MAX_SIGMA_REL = (math.sqrt(5.0) - 3.0) / 2.0


def gamma_to_sigma_rel(gamma: float) -> float:
    """Relative std (std / t, unitless) of the profile with exponent `gamma` (EDM2 Sec. 3.1).

    sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))); the profile is normalisable only for
    gamma > -1.
    """
    gamma = float(gamma)
    if not (math.isfinite(gamma) and gamma > -1.0):
        raise UserInputError(f"EMA exponent gamma must be a finite number > -1, got {gamma}")
    return math.sqrt((gamma + 1.0) / ((gamma + 2.0) ** 2 * (gamma + 3.0)))


SIGMA_REL_MAX = gamma_to_sigma_rel(GAMMA_AT_MAX_SIGMA_REL)


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """Exponent gamma of the power-function profile whose relative std is `sigma_rel` (unitless).

    Inverts EDM2 Sec. 3.1's sigma_rel formula: squaring it gives the cubic
    gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + (12 - sigma_rel^-2) = 0, whose largest real root is
    the answer. Valid for 0 < sigma_rel <= SIGMA_REL_MAX (about 0.3003); sigma_rel above sqrt(1/12) gives
    -0.382 < gamma < 0, a profile that favours early training.
    """
    s = float(sigma_rel)
    if not (math.isfinite(s) and 0.0 < s <= SIGMA_REL_MAX):
        raise UserInputError(f"EMA sigma_rel must be in (0, {SIGMA_REL_MAX:.4f}], got {sigma_rel}")
    c = s**-2
    coeffs = [1.0, 7.0, 16.0 - c, 12.0 - c]
    # With s in range all three roots are real, so the largest real part is the largest real root; near
    # SIGMA_REL_MAX the two upper roots merge and may come back as a pair with a tiny imaginary part.
    gamma = float(np.max(np.roots(coeffs).real))
    gamma = max(gamma, GAMMA_AT_MAX_SIGMA_REL)  # the wanted root is on the falling branch
    # One Newton step removes np.roots' rounding (eigenvalue solver) for small sigma_rel, where the
    # coefficients span many orders of magnitude; skip it at the double root where the slope vanishes.
    value = np.polyval(coeffs, gamma)
    slope = np.polyval(np.polyder(coeffs), gamma)
    if abs(slope) > 1e-6 * c:
        gamma -= value / slope
    if not gamma > -1.0:  # cannot happen for valid s; a guard against numerical surprises
        raise UserInputError(f"EMA sigma_rel {sigma_rel} gives no valid exponent (gamma = {gamma})")
    return float(gamma)


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside DataParallel / DistributedDataParallel / torch.compile wrappers.

    Unwrapping keeps parameter names free of "module." / "_orig_mod." prefixes, so an EMA (and its
    snapshots) is interchangeable between wrapped and unwrapped training.
    """
    while True:
        inner = getattr(model, "module", None)
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) or (
            # a generic wrapper: its only child is `module` and it has no tensors of its own
            isinstance(inner, nn.Module)
            and list(model.children()) == [inner]
            and not any(True for _ in model.parameters(recurse=False))
            and not any(True for _ in model.buffers(recurse=False))
        ):
            model = inner
            continue
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        return model


class PowerFunctionEMA:
    """One power-function EMA of a model's parameters per requested sigma_rel.

    Floating-point parameters are averaged in at least float32 (half-precision weights would lose the small
    per-step increments); buffers (e.g. running statistics, counters) are not averaged but copied as-is at
    every update. The EMA tensors live on the model's device.
    """

    def __init__(self, model: nn.Module, sigma_rels: Sequence[float] = (0.05, 0.10)) -> None:
        if len(sigma_rels) == 0:
            raise UserInputError("PowerFunctionEMA needs at least one sigma_rel")
        self.sigma_rels: tuple[float, ...] = tuple(float(s) for s in sigma_rels)
        self.gammas: tuple[float, ...] = tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)
        net = _unwrap(model)
        self._param_names = [name for name, _ in net.named_parameters()]
        self._buffer_names = [name for name, _ in net.named_buffers()]
        self._emas: list[dict[str, torch.Tensor]] = [self._initial_copy(net) for _ in self.sigma_rels]

    @staticmethod
    def _initial_copy(net: nn.Module) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, p in net.named_parameters():
            dtype = torch.promote_types(p.dtype, torch.float32) if p.is_floating_point() else p.dtype
            out[name] = p.detach().to(dtype=dtype, copy=True)
        for name, b in net.named_buffers():
            out[name] = b.detach().clone()
        return out

    def __len__(self) -> int:
        return len(self.sigma_rels)

    @torch.no_grad()
    def update(self, model: nn.Module, cur_t: float, delta_t: float) -> None:
        """Fold the model's current parameters into every EMA, after a training step.

        cur_t: training time after the step (images or iterations, any unit as long as it is consistent);
        delta_t: the step's increment in the same unit. The update is theta_ema <- beta theta_ema +
        (1 - beta) theta with beta = (1 - delta_t / cur_t)^(gamma + 1) (EDM2 App. C.1). That telescopes to
        weights (t_k / t)^(gamma+1) - (t_{k-1} / t)^(gamma+1) for step k, i.e. exactly the continuous
        profile integrated over the step, for any sequence of increments; beta = 0 at the first step.
        """
        cur_t, delta_t = float(cur_t), float(delta_t)
        if not (math.isfinite(cur_t) and 0.0 < delta_t <= cur_t * (1.0 + 1e-12)):
            raise ValueError(f"EMA update needs 0 < delta_t <= cur_t, got cur_t={cur_t}, delta_t={delta_t}")
        net = _unwrap(model)
        params = dict(net.named_parameters())
        buffers = dict(net.named_buffers())
        if list(params) != self._param_names or list(buffers) != self._buffer_names:
            raise ValueError("EMA update: the model's parameter/buffer names differ from the tracked ones")
        ratio = max(0.0, 1.0 - delta_t / cur_t)
        for gamma, ema in zip(self.gammas, self._emas, strict=True):
            weight = 1.0 - ratio ** (gamma + 1.0)  # 1 - beta
            for name, p in params.items():
                if p.is_floating_point():
                    ema[name].lerp_(p.detach().to(ema[name].dtype), weight)
                else:
                    ema[name].copy_(p.detach())
            for name, b in buffers.items():
                ema[name].copy_(b.detach())

    def ema_tensors(self, index: int) -> dict[str, torch.Tensor]:
        """The EMA for `sigma_rels[index]`: parameter and buffer name -> tensor (live; clone to keep)."""
        return self._emas[index]

    @torch.no_grad()
    def copy_to(self, model: nn.Module, index: int) -> None:
        """Overwrite the model's parameters and buffers with the EMA for `sigma_rels[index]`."""
        net = _unwrap(model)
        ema = self._emas[index]
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if name not in ema or ema[name].shape != t.shape:
                raise UserInputError(f"EMA has no tensor {name!r} of shape {tuple(t.shape)} for this model")
            t.copy_(ema[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors (safetensors-ready): "sigma_rels" (float64) and "ema{i}.{name}" (live references)."""
        out = {"sigma_rels": torch.tensor(self.sigma_rels, dtype=torch.float64)}
        for i, ema in enumerate(self._emas):
            out.update({f"ema{i}.{name}": t for name, t in ema.items()})
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from `state_dict()` output (e.g. read back from a checkpoint); mismatch: UserInputError."""
        stored = state.get("sigma_rels")
        if stored is None or stored.numel() != len(self.sigma_rels):
            raise UserInputError("EMA state does not match: missing or different number of sigma_rels")
        if not np.allclose(stored.double().cpu().numpy(), self.sigma_rels, rtol=1e-9, atol=0.0):
            raise UserInputError(
                f"EMA state was tracked for sigma_rels {stored.tolist()}, not {list(self.sigma_rels)}"
            )
        expected = {f"ema{i}.{name}": t for i, ema in enumerate(self._emas) for name, t in ema.items()}
        extra = sorted(set(state) - set(expected) - {"sigma_rels"})
        missing = sorted(set(expected) - set(state))
        if extra or missing:
            raise UserInputError(
                f"EMA state does not match the model: missing {missing[:3]}, unexpected {extra[:3]}"
            )
        for key, dst in expected.items():
            if state[key].shape != dst.shape:
                raise UserInputError(
                    f"EMA state {key!r} has shape {tuple(state[key].shape)}, model has {tuple(dst.shape)}"
                )
        for key, dst in expected.items():
            dst.copy_(state[key])
