"""The dynamic gating fusion of "Attention Improves Multimodality" (sections 3.2-3.3), in one file.

    X_img_proj  = ReLU(W_img x_img)                  (B, d_proj)
    X_text_proj = ReLU(W_text x_text)                (N, d_proj)
    A           = X_img_proj X_text_projᵀ            (B, N)
    α           = softmax(top-k of each row of A)    (B, k)
    X_weighted  = Σ_i α_i X_text_proj[top_i]         (B, d_proj)
    X_enhanced  = ReLU(W_final X_weighted)           (B, d_img)

    L_total = λ_rec ||X_enhanced - X_img||² + λ_align Σ_i [1 - cos(X_enhanced[i], X_text_proj[c(i)])]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class GateOutput:
    enhanced: torch.Tensor  # (B, d_img) the image features enriched with their selected texts
    indices: torch.Tensor  # (B, k) which rows of x_text each image selected, best first
    weights: torch.Tensor  # (B, k) their softmax weights α
    img_proj: torch.Tensor  # (B, d_proj) ReLU(W_img x_img)
    text_proj: torch.Tensor  # (N, d_proj) ReLU(W_text x_text)


def check_k(k: int | str) -> int | str:
    if k != "all" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or 'all', got {k!r}")
    return k


def resolve_k(k: int | str, n_texts: int) -> int:
    """k as a number for a pool of n_texts; no silent clamp."""
    if check_k(k) == "all":
        return n_texts
    if k > n_texts:
        raise ValueError(f"k={k} is larger than the number of texts N={n_texts}; use k <= {n_texts} or 'all'")
    return k


class DynamicGate(nn.Module):
    """Per image, attend to the k most relevant texts and project their weighted sum back to image space."""

    def __init__(self, d_img: int, d_text: int, d_proj: int, k: int | str, init: str = "default"):
        super().__init__()
        self.w_img = nn.Linear(d_img, d_proj, bias=False)
        self.w_text = nn.Linear(d_text, d_proj, bias=False)
        self.w_final = nn.Linear(d_proj, d_img, bias=False)
        self.k = check_k(k)
        if init == "tied":
            self.tie_init()
        elif init != "default":
            raise ValueError(f"init must be 'default' or 'tied', got {init!r}")

    @torch.no_grad()
    def tie_init(self) -> None:
        """Start W_text = W_img (orthogonal) and W_final = W_imgᵀ, for aligned image and text features.

        The paper leaves initialisation open. With independent random projections every image tends to
        pick the same few texts (the ones with the largest projected norm) and the gate never learns to
        select; tied projections start the attention at the image-text similarity of the encoder.
        """
        if self.w_text.in_features != self.w_img.in_features:
            raise ValueError("tied initialisation needs text features in image space (d_text == d_img)")
        nn.init.orthogonal_(self.w_img.weight)
        self.w_text.weight.copy_(self.w_img.weight)
        self.w_final.weight.copy_(self.w_img.weight.T)

    def forward(self, x_img: torch.Tensor, x_text: torch.Tensor) -> GateOutput:
        k = resolve_k(self.k, x_text.shape[0])
        img_proj = F.relu(self.w_img(x_img))
        text_proj = F.relu(self.w_text(x_text))
        scores = img_proj @ text_proj.T
        top_scores, indices = scores.topk(k, dim=1)
        weights = top_scores.softmax(dim=1)
        # Σ α_i X_text_proj[top_i] as a (B, N) attention matrix with k non-zeros per row: its backward is a
        # gather, reproducible under a seed, where indexing text_proj[indices] back-propagates with atomics
        attention = torch.zeros_like(scores).scatter(1, indices, weights)
        weighted = attention @ text_proj
        enhanced = F.relu(self.w_final(weighted))
        return GateOutput(enhanced=enhanced, indices=indices, weights=weights, img_proj=img_proj,
                          text_proj=text_proj)

    def shared_space(self, enhanced: torch.Tensor) -> torch.Tensor:
        """Enhanced features in the projected space: needed for L_align when d_proj != d_img."""
        return F.relu(self.w_img(enhanced))


def class_text_proj(text_proj: torch.Tensor, text_labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, d_proj): per class the mean of its templates' projected text features."""
    # a one-hot matmul rather than index_add_, whose float sums are not reproducible across threads
    onehot = F.one_hot(text_labels, n_classes).to(text_proj.dtype)
    return (onehot.T @ text_proj) / onehot.sum(0).clamp_min(1)[:, None]


@dataclass
class GateLoss:
    total: torch.Tensor
    rec: torch.Tensor
    align: torch.Tensor


def gate_loss(gate: DynamicGate, out: GateOutput, x_img: torch.Tensor, labels: torch.Tensor,
              text_labels: torch.Tensor, n_classes: int, lambda_rec: float = 0.75,
              lambda_align: float = 0.25) -> GateLoss:
    """The paper's combined loss. L_rec: squared L2 error, mean over the batch. L_align: summed over the
    batch as the paper writes it, against the class text of each sample (mean over its templates).

    The cosine needs both sides in one space. When d_proj == d_img, X_enhanced is compared with
    X_text_proj directly, as the paper writes it; otherwise X_enhanced is first brought into the shared
    space the way images are, ReLU(W_img X_enhanced).
    """
    rec = ((out.enhanced - x_img) ** 2).sum(dim=1).mean()
    targets = class_text_proj(out.text_proj, text_labels, n_classes)[labels]
    enhanced = out.enhanced if out.enhanced.shape[1] == targets.shape[1] else gate.shared_space(out.enhanced)
    align = (1.0 - F.cosine_similarity(enhanced, targets, dim=1, eps=1e-8)).sum()
    return GateLoss(total=lambda_rec * rec + lambda_align * align, rec=rec, align=align)
