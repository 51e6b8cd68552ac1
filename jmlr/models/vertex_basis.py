"""A training-time low-rank parametrisation of the JMLR head's vertex outputs.

The head's ``fc`` maps F features to ``5 N`` outputs: ``3 N`` vertex coordinates, then
``2 N`` crop-point coordinates (``jmlr.models.jmlr_net``). Every training target's vertex
block lies in a space of a few hundred dimensions (the face model's identity and
expression bases, mirrored by flip augmentation), while ``fc`` gives each of the ``3 N``
coordinates its own free row. With an L1 loss each row's gradient is a sign, noisy per
sample, and Adam moves every row by about the learning rate whatever its signal: the
3D head learns slowly (the vertex error of short CPU runs stays near the mean face's).

Here the vertex rows are reparametrised as ``W_v = P A`` and ``b_v = P a``: ``P`` (3N, K)
is the principal basis of the training targets' vertex block (in the head's output
units, columns scaled by each component's standard deviation, so ``A`` regresses
whitened coefficients), and only ``A`` (K, F) and ``a`` (K,) are trained. The 2D rows stay
free. This is the "head initialised from the shape basis" of issue 9.

It is a ``torch.nn.utils.parametrize`` parametrisation, so the network class, its
state-dict keys at export and every stored model keep the plain ``fc`` layout:
:func:`plain_state_dict` and :func:`fold_vertex_basis` give the equivalent plain weights
(``W_v = P A`` computed once), and :func:`attach_vertex_basis` on a plain ``fc`` projects
its vertex rows onto the basis (``A = P⁺ W_v``; exact for weights that came from the same
basis, so checkpoints round-trip).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["VertexBasis", "principal_vertex_basis", "attach_vertex_basis", "has_vertex_basis",
           "fold_vertex_basis", "plain_state_dict", "vertex_basis_of"]


@torch.no_grad()
def principal_vertex_basis(targets: torch.Tensor, num_vertices: int, out_mean: torch.Tensor,
                           out_scale: torch.Tensor, max_rank: int = 256,
                           rel_tol: float = 1e-3) -> torch.Tensor:
    """The principal basis P (3N, K) of the vertex block of JMLR targets.

    Args:
        targets: (M, 5N) training targets in the network's output layout
            (``jmlr.models.jmlr_net.encode_targets``), flips included.
        num_vertices: N.
        out_mean, out_scale: (5N,) the head's output affine; the basis lives in the
            ``fc``'s units ``(t - out_mean) / out_scale``.
        max_rank: K at most.
        rel_tol: components whose standard deviation is below ``rel_tol`` times the
            first one's are dropped (numerical noise of fp16 targets).

    Returns:
        P (3N, K) float32, orthogonal columns each scaled by its component's standard
        deviation over ``targets`` (so unit-variance coefficients reproduce the spread).
    """
    n3 = 3 * int(num_vertices)
    t = ((targets[:, :n3].double() - out_mean[:n3].double()) / out_scale[:n3].double())
    t = t - t.mean(0)
    _, s, vh = torch.linalg.svd(t, full_matrices=False)
    std = s / max(1.0, float(len(t) - 1)) ** 0.5
    keep = int(min(max_rank, int((std > rel_tol * std[0]).sum())))
    return (vh[:keep].T * std[:keep]).float().contiguous()


class VertexBasis(nn.Module):
    """Parametrisation of ``fc.weight`` (5N, F) or ``fc.bias`` (5N,): the first ``3N``
    rows are ``P @ original[:K]``, the rest are ``original[K:]`` as they are."""

    def __init__(self, basis: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("basis", basis.detach().float().contiguous())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        k = self.basis.shape[1]
        return torch.cat([self.basis @ original[:k], original[k:]], 0)

    @torch.no_grad()
    def right_inverse(self, plain: torch.Tensor) -> torch.Tensor:
        # P = U diag(std) with orthonormal U: P⁺ = diag(1/std) Uᵀ.
        n3 = self.basis.shape[0]
        std2 = (self.basis ** 2).sum(0)
        coeffs = (self.basis.T @ plain[:n3].to(self.basis)) / std2.reshape(-1, *([1] * (plain.dim() - 1)))
        return torch.cat([coeffs.to(plain.dtype), plain[n3:]], 0)


def has_vertex_basis(net: nn.Module) -> bool:
    """Whether ``net.fc`` carries the parametrisation."""
    fc = getattr(net, "fc", None)
    return fc is not None and parametrize.is_parametrized(fc, "weight")


def vertex_basis_of(net: nn.Module) -> torch.Tensor | None:
    """The basis P (3N, K) attached to ``net.fc``, or None."""
    if not has_vertex_basis(net):
        return None
    return net.fc.parametrizations.weight[0].basis


def attach_vertex_basis(net: nn.Module, basis: torch.Tensor) -> None:
    """Reparametrise ``net.fc``'s vertex rows on ``basis`` (3N, K); the current weights
    are projected onto it. Build the optimizer afterwards: the trained tensors change."""
    fc = net.fc
    if has_vertex_basis(net):
        raise ValueError("net.fc already has a vertex basis")
    n3 = 3 * int(net.num_vertices)
    if basis.shape[0] != n3:
        raise ValueError(f"basis has {basis.shape[0]} rows, the head {n3} vertex outputs")
    basis = basis.to(fc.weight.device)
    parametrize.register_parametrization(fc, "weight", VertexBasis(basis))
    parametrize.register_parametrization(fc, "bias", VertexBasis(basis))


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net.state_dict()`` with a vertex basis folded in: plain ``fc.weight``/``fc.bias``
    (what a network without the parametrisation has), nothing of the basis."""
    state = net.state_dict()
    if not has_vertex_basis(net):
        return state
    prefix = next(name for name, m in net.named_modules() if m is net.fc)
    plain = {k: v for k, v in state.items() if not k.startswith(f"{prefix}.parametrizations.")}
    with torch.no_grad():
        plain[f"{prefix}.weight"] = net.fc.weight.detach().clone()
        plain[f"{prefix}.bias"] = net.fc.bias.detach().clone()
    return plain


def fold_vertex_basis(net: nn.Module) -> None:
    """Remove the parametrisation in place, leaving the plain weights it gives."""
    if has_vertex_basis(net):
        parametrize.remove_parametrizations(net.fc, "weight", leave_parametrized=True)
        parametrize.remove_parametrizations(net.fc, "bias", leave_parametrized=True)
