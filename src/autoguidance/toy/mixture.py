"""The paper's 2D toy distribution: two classes of fractal trees of anisotropic Gaussians (App. C.1).

Every quantity is exact: a Gaussian mixture diffused to noise level sigma is again a Gaussian mixture
with covariances Sigma_k + sigma^2 I, so density, score and samples at any sigma are closed-form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NUM_DEPTHS = 7  # branch depths 0..6: 127 branches per class
COMPONENTS_PER_BRANCH = 8
ORIGIN = (0.0030, 0.0325)
SCALE = (1.3136, 1.3844)
ROOT_ANGLES = (math.pi / 4, 5 * math.pi / 4)  # class A (0), class B (1)
CLASS_NAMES = ("A", "B")
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class MixtureSpec:
    """All components of both classes, in construction order (float64 numpy arrays)."""

    means: np.ndarray  # (K, 2)
    covs: np.ndarray  # (K, 2, 2)
    weights: np.ndarray  # (K,) unnormalised: branch length * 0.5^depth
    labels: np.ndarray  # (K,) class 0 (A) or 1 (B)
    branches: np.ndarray  # (K,) branch index within its class, 0..126 in construction order
    depths: np.ndarray  # (K,) branch depth 0..6


def build_spec() -> MixtureSpec:
    """Build both trees with one RandomState(2): class A first (root angle pi/4), then class B."""
    rnd = np.random.RandomState(2)
    scale = np.array(SCALE)
    rows: list[tuple] = []

    def branch(p: np.ndarray, angle: float, depth: int, label: int, counter: list[int]) -> None:
        u = np.array([math.cos(angle), math.sin(angle)])
        length = 0.292 * 0.8**depth * (1 + 0.2 * rnd.randn())
        thickness = 0.2 * 0.8**depth / length
        s = 0.06 * length * scale
        # Long along u, thin across it (relative width `thickness`), then stretched per axis.
        cov = (np.outer(u, u) + thickness**2 * (np.eye(2) - np.outer(u, u))) * np.outer(s, s)
        index = counter[0]
        counter[0] += 1
        for t in np.linspace(0.07, 0.93, COMPONENTS_PER_BRANCH):
            rows.append(((p + u * length * t) * scale, cov, length * 0.5**depth, label, index, depth))
        # Paper App. C.1, in the reference draw order: each child's angle is drawn just before that child
        # is called (depth first), and a call past the last depth returns without drawing. So a branch at
        # the last depth still consumes both of its children's angle draws, though neither is built.
        end = p + u * length
        for sign in (1, -1):
            child_angle = angle + sign * 0.7**depth * (1 + 0.2 * rnd.randn())
            if depth + 1 < NUM_DEPTHS:
                branch(end, child_angle, depth + 1, label, counter)

    for label, root_angle in enumerate(ROOT_ANGLES):
        branch(np.array(ORIGIN), root_angle, 0, label, [0])
    means, covs, weights, labels, branches, depths = (np.array(col) for col in zip(*rows, strict=True))
    return MixtureSpec(means, covs, weights, labels, branches, depths)


class ToyMixture:
    """A heat-diffused Gaussian mixture in 2D: exact log p(x; sigma), score, denoiser and samples.

    `classes` selects the components: (0,) class A, (1,) class B, (0, 1) both (unconditional). Weights
    are normalised within the selection. Computations run in the dtype of the input (float32 is exact to
    float32 precision: the log-sum-exp is stabilised per sample).
    """

    def __init__(self, classes: tuple[int, ...] = (0,), device: str | torch.device = "cpu", spec=None):
        spec = spec or build_spec()
        keep = np.isin(spec.labels, classes)
        if not keep.any():
            raise ValueError(f"no components for classes {classes}")
        self.classes = tuple(classes)
        self.device = torch.device(device)
        w = spec.weights[keep]
        self.num_components = int(keep.sum())
        self.branch = torch.as_tensor(spec.branches[keep] + 127 * spec.labels[keep], device=self.device)
        self.depth = torch.as_tensor(spec.depths[keep], device=self.device)
        # Eigenbasis of each covariance: Sigma_k + sigma^2 I shares it, with eigenvalues lambda + sigma^2,
        # so all per-sigma work is elementwise and the projections are one matrix product.
        lam, vec = np.linalg.eigh(spec.covs[keep])  # (K, 2), (K, 2, 2) columns = eigenvectors
        self._f64 = {
            "means": torch.as_tensor(spec.means[keep]),
            "covs": torch.as_tensor(spec.covs[keep]),
            "log_weights": torch.as_tensor(np.log(w / w.sum())),
            "weights": torch.as_tensor(w / w.sum()),
            "lam": torch.as_tensor(np.concatenate([lam[:, 0], lam[:, 1]])),  # (2K,)
            # E (2, 2K): columns e1_k then e2_k; offset (2K,) = mu_k . e_k.
            "basis": torch.as_tensor(np.concatenate([vec[:, :, 0], vec[:, :, 1]]).T.copy()),
            "offset": torch.as_tensor(
                np.concatenate([np.einsum("ki,ki->k", spec.means[keep], vec[:, :, j]) for j in (0, 1)])
            ),
            "chol": torch.as_tensor(np.linalg.cholesky(spec.covs[keep])),
        }
        # The same eigen-decomposition laid out for the fused CPU kernel (toy/kernel.py).
        args64 = tuple(
            np.ascontiguousarray(a)
            for a in (
                vec[:, :, 0],
                vec[:, :, 1],
                self._f64["offset"][: self.num_components].numpy(),
                self._f64["offset"][self.num_components :].numpy(),
                lam[:, 0],
                lam[:, 1],
                self._f64["log_weights"].numpy(),
            )
        )
        self._kernel_args = {np.float64: args64, np.float32: tuple(a.astype(np.float32) for a in args64)}
        self._cache: dict[torch.dtype, dict[str, torch.Tensor]] = {}

    def _t(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if dtype not in self._cache:
            self._cache[dtype] = {k: v.to(self.device, dtype) for k, v in self._f64.items()}
        return self._cache[dtype]

    @property
    def means(self) -> torch.Tensor:
        return self._f64["means"]

    @property
    def covs(self) -> torch.Tensor:
        return self._f64["covs"]

    @property
    def weights(self) -> torch.Tensor:
        return self._f64["weights"]

    # ---- core: per-component log-likelihoods in the eigenbasis --------------------------------------
    def _components(self, x: torch.Tensor, sigma: torch.Tensor | float):
        """Returns (logits (B, K), q (B, 2K)) with logits_k = log w_k + log N(x; mu_k, Sigma_k + s^2 I)
        and q = (projection onto e_k) / (lambda_k + s^2), the pieces of the score."""
        t = self._t(x.dtype)
        k = self.num_components
        sig2 = torch.as_tensor(sigma, dtype=x.dtype, device=x.device) ** 2
        var = t["lam"] + sig2.reshape(-1, 1)  # (B or 1, 2K)
        proj = torch.addmm(-t["offset"], x, t["basis"])  # (B, 2K): (x - mu_k) . e_k
        q = proj / var
        quad = proj.mul_(q)  # in place: proj is not needed again
        quad = quad[:, :k] + quad[:, k:]
        logdet = torch.log(var[:, :k] * var[:, k:])
        logits = t["log_weights"] - 0.5 * (quad + logdet) - LOG_2PI
        return logits, q

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """log p(x; sigma) for x (B, 2); sigma a scalar or (B,). Returns (B,). Differentiable."""
        if self._use_kernel(x):
            return self._kernel_log_prob_and_score(x, sigma)[0]
        logits, _ = self._components(x, sigma)
        return torch.logsumexp(logits, dim=1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """grad_x log p(x; sigma) = -sum_k r_k (Sigma_k + s^2 I)^-1 (x - mu_k), r the responsibilities."""
        return self.log_prob_and_score(x, sigma)[1]

    def log_prob_and_score(self, x: torch.Tensor, sigma: torch.Tensor | float):
        """(log p(x; sigma) (B,), score (B, 2)). On the CPU without autograd, the fused kernel."""
        if self._use_kernel(x):
            return self._kernel_log_prob_and_score(x, sigma)
        return self._torch_log_prob_and_score(x, sigma)

    @staticmethod
    def _use_kernel(x: torch.Tensor) -> bool:
        """The fused kernel serves CPU inputs that need no autograd; the tensor-op path the rest."""
        return x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad)

    def _kernel_log_prob_and_score(self, x: torch.Tensor, sigma: torch.Tensor | float, best: bool = False):
        from .kernel import mixture_logp_score

        dt = np.float32 if x.dtype == torch.float32 else np.float64
        args = self._kernel_args[dt]
        xn = np.ascontiguousarray(x.detach().numpy(), dtype=dt)
        s2 = np.broadcast_to(
            torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().numpy() ** 2, (len(xn),)
        )
        s2 = s2.astype(dt)
        logp = np.empty(len(xn), dtype=dt)
        score = np.empty((len(xn), 2), dtype=dt)
        argmax = np.empty(len(xn), dtype=np.int64)
        mixture_logp_score(xn, np.ascontiguousarray(s2), *args, logp, score, argmax)
        out = torch.from_numpy(logp).to(x.dtype), torch.from_numpy(score).to(x.dtype)
        return (*out, torch.from_numpy(argmax)) if best else out

    def _torch_log_prob_and_score(self, x: torch.Tensor, sigma: torch.Tensor | float):
        k = self.num_components
        logits, q = self._components(x, sigma)
        logp = torch.logsumexp(logits, dim=1)
        r = torch.exp(logits - logp[:, None])  # responsibilities (B, K)
        rq = (q.view(-1, 2, k) * r[:, None, :]).view(-1, 2 * k)
        return logp, -(rq @ self._t(x.dtype)["basis"].t())

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The exact denoiser E[y | x] = x + sigma^2 score (a `Denoiser`; cond is ignored)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        s2 = sigma.reshape(-1, 1) ** 2 if sigma.ndim else sigma**2
        return x + s2 * self.score(x, sigma)

    __call__ = denoise

    def most_responsible(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Index (B,) of the component with the largest posterior probability."""
        if x.device.type == "cpu":  # no gradient flows through an argmax: the kernel always applies
            return self._kernel_log_prob_and_score(x.detach(), sigma, best=True)[2]
        return self._components(x, sigma)[0].argmax(dim=1)

    def sample_seeded(self, streams, sigma: float = 0.0, dtype=torch.float32) -> torch.Tensor:
        """One exact sample of p(x; sigma) per seed stream (batch-independent): per sample, a uniform that
        picks the component by inverse CDF, then the component's normal draw, then the diffusion noise."""
        u = streams.rand((), dtype=torch.float64)
        cdf = torch.cumsum(self.weights, 0)
        comp = torch.searchsorted(cdf, u * cdf[-1]).clamp_(max=self.num_components - 1)
        y = self.means[comp] + torch.einsum(
            "nij,nj->ni", self._f64["chol"][comp], streams.randn((2,), dtype=torch.float64)
        )
        if sigma > 0:
            y = y + sigma * streams.randn((2,), dtype=torch.float64)
        return y.to(self.device, dtype)

    def component_masses(self, groups: torch.Tensor) -> torch.Tensor:
        """Total normalised weight per group id (e.g. per branch): (groups.max() + 1,)."""
        return torch.zeros(int(groups.max()) + 1, dtype=torch.float64).index_add_(
            0, groups.cpu(), self.weights
        )

    def sample(
        self, n: int, sigma: float = 0.0, generator: torch.Generator | None = None, dtype=torch.float32
    ) -> torch.Tensor:
        """n exact samples of p(x; sigma): pick a component by weight, draw from it, add N(0, sigma^2 I).
        Draws on the CPU from `generator` (reproducible), returns on this mixture's device."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        y = self.means[comp] + torch.einsum("nij,nj->ni", self._f64["chol"][comp], z)
        if sigma > 0:
            y = y + sigma * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return y.to(self.device, dtype)
