"""The dynamic gate (paper, section 3.2) and its combined loss (section 3.3) against hand-computed numbers."""
import math

import numpy as np
import pytest
import torch

from crossgate.fusion import DynamicGate, gate_loss
from crossgate.train import TrainConfig, cross_modal_batches, train


def hand_gate(k=2) -> DynamicGate:
    gate = DynamicGate(d_img=2, d_text=2, d_proj=2, k=k)
    with torch.no_grad():
        gate.w_img.weight.copy_(torch.eye(2))
        gate.w_text.weight.copy_(torch.eye(2))
        gate.w_final.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    return gate


X_IMG = torch.tensor([[1.0, 2.0]])
X_TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.25]])


def test_forward_matches_hand_computation():
    # img_proj = [1, 2]; text_proj = [1, 0], [0, 1], [0, .25]; A = [1, 2, .5]; top-2 = texts 1, 0
    out = hand_gate()(X_IMG, X_TEXT)
    a1, a0 = math.e / (math.e + 1), 1 / (math.e + 1)  # softmax([2, 1])
    assert out.indices.tolist() == [[1, 0]]
    np.testing.assert_allclose(out.weights.detach().numpy(), [[a1, a0]], atol=1e-6)
    np.testing.assert_allclose(out.text_proj.detach().numpy(), [[1, 0], [0, 1], [0, 0.25]], atol=1e-7)
    # weighted = a1 [0, 1] + a0 [1, 0]; W_final -> [a0, -2 a1]; ReLU -> [a0, 0]
    np.testing.assert_allclose(out.enhanced.detach().numpy(), [[a0, 0.0]], atol=1e-6)


def test_k1_is_hard_selection():
    out = hand_gate(k=1)(X_IMG, X_TEXT)
    assert out.indices.tolist() == [[1]] and out.weights.tolist() == [[1.0]]
    np.testing.assert_allclose(out.enhanced.detach().numpy(), [[0.0, 0.0]])  # ReLU(W_final [0, 1]) = ReLU([0, -2])


def test_k_all_and_k_too_large():
    out = hand_gate(k="all")(X_IMG, X_TEXT)
    assert out.indices.shape == (1, 3) and out.indices.tolist() == [[1, 0, 2]]
    np.testing.assert_allclose(out.weights.sum().item(), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"k=4 is larger than the number of texts N=3"):
        hand_gate(k=4)(X_IMG, X_TEXT)
    for bad in (0, -1, "some", 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer or 'all'"):
            DynamicGate(2, 2, 2, k=bad)


def test_loss_matches_hand_computation():
    gate = hand_gate()
    out = gate(X_IMG, X_TEXT)
    a0 = 1 / (math.e + 1)
    rec = (a0 - 1) ** 2 + (0 - 2) ** 2
    # class 0 owns texts 0 and 1: mean projected text [.5, .5]; cos([a0, 0], [.5, .5]) = 1/sqrt(2)
    align = 1 - 1 / math.sqrt(2)
    loss = gate_loss(gate, out, X_IMG, torch.tensor([0]), torch.tensor([0, 0, 1]), n_classes=2)
    assert loss.rec.item() == pytest.approx(rec, abs=1e-5)
    assert loss.align.item() == pytest.approx(align, abs=1e-5)
    assert loss.total.item() == pytest.approx(0.75 * rec + 0.25 * align, abs=1e-5)


def test_align_is_summed_and_rec_averaged_over_the_batch():
    gate = hand_gate()
    x = X_IMG.repeat(3, 1)
    out = gate(x, X_TEXT)
    one = gate_loss(gate, gate(X_IMG, X_TEXT), X_IMG, torch.tensor([0]), torch.tensor([0, 0, 1]), 2)
    three = gate_loss(gate, out, x, torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]), 2)
    assert three.rec.item() == pytest.approx(one.rec.item(), rel=1e-6)
    assert three.align.item() == pytest.approx(3 * one.align.item(), rel=1e-6)


def test_align_in_shared_space_when_d_proj_differs():
    torch.manual_seed(0)
    gate = DynamicGate(d_img=6, d_text=4, d_proj=3, k=2)
    out = gate(torch.randn(5, 6), torch.randn(4, 4))
    loss = gate_loss(gate, out, torch.randn(5, 6), torch.tensor([0, 1, 0, 1, 0]), torch.tensor([0, 0, 1, 1]), 2)
    assert torch.isfinite(loss.total)


def test_shapes_and_gradients_reach_all_three_matrices():
    torch.manual_seed(0)
    gate = DynamicGate(d_img=8, d_text=5, d_proj=4, k=3)
    x = torch.randn(6, 8)
    out = gate(x, torch.randn(7, 5))
    assert out.enhanced.shape == (6, 8) and out.indices.shape == (6, 3) and out.weights.shape == (6, 3)
    assert torch.allclose(out.weights.sum(1), torch.ones(6))
    gate_loss(gate, out, x, torch.arange(6) % 2, torch.arange(7) % 2, 2).total.backward()
    for name in ("w_img", "w_text", "w_final"):
        grad = getattr(gate, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(getattr(gate, n).bias is None for n in ("w_img", "w_text", "w_final"))


def test_tied_init_starts_attention_at_encoder_similarity():
    torch.manual_seed(0)
    gate = DynamicGate(d_img=16, d_text=16, d_proj=8, k=1, init="tied")
    assert torch.equal(gate.w_img.weight, gate.w_text.weight)
    assert torch.equal(gate.w_final.weight, gate.w_img.weight.T)
    with pytest.raises(ValueError, match="d_text == d_img"):
        DynamicGate(d_img=16, d_text=4, d_proj=8, k=1, init="tied")


def test_cross_modal_batches_mix_half_and_half():
    batches = cross_modal_batches(10, 6, batch_size=4, text_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert [len(i) for i, _ in batches] == [2] * 5 and all(len(t) == 2 for _, t in batches)
    assert sorted(torch.cat([i for i, _ in batches]).tolist()) == list(range(10))


def test_training_lowers_the_loss_on_real_features(lite_val_features):
    """The paper's schedule on real lite features of the embedded default lowers the combined loss."""
    x, y, pool, pool_labels = lite_val_features
    torch.manual_seed(0)
    gate = DynamicGate(x.shape[1], pool.shape[1], 128, k=5, init="tied")

    def total(xb, yb):
        return gate_loss(gate, gate(xb, pool), xb, yb, pool_labels, 10).total

    with torch.no_grad():
        before = total(x, y).item()
    gen = torch.Generator().manual_seed(0)
    train(gate, lambda b: total(torch.cat([x[b[0]], pool[b[1]]]), torch.cat([y[b[0]], pool_labels[b[1]]])),
          lambda e: cross_modal_batches(len(x), len(pool), 32, 0.5, gen), lambda: (-total(x, y).item(),),
          TrainConfig(epochs=5, eval_every=100))
    with torch.no_grad():
        after = total(x, y).item()
    assert after < 0.9 * before, (before, after)


def test_full_batch_training_validates_every_eval_every_steps_and_keeps_the_best_copy():
    """A full-batch loop (one step per "epoch") validates at eval_every, not at every step, and the
    kept state is a copy: later steps do not change it."""
    import torch

    weight = torch.nn.Parameter(torch.zeros(3))
    module = torch.nn.Module()
    module.w = weight
    scores = iter(range(100))

    def evaluate():
        return (0 if len(seen) > 3 else next(scores),)  # best at the third validation (step 10)

    seen = []

    def loss_fn(_):
        return ((module.w - 1.0) ** 2).sum()

    def validate():
        seen.append(float(module.w[0]))
        return evaluate()

    result = train(module, loss_fn, lambda step: [None], validate,
                   TrainConfig(lr=0.1, epochs=20, step_epochs=100, eval_every=5, eval_at_start=True,
                               eval_short_epochs=False))
    assert [it for it, _ in result.history] == [0, 5, 10, 15, 20]
    assert result.best_iteration == 10
    assert float(module.w[0]) == seen[2]  # restored to the state validated at step 10
