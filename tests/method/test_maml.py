"""The MAML engine: inner steps by hand, and batched == per-user meta-gradients."""

import pytest
import torch
from torch import nn

from mrm_lightning.method.heads import BaseRewardFunctions
from mrm_lightning.method.losses import bradley_terry_loss
from mrm_lightning.method.maml import (
    adapt,
    adapt_per_user,
    inner_gradient,
    loss_pair_weights,
    pair_margins,
)


def one_pair():
    # one user, one support pair whose base rewards are chosen [1, 0] and rejected [0, 1]:
    # linear margin = w1 - w2.
    return torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]]), torch.tensor([[True]])


def test_one_sgd_step_by_hand():
    # at w0 = [0.5, 0.5]: margin 0, dLoss/dmargin = -(1 - sigmoid(0)) = -0.5, grad = [-0.5, 0.5]
    w = adapt(torch.tensor([0.5, 0.5]), *one_pair(), steps=1, lr=2.0, combination="linear")
    torch.testing.assert_close(w, torch.tensor([[1.5, -0.5]]))


def test_first_adam_step_is_lr_times_sign_of_gradient():
    w = adapt(
        torch.tensor([0.5, 0.5]),
        *one_pair(),
        steps=1,
        lr=0.1,
        optimizer="adam",
        combination="linear",
    )
    torch.testing.assert_close(w, torch.tensor([[0.6, 0.4]]))


def test_zero_steps_returns_w0_for_every_user():
    chosen, rejected, mask = (t.expand(3, *t.shape[1:]) for t in one_pair())
    w0 = torch.tensor([0.2, -0.3])
    torch.testing.assert_close(adapt(w0, chosen, rejected, mask, steps=0, lr=1.0), w0.expand(3, 2))


def random_meta_batch(seed=0, users=5, pairs=7, dim=6, k=3):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.tensor([7, 3, 5, 1, 6])[:users]  # different numbers of real pairs
    mask = torch.arange(pairs)[None, :] < counts[:, None]
    tensors = [torch.randn(users, pairs, dim, generator=gen) for _ in range(4)]
    torch.manual_seed(seed)
    head = BaseRewardFunctions(dim, k)
    w0 = nn.Parameter(torch.randn(k, generator=gen) * 0.1)
    return head, w0, tensors, mask


def meta_gradients(engine, combination, **inner):
    head, w0, (sc, sr, qc, qr), mask = random_meta_batch()
    weights = engine(w0, head(sc), head(sr), mask, combination=combination, **inner)
    margins = pair_margins(weights, head(qc), head(qr), combination)
    bradley_terry_loss(margins, mask).mean().backward()
    return w0.grad.clone(), head.net.weight.grad.clone()


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("combination", ["softmax", "linear"])
def test_batched_meta_gradients_equal_a_per_user_loop(first_order, optimizer, combination):
    inner = dict(steps=3, lr=0.5, optimizer=optimizer, first_order=first_order)
    batched = meta_gradients(adapt, combination, **inner)
    looped = meta_gradients(adapt_per_user, combination, **inner)
    for got, want in zip(batched, looped):
        assert want.abs().sum() > 0  # the comparison is not between zeros
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_first_order_drops_the_second_order_terms():
    second = meta_gradients(adapt, "linear", steps=2, lr=0.5, first_order=False)
    first = meta_gradients(adapt, "linear", steps=2, lr=0.5, first_order=True)
    assert not torch.allclose(second[1], first[1])  # base functions: inner-loop path is gone


def test_adapting_changes_only_the_users_own_weights():
    head, w0, (sc, sr, _, _), mask = random_meta_batch()
    full = adapt(w0, head(sc), head(sr), mask, steps=2, lr=1.0)
    # changing user 0's support pairs must not move any other user's adapted weights
    sc2 = sc.clone()
    sc2[0] += 1.0
    changed = adapt(w0, head(sc2), head(sr), mask, steps=2, lr=1.0)
    torch.testing.assert_close(changed[1:], full[1:])
    assert not torch.allclose(changed[0], full[0])


def test_same_meta_gradients_as_learn2learn():
    l2l = pytest.importorskip("learn2learn")  # not installable with this stack (README)

    head, w0, (sc, sr, qc, qr), mask = random_meta_batch()
    user_weights = nn.Module()
    user_weights.w = nn.Parameter(w0.detach().clone())
    maml = l2l.algorithms.MAML(user_weights, lr=0.5, first_order=False)
    total = 0.0
    for user in range(sc.shape[0]):
        learner = maml.clone()
        real = mask[user : user + 1]
        for _ in range(2):
            support = pair_margins(
                learner.w[None], head(sc[user : user + 1]), head(sr[user : user + 1]), "linear"
            )
            learner.adapt(bradley_terry_loss(support, real).sum())
        query = pair_margins(
            learner.w[None], head(qc[user : user + 1]), head(qr[user : user + 1]), "linear"
        )
        total = total + bradley_terry_loss(query, real).sum() / sc.shape[0]
    total.backward()
    ours = meta_gradients(adapt, "linear", steps=2, lr=0.5)
    torch.testing.assert_close(user_weights.w.grad, ours[0], rtol=1e-5, atol=1e-7)


def autograd_adapt(w0, chosen, rejected, mask, *, steps, lr, optimizer, first_order, combination,
                   proximal=0.0):  # fmt: skip
    """The inner loop with its gradients asked of autograd (create_graph): what
    :func:`adapt` computes in closed form."""
    weights = anchor = w0.expand(chosen.shape[0], -1)
    moments = None
    for step in range(1, steps + 1):
        loss = bradley_terry_loss(pair_margins(weights, chosen, rejected, combination), mask).sum()
        loss = loss + 0.5 * proximal * (weights - anchor).square().sum()
        (grad,) = torch.autograd.grad(loss, weights, create_graph=not first_order)
        if optimizer == "adam":
            first, second = moments if moments else (0.0, 0.0)
            moments = (0.9 * first + 0.1 * grad, 0.999 * second + 0.001 * grad * grad)
            m_hat, v_hat = moments[0] / (1 - 0.9**step), moments[1] / (1 - 0.999**step)
            grad = m_hat / torch.sqrt(v_hat + 1e-16)
        weights = weights - lr * grad
    return weights


@pytest.mark.parametrize("combination", ["softmax", "linear"])
@pytest.mark.parametrize("two_sided", [True, False])
def test_the_closed_form_inner_gradient_is_autograds(combination, two_sided):
    head, _, (sc, sr, _, _), mask = random_meta_batch()
    weights = torch.randn(sc.shape[0], 3, requires_grad=True)
    chosen, rejected = (head(sc), head(sr)) if two_sided else (head(sc) - head(sr), None)
    margins = pair_margins(weights, chosen, rejected, combination)
    (want,) = torch.autograd.grad(bradley_terry_loss(margins, mask).sum(), weights)
    got = inner_gradient(weights, chosen, rejected, loss_pair_weights(mask),
                         combination)  # fmt: skip
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("combination", ["softmax", "linear"])
@pytest.mark.parametrize("proximal", [0.0, 0.7])
def test_meta_gradients_equal_those_of_autograds_inner_gradients(
    first_order, optimizer, combination, proximal
):
    inner = dict(steps=3, lr=0.5, optimizer=optimizer, first_order=first_order, proximal=proximal)
    closed_form = meta_gradients(adapt, combination, **inner)
    by_autograd = meta_gradients(autograd_adapt, combination, **inner)
    for got, want in zip(closed_form, by_autograd):
        assert want.abs().sum() > 0
        # summation orders differ; Adam's division amplifies the last bits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
