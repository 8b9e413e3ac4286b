import pytest
import torch

from readapt.measure import TensorMemoryTracker
from readapt.side import Joiner, RMSNorm, SideNetwork, TokenStates, cpu_has_amx, side_dtype


@pytest.mark.parametrize("rnn_type", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("aggregation", ["mean", "last"])
def test_shapes_and_zero_initial_correction(rnn_type, aggregation):
    side = SideNetwork(16, rnn_dim=8, rnn_type=rnn_type, aggregation=aggregation)
    states = torch.randn(5, 7, 16)  # 5 layers, 7 token sequences
    correction = side(states)
    assert correction.shape == (7, 16)
    assert torch.equal(correction, torch.zeros_like(correction))  # W_out starts at zero


def test_each_token_is_its_own_sequence():
    torch.manual_seed(0)
    side = SideNetwork(16, rnn_dim=8)
    torch.nn.init.normal_(side.out.weight)
    states = torch.randn(4, 6, 16)
    together = side(states)
    one_by_one = torch.cat([side(states[:, i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, one_by_one)


def test_recurrence_runs_over_depth_in_order():
    torch.manual_seed(0)
    side = SideNetwork(16, rnn_dim=8, aggregation="last")
    torch.nn.init.normal_(side.out.weight)
    states = torch.randn(4, 3, 16)
    assert not torch.allclose(side(states), side(states.flip(0)))


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_bidirectional_depth_lets_lower_layers_see_higher_ones(rnn_type):
    """Both directions, r/2 wide each: zero correction at init, the output width r stays, and a
    token's correction now depends on its upper layers through every step's output (the one-way
    network's first step ignores them)."""
    torch.manual_seed(0)
    side = SideNetwork(16, rnn_dim=8, rnn_type=rnn_type, bidirectional=True)
    states = torch.randn(4, 3, 16)
    assert torch.equal(side(states), torch.zeros(3, 16))
    assert side.rnn.hidden_size == 4 and side.out.in_features == 8
    changed = states.clone()
    changed[-1] = torch.randn(3, 16)  # the top layer only
    first_step = lambda rnn, s: rnn(side.joiner(s))[0][0]  # noqa: E731  the output at the lowest layer
    assert not torch.allclose(first_step(side.rnn, states), first_step(side.rnn, changed))
    one_way = SideNetwork(16, rnn_dim=8, rnn_type=rnn_type)
    assert torch.equal(first_step(one_way.rnn, states), first_step(one_way.rnn, changed))


def test_size_does_not_depend_on_depth():
    side = SideNetwork(64, rnn_dim=32)
    n = sum(p.numel() for p in side.parameters())
    # norm (2d) + GRU (3 gates) + W_out (r -> d, no bias)
    assert n == 2 * 64 + 3 * (64 * 32 + 32 * 32 + 2 * 32) + 32 * 64
    side(torch.randn(6, 2, 64)), side(torch.randn(24, 2, 64))  # any depth runs through the same weights


def test_joiner_with_cross_term_needs_it_and_merges_it():
    joiner = Joiner(8, cross=True)
    with pytest.raises(ValueError, match="cross"):
        joiner(torch.randn(2, 3, 8))
    a = joiner(torch.randn(2, 3, 8), torch.zeros(2, 3, 8))
    assert a.shape == (2, 3, 8)


def test_rmsnorm_matches_definition():
    norm = RMSNorm(8, eps=0.0)
    x = torch.randn(3, 8)
    torch.testing.assert_close(norm(x), x / x.pow(2).mean(-1, keepdim=True).sqrt())


def _trained_side(chunk_tokens, cross=False, rnn_type="lstm", joiner="norm"):
    torch.manual_seed(0)
    side = SideNetwork(32, rnn_dim=16, rnn_type=rnn_type, cross=cross, chunk_tokens=chunk_tokens, joiner=joiner)
    torch.nn.init.normal_(side.out.weight)  # a non-zero correction, as after some training
    return side


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("rnn_type, joiner", [("lstm", "norm"), ("gru", "norm"), ("lstm", "projection")])
def test_chunked_training_gives_the_same_correction_and_gradients(cross, rnn_type, joiner):
    torch.manual_seed(1)
    states, cross_term = torch.randn(4, 300, 32), torch.randn(4, 300, 32) if cross else None
    results = []
    for chunk in (None, 64):  # 300 tokens: four full chunks and a partial one
        side = _trained_side(chunk, cross, rnn_type, joiner)
        correction = side(states, cross_term)
        correction.pow(2).sum().backward()
        results.append((correction.detach(), {n: p.grad for n, p in side.named_parameters()}))
    (whole, whole_grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    for name, grad in whole_grads.items():
        # gradients here reach the thousands: float32 summation order moves them by ~1e-7 relative
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item(), msg=name)


def test_chunking_bounds_the_training_memory_of_the_side_network():
    states = torch.randn(6, 4096, 32)
    peaks = {}
    for chunk in (None, 512):
        side = _trained_side(chunk)
        with TensorMemoryTracker() as tracker:
            side(states).sum().backward()
        peaks[chunk] = tracker.peak_bytes
    # Unchunked, autograd keeps every step's gates for all 4,096 sequences; chunked, one chunk's.
    assert peaks[512] < 0.35 * peaks[None]


def _layer_outputs(layers=4, batch=3, length=50, dim=32):
    torch.manual_seed(2)
    outputs = [torch.randn(batch, length, dim) for _ in range(layers)]
    read = torch.rand(batch, length) > 0.3
    return outputs, read


@pytest.mark.parametrize("joiner", ["norm", "projection"])
def test_token_states_gathered_per_chunk_give_the_stacked_result(joiner):
    outputs, read = _layer_outputs()
    stacked = torch.stack([h[read] for h in outputs])          # (L, M, d), row-major like TokenStates
    assert torch.equal(TokenStates(outputs, read).take(0, 10**9), stacked)
    results = []
    for states in (stacked, TokenStates(outputs, read)):
        side = _trained_side(16, joiner=joiner)
        correction = side(states)
        correction.pow(2).sum().backward()
        results.append((correction.detach(), [p.grad for p in side.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for lazy, eager in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(lazy, eager, rtol=0, atol=0)


def test_token_states_never_hold_a_copy_of_every_token_at_once():
    outputs, read = _layer_outputs(layers=6, batch=8, length=512, dim=128)
    full_copy = 6 * int(read.sum()) * 128 * 4                 # bytes of the stacked (L, M, d) states
    peaks = {}
    for name, states in (("lazy", lambda: TokenStates(outputs, read)),
                         ("stacked", lambda: torch.stack([h[read] for h in outputs]))):
        torch.manual_seed(0)
        side = SideNetwork(128, rnn_dim=16, chunk_tokens=256)
        with TensorMemoryTracker() as tracker:
            side(states()).sum().backward()
        peaks[name] = tracker.peak_bytes
    assert peaks["lazy"] < 0.6 * full_copy < 0.6 * peaks["stacked"]


@pytest.mark.parametrize("cross", [False, True])
def test_projecting_joiner_maps_to_the_rnn_width_without_norm_parameters(cross):
    side = SideNetwork(32, rnn_dim=8, joiner="projection", cross=cross)
    assert side.rnn.input_size == 8
    names = {n for n, _ in side.joiner.named_parameters()}
    assert names == ({"proj.weight", "proj.bias", "cross_proj.weight"} if cross else {"proj.weight", "proj.bias"})
    states = torch.randn(3, 5, 32)
    # a parameter-free norm: scaling a state changes nothing
    if not cross:
        torch.testing.assert_close(side.joiner(states * 7.0), side.joiner(states), rtol=1e-5, atol=1e-5)
    else:
        with pytest.raises(ValueError, match="cross"):
            side.joiner(states)


def test_no_chunking_without_gradients():
    side = _trained_side(8)
    calls = []
    side.rnn.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        side(torch.randn(3, 40, 32))
    assert len(calls) == 1  # inference has nothing to save: one pass over all tokens
    side(torch.randn(3, 40, 32))
    assert len(calls) == 1 + 5


# -- token mixing ------------------------------------------------------------------------------------
MIXERS = ("attention", "rnn")


def _mixing_side(mixing, chunk_tokens=None):
    torch.manual_seed(0)
    side = SideNetwork(32, rnn_dim=16, mixing=mixing, chunk_tokens=chunk_tokens)
    torch.nn.init.normal_(side.out.weight)
    return side


@pytest.mark.parametrize("mixing", MIXERS)
def test_mixing_keeps_the_zero_initial_correction(mixing):
    side = SideNetwork(16, rnn_dim=8, mixing=mixing)
    read = torch.tensor([[True, True, False], [True, True, True]])
    correction = side(torch.randn(3, 5, 16), read=read)
    assert torch.equal(correction, torch.zeros(5, 16))


@pytest.mark.parametrize("mixing", MIXERS)
def test_mixing_needs_to_know_where_the_tokens_sit(mixing):
    with pytest.raises(ValueError, match="read="):
        _mixing_side(mixing)(torch.randn(3, 4, 32))


@pytest.mark.parametrize("mixing", MIXERS)
def test_mixing_relates_tokens_of_one_example_and_never_of_two(mixing):
    side = _mixing_side(mixing)
    read = torch.tensor([[True, True, True, False], [True, True, False, False]])  # 3 + 2 real tokens
    states = torch.randn(3, 5, 32)
    base = side(states, read=read)
    changed = states.clone()
    changed[:, 1] += torch.randn(3, 32)            # a token of the first example
    after = side(changed, read=read)
    assert not torch.allclose(after[[0, 2]], base[[0, 2]])   # its neighbours see it
    torch.testing.assert_close(after[3:], base[3:])          # the other example does not
    # without mixing, a token's correction depends on its own states alone
    plain = SideNetwork(32, rnn_dim=16)
    torch.nn.init.normal_(plain.out.weight)
    torch.testing.assert_close(plain(changed)[[0, 2]], plain(states)[[0, 2]])


@pytest.mark.parametrize("mixing", MIXERS)
def test_mixing_ignores_padding_layout(mixing):
    """The same examples padded to different lengths, or with unread positions between their
    tokens, get the same corrections; an example with no token read changes nothing."""
    side = _mixing_side(mixing)
    states = torch.randn(3, 5, 32)
    short = torch.tensor([[True, True, True], [True, True, False]])
    long = torch.tensor([[True, True, True, False, False, False], [True, True, False, False, False, False]])
    holes = torch.tensor([[True, False, True, False, True], [False, False, False, False, False],
                          [False, True, False, True, False]])
    expected = side(states, read=short)
    torch.testing.assert_close(side(states, read=long), expected)
    torch.testing.assert_close(side(states, read=holes), expected)


def test_rnn_mixing_reads_the_tokens_in_order():
    """Unlike attention (no positions), the RNN's corrections depend on the order of the tokens."""
    side = _mixing_side("rnn")
    states, read = torch.randn(3, 3, 32), torch.ones(1, 3, dtype=torch.bool)
    reversed_order = side(states.flip(1), read=read).flip(0)
    assert not torch.allclose(reversed_order, side(states, read=read))


@pytest.mark.parametrize("mixing", MIXERS)
def test_chunked_mixing_gives_the_same_correction_and_gradients(mixing):
    torch.manual_seed(1)
    read = torch.rand(6, 50) < 0.8                # 6 examples, ragged
    states = torch.randn(4, int(read.sum()), 32)
    results = []
    for chunk in (None, 64):
        side = _mixing_side(mixing, chunk)
        correction = side(states, read=read)
        correction.pow(2).sum().backward()
        results.append((correction.detach(), {n: p.grad for n, p in side.named_parameters()}))
    (whole, whole_grads), (chunked, chunked_grads) = results
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    for name, grad in whole_grads.items():
        # gradients here are in the hundreds: float32 summation order moves them by ~1e-6 relative
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item(), msg=name)


# ---- bfloat16 compute (side_dtype) ---------------------------------------------------------------
@pytest.mark.parametrize("rnn_type, joiner, mixing", [("lstm", "norm", "none"), ("gru", "projection", "none"),
                                                      ("lstm", "norm", "attention"), ("gru", "norm", "rnn")])
def test_bfloat16_compute_stays_close_to_float32_and_trains_float32_weights(rnn_type, joiner, mixing):
    torch.manual_seed(0)
    states, read = torch.randn(4, 40, 32), torch.ones(5, 8, dtype=torch.bool)
    results = []
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)  # the same weights for both dtypes
        side = SideNetwork(32, rnn_dim=16, rnn_type=rnn_type, joiner=joiner, mixing=mixing)
        torch.nn.init.normal_(side.out.weight)
        side.compute_dtype = dtype
        correction = side(states, read=read)
        correction.pow(2).sum().backward()
        assert correction.dtype == torch.float32  # handed back in the weights' dtype
        assert all(p.dtype == p.grad.dtype == torch.float32 for p in side.parameters())
        results.append((correction.detach(), side.rnn.weight_ih_l0.grad))
    (exact, exact_grad), (half, half_grad) = results
    assert not torch.equal(half, exact)  # bf16 really ran
    torch.testing.assert_close(half, exact, rtol=0.05, atol=0.05 * exact.abs().max().item())
    cosine = torch.nn.functional.cosine_similarity(half_grad.flatten(), exact_grad.flatten(), dim=0)
    assert cosine > 0.99


def test_bfloat16_compute_keeps_the_zero_initial_correction():
    side = SideNetwork(16, rnn_dim=8)
    side.compute_dtype = torch.bfloat16
    correction = side(torch.randn(3, 5, 16))
    assert correction.dtype == torch.float32 and torch.equal(correction, torch.zeros_like(correction))


def test_side_dtype_auto_is_bfloat16_on_cpus_with_amx_only(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_has_amx() and side_dtype("auto", "cpu") is torch.bfloat16
    assert side_dtype("auto", "cuda") is None  # measured slower on a GPU: float32 there
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not cpu_has_amx() and side_dtype("auto", "cpu") is None
    assert side_dtype("bfloat16", "cpu") is torch.bfloat16  # asked for: given, fast or not
    assert side_dtype("bfloat16", "cuda") is torch.bfloat16
    assert side_dtype("float32", "cpu") is None
    with pytest.raises(ValueError, match="side dtype 'float16': choose one of auto, float32, bfloat16"):
        side_dtype("float16", "cpu")


def test_token_states_gather_the_read_positions_layer_by_layer_in_any_part():
    layers = [torch.randn(3, 5, 4) for _ in range(2)]
    read = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]], dtype=torch.bool)
    tokens = TokenStates(layers, read)
    expected = torch.stack([layer[read] for layer in layers])                       # (L, M, d), row-major
    assert len(tokens) == 9
    assert torch.equal(tokens.take(0, 9), expected)
    assert torch.equal(torch.cat([tokens.take(0, 4), tokens.take(4, 9)], dim=1), expected)
    top = layers[1].clone().requires_grad_()                                         # read_top trains it
    taken = TokenStates([layers[0], top], read).take(2, 7)
    taken.sum().backward()
    assert torch.equal(taken.detach(), expected[:, 2:7]) and top.grad[read].sum() == 5 * 4
