"""Reconstruction strategies: what is refit after (or before) units are removed.

- ``none``: the sliced dense weights stay.
- ``bias``: FLAP's bias compensation, the removed input channels' mean contribution folded
  into o_proj / down_proj biases (`prune.compensation_bias`).
- ``refit`` (ours): after slicing, o_proj and down_proj are refit by least squares so the
  residual stream after them matches the dense model's (``target="block"``) or the dense
  module output (``"module"``), ridge-damped toward the dense weights.
- ``paper`` (arXiv 2407.19126 Sec. 3.3, Algorithms 1, 3, 4): *pre-pruning* recovery, module
  by module: the first level (q, k, v; gate, up) is refit from the pruned stream's input to
  the dense first-level outputs, then the second level (o; down) on the input the refitted
  first level produces; the module is then scored and pruned without a further refit.

This module holds the shared numerics: normal equations accumulated in float64 and the
damped solve. The engine (`engine.py`) decides which pairs feed them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gram(x: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """x^T x of a (rows, d) matrix, in x's dtype. It is symmetric and torch has no symmetric
    rank-k product, so for a wide x the columns are cut into `blocks` strips and only each
    strip's products with itself and the strips after it are multiplied (5/8 of the work for
    four strips; about a fifth less time on 2 CPU cores at d = 576 and 1536); the lower
    blocks are their transposes."""
    d = x.shape[1]
    if d < 512:
        return x.T @ x
    edges = [i * d // blocks for i in range(blocks + 1)]
    out = torch.empty(d, d, dtype=x.dtype, device=x.device)
    for start, end in zip(edges[:-1], edges[1:]):
        strip = x[:, start:end].T @ x[:, start:]  # (end - start, d - start)
        out[start:end, start:] = strip
        out[end:, start:end] = strip[:, end - start:].T
    return out


def add_gram(total: torch.Tensor | None, x: torch.Tensor, product_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`total` (float64, or None for zeros) plus x^T x of the rows of x, the product in
    `product_dtype` (see `LinearRefit`). The product is widened before it is added: the same
    float64 sums as adding the float32 matrix itself (widening is exact), twice as fast."""
    x = x.reshape(-1, x.shape[-1]).to(product_dtype)
    product = gram(x).to(torch.float64)
    return product if total is None else total.add_(product)


@dataclass
class LinearRefit:
    """Normal equations of one linear map, accumulated in float64: X^X^^T, Y X^^T and ||Y||^2.

    Each batch's products are computed in `product_dtype` and added to float64 sums. float32
    products (one batch: about a thousand tokens) are twice as fast on a CPU as float64 ones;
    on the embedded model's activations (massive ones up to 2400 included) the sums differ by
    at most 3e-7 relative and the damped solutions by at most 1e-5 relative
    (scripts/precision_study.py, results/bench/precision.md). Pass float64 for exact products."""

    xx: torch.Tensor | None = None
    yx: torch.Tensor | None = None
    yy: torch.Tensor | None = None  # per output row
    count: int = 0
    product_dtype: torch.dtype = torch.float32

    def add(self, x_hat: torch.Tensor, y: torch.Tensor) -> None:
        x_hat = x_hat.reshape(-1, x_hat.shape[-1]).to(self.product_dtype)
        y = y.reshape(-1, y.shape[-1]).to(self.product_dtype)
        if self.xx is None:
            self.yx = torch.zeros(y.shape[1], x_hat.shape[1], dtype=torch.float64, device=x_hat.device)
            self.yy = torch.zeros(y.shape[1], dtype=torch.float64, device=x_hat.device)
        self.xx = add_gram(self.xx, x_hat, self.product_dtype)
        self.yx.add_((y.T @ x_hat).to(torch.float64))
        self.yy += y.pow(2).sum(0, dtype=torch.float64)
        self.count += x_hat.shape[0]

    def restricted(self, columns: torch.Tensor) -> "LinearRefit":
        """The same problem when only the input channels `columns` remain."""
        columns = columns.to(self.xx.device)
        return LinearRefit(self.xx[columns][:, columns], self.yx[:, columns], self.yy, self.count, self.product_dtype)

    def rows(self, start: int, end: int) -> "LinearRefit":
        """The sub-problem of output rows [start, end) (q, k and v share one input)."""
        return LinearRefit(self.xx, self.yx[start:end], self.yy[start:end], self.count, self.product_dtype)

    def error(self, weight: torch.Tensor) -> float:
        """Mean squared reconstruction error ||W X^ - Y||^2 / tokens, from the accumulated sums."""
        w = weight.to(self.xx.device, torch.float64)
        total = (w @ self.xx * w).sum() - 2 * (w * self.yx).sum() + self.yy.sum()
        return float(total) / max(self.count, 1)


def _damped_system(refit: LinearRefit, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(X^X^^T + diag(lambda), lambda) with lambda_j = damp * (X^X^^T)_jj (see `ridge_toward`)."""
    diag = refit.xx.diagonal()
    lam = damp * diag + 1e-12 * diag.max().clamp_min(1e-30)  # floor keeps dead channels solvable
    lhs = refit.xx.clone()
    lhs.diagonal().add_(lam)  # = xx + diag(lam), without an (in x in) diagonal matrix
    return lhs, lam


def _solve_spd(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """lhs^-1 rhs for a symmetric positive definite lhs: a Cholesky factorisation (half the
    work of LU), with LU as the fallback when rounding leaves lhs not numerically definite."""
    factor, info = torch.linalg.cholesky_ex(lhs)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    return torch.linalg.solve(lhs, rhs)


def ridge_toward(weight0: torch.Tensor, refit: LinearRefit, damp: float) -> torch.Tensor:
    """argmin_W ||W X^ - Y||^2 + sum_j lambda_j ||W[:, j] - W0[:, j]||^2, closed form.

    lambda_j = damp * (X^X^^T)_jj: damping per input channel, relative to that channel's
    own energy, toward the dense weights. A single scalar from the mean of diag(X X^T)
    would shrink every ordinary channel of a model with massive activations toward zero
    (DESIGN.md, "Numerics"). With damp = 0 this is ordinary least squares.
    """
    w0 = weight0.to(refit.xx.device, torch.float64)
    return _ridge_solution(w0, refit, damp)[0].to(weight0.device, weight0.dtype)


def _ridge_solution(w0: torch.Tensor, refit: LinearRefit, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 solution of `ridge_toward` for float64 `w0`, and the damping lambda."""
    lhs, lam = _damped_system(refit, damp)
    return _solve_spd(lhs, (refit.yx + w0 * lam[None, :]).T).T, lam


def _solution_error(refit: LinearRefit, w0: torch.Tensor, solution: torch.Tensor, lam: torch.Tensor) -> float:
    """`LinearRefit.error` of a ridge solution without its (out x in x in) product: the solution
    W satisfies W (X^X^^T + Lambda) = Y X^^T + W0 Lambda, so
    tr(W X^X^^T W^T) = <Y X^^T + (W0 - W) Lambda, W>."""
    quadratic = ((refit.yx + (w0 - solution) * lam[None, :]) * solution).sum()
    return float(quadratic - 2 * (solution * refit.yx).sum() + refit.yy.sum()) / max(refit.count, 1)


def refit_linear(linear: torch.nn.Linear, refit: LinearRefit, damp: float) -> dict[str, float]:
    """Replace `linear`'s weight by the damped least-squares solution; its error report (see
    `refit_shared_input`)."""
    return refit_shared_input([linear], refit, damp)[0]


def refit_shared_input(linears: list[torch.nn.Linear], refit: LinearRefit, damp: float) -> list[dict[str, float]]:
    """Refit maps that read one input (q, k, v; gate, up), whose targets were stacked in
    `refit`'s output rows in this order. The damped system depends on the input only, so one
    X^X^^T and one factorisation serve them all; each output row is its own problem.

    Per map: ``mse``, the mean squared error ||W X^ - Y||^2 / tokens of the float64 solution
    (before its cast to the weight's dtype), read from the normal equations, and ``relative``,
    that over ||Y||^2 / tokens. The error of the weights before the refit is not computed: it
    costs an (out x in x in) product per map, several per cent of a recovery; a test checks
    that the refit never does worse (`LinearRefit.error`)."""
    w0 = torch.cat([linear.weight.data.to(refit.xx.device, torch.float64) for linear in linears])
    if tuple(w0.shape) != (refit.yx.shape[0], refit.xx.shape[0]):
        raise ValueError(f"weights {tuple(w0.shape)} do not match the normal equations {tuple(refit.yx.shape)}")
    solution, lam = _ridge_solution(w0, refit, damp)
    reports, start = [], 0
    for linear in linears:
        end = start + linear.out_features
        part = refit.rows(start, end)
        mse = max(_solution_error(part, w0[start:end], solution[start:end], lam), 0.0)  # rounding can dip below 0
        energy = float(part.yy.sum()) / max(part.count, 1)
        reports.append({"mse": mse, "relative": mse / energy if energy > 0 else 0.0})
        linear.weight.data = solution[start:end].to(linear.weight.device, linear.weight.dtype)
        start = end
    return reports
