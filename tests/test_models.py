"""Tests for the attention CNN registry (train/models.py) and blocks (train/attention.py)."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from shiftlab.errors import ShiftlabError
from shiftlab.train import attention as att
from shiftlab.train import models

ALL = models.names()
RESNETS = [n for n in ALL if n.endswith("resnet")]
RANS = [n for n in ALL if n.startswith("attention")]
SHAPES = [(2, 1, 28, 28), (2, 3, 32, 32), (2, 1, 64, 37), (2, 1, 64, 101)]


def tiny(name, **kw):
    """Options that make any registry model small enough for one CPU core."""
    if name in RESNETS:
        base = dict(width=4, blocks=(1, 1, 1))
    else:
        base = dict(width=2, stem_width=8)
    base.update(kw)
    return base


def make(name, in_channels=1, num_classes=7, seed=0, **kw):
    return models.create(name, in_channels=in_channels, num_classes=num_classes, seed=seed,
                         **tiny(name, **kw))


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registry_contents():
    assert set(ALL) >= {"preact_resnet", "se_resnet", "cbam_resnet", "nonlocal_resnet",
                        "attention56", "attention92", "attention56_cifar",
                        "attention92_cifar", "attention_small", "attention_tiny"}
    assert len(ALL) == len(set(ALL))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ALL)
def test_forward_shapes(name, shape):
    model = make(name, in_channels=shape[1], num_classes=7)
    out = model(_x(shape))
    assert out.shape == (2, 7)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(2, 1, 64, 37), (2, 1, 64, 101), (2, 1, 9, 8)])
def test_ran_adapts_mask_to_nominal_size(shape):
    model = make("attention_small", input_size=shape[-2:])
    assert model(_x(shape)).shape == (2, 7)
    # levels follow the smaller side (bottom 7): stage sides 37/19/10 -> 2/1/1,
    # 64/32/16 -> 3/2/1, 8/4/2 -> 1/1/1 (forced single level)
    assert model.mask_levels == {37: (2, 1, 1), 101: (3, 2, 1), 8: (1, 1, 1)}[shape[3]]


def test_mask_levels_match_paper_layouts():
    assert models.create("attention56", device="meta").mask_levels == (3, 2, 1)
    assert models.create("attention92", device="meta").mask_levels == (3, 2, 1)
    assert models.create("attention56_cifar", device="meta").mask_levels == (2, 1, 1)
    assert models.create("attention_small", device="meta").mask_levels == (2, 1, 1)
    assert models.create("attention_tiny", device="meta").mask_levels == (1, 1, 1)
    m = models.create("attention_small", device="meta", mask_levels=(4, 1, 2))
    assert m.mask_levels == (4, 1, 2)


@pytest.mark.parametrize("size,bottom,levels", [(56, 7, 3), (28, 7, 2), (14, 7, 1), (7, 7, 1),
                                                (1, 7, 1), (32, 8, 2), (64, 1, 6), (2, 1, 1)])
def test_mask_levels_for(size, bottom, levels):
    assert att.mask_levels_for(size, bottom) == levels


@given(size=st.integers(1, 4096), bottom=st.integers(1, 64))
def test_mask_levels_never_below_bottom(size, bottom):
    levels = att.mask_levels_for(size, bottom)
    assert levels >= 1
    if levels > 1:  # a chosen (not forced) depth keeps the nominal bottom >= bottom
        assert size // 2 ** levels >= bottom
    assert size // 2 ** (levels + 1) < bottom or levels == 8


@pytest.mark.parametrize("name", ALL)
def test_backward_finite_grads(name):
    model = make(name)
    loss = nn.functional.cross_entropy(model(_x((2, 1, 28, 28))), torch.tensor([1, 3]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


class _Const(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), mode=st.sampled_from(["arl", "nal"]))
def test_attention_residual_learning_formula(seed, mode):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 8, 5, 3, generator=g)
    trunk = torch.randn(2, 8, 5, 3, generator=g)
    module = att.AttentionModule(8, p=0, t=1, r=1, levels=1, attention_mode=mode)
    module.mask, module.trunk = _Const(mask), _Const(trunk)
    out = module(torch.zeros(2, 8, 5, 3))
    expected = (1 + mask) * trunk if mode == "arl" else mask * trunk
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_arl_and_nal_differ_and_mode_is_used():
    x = _x((2, 8, 12, 10))
    arl = att.AttentionModule(8, levels=2, attention_mode="arl")
    nal = att.AttentionModule(8, levels=2, attention_mode="nal")
    nal.load_state_dict(arl.state_dict())
    arl.eval(), nal.eval()
    pre = arl.pre(x)
    m, t = arl.mask(pre), arl.trunk(pre)
    torch.testing.assert_close(arl(x), arl.post((1 + m) * t))
    torch.testing.assert_close(nal(x), nal.post(m * t))
    assert not torch.allclose(arl(x), nal(x))


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 19), w=st.integers(1, 19), levels=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_soft_mask_in_unit_interval_any_size(h, w, levels, seed):
    branch = att.SoftMaskBranch(4, r=1, levels=levels).eval()
    models.init_weights(branch, torch.Generator().manual_seed(seed))
    x = 3 * _x((1, 4, h, w), seed)
    m = branch(x)
    assert m.shape == x.shape
    assert (m >= 0).all() and (m <= 1).all()


def test_nonlocal_block_identity_at_init():
    block = att.NonLocalBlock(8)
    x = _x((2, 8, 7, 5))
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    model = make("nonlocal_resnet")
    blocks = [m for m in model.modules() if isinstance(m, att.NonLocalBlock)]
    assert len(blocks) == 2  # after stages 1 and 2
    for b in blocks:
        y = _x((2, b.bn.num_features, 3, 1))
        torch.testing.assert_close(b(y), y, rtol=0, atol=0)
    # not a constant identity: once the output BN has weight, the block mixes positions
    nn.init.ones_(block.bn.weight)
    assert not torch.allclose(block(x), x)


def test_nonlocal_attention_starts_near_uniform():
    """Reference init (N(0, 0.01) 1x1 convs) + scaled products: the softmax is not saturated at init."""
    model = make("nonlocal_resnet")
    blocks = [m for m in model.modules() if isinstance(m, att.NonLocalBlock)]
    seen = []
    for b in blocks:
        assert b.scale == pytest.approx(b.inter_channels ** -0.5)
        for conv in (b.theta, b.phi, b.g, b.out):
            assert conv.weight.std().item() == pytest.approx(0.01, rel=0.2) and (conv.bias == 0).all()
        b.register_forward_hook(lambda m, inp, out: seen.append(m.attention(inp[0])))
    model.train()
    model(_x((8, 1, 28, 28)))
    assert len(seen) == 2
    for w in seen:
        uniform = 1.0 / w.shape[-1]
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert w.max().item() < 2 * uniform  # Kaiming theta/phi, unscaled: ~0.9, i.e. 15-45x uniform
    # the same seed gives the same block weights (they come from the model's generator)
    again = [m for m in make("nonlocal_resnet").modules() if isinstance(m, att.NonLocalBlock)]
    assert all(torch.equal(a.theta.weight, b.theta.weight) for a, b in zip(blocks, again))


def test_nonlocal_without_subsampling_and_scaling():
    block = att.NonLocalBlock(6, inter_channels=3, subsample=False, scaled=True)
    nn.init.ones_(block.bn.weight)
    block.eval()
    x = _x((1, 6, 4, 3))
    theta = block.theta(x).flatten(2)[0].T          # (HW, C')
    phi = block.phi(x).flatten(2)[0]                # (C', HW)
    g = block.g(x).flatten(2)[0].T                  # (HW, C')
    y = torch.softmax(theta @ phi / math.sqrt(3), dim=-1) @ g
    ref = x + block.bn(block.out(y.T.reshape(1, 3, 4, 3)))
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_se_block():
    se = att.SEBlock(32)
    assert se.fc1.out_features == 4  # 32 // 16 = 2 -> min hidden 4
    assert att.SEBlock(256).fc1.out_features == 16
    models.init_weights(se, torch.Generator().manual_seed(1))
    x = _x((3, 32, 5, 7))
    gate = se.gate(x)
    assert gate.shape == (3, 32, 1, 1)
    assert (gate > 0).all() and (gate < 1).all()
    torch.testing.assert_close(se(x), x * gate)


def test_cbam_block():
    cbam = att.CBAM(32, reduction=8)
    assert cbam.channel.mlp[0].out_features == 4
    assert cbam.spatial.conv.kernel_size == (7, 7)
    models.init_weights(cbam, torch.Generator().manual_seed(2))
    cbam.eval()
    x = _x((2, 32, 9, 4))
    ca = cbam.channel(x)
    assert ca.shape == (2, 32, 1, 1)
    sa = cbam.spatial(x * ca)
    assert sa.shape == (2, 1, 9, 4)
    torch.testing.assert_close(cbam(x), x * ca * sa)
    # channel attention uses max pooling too: changing one value's max changes the gate
    x2 = x.clone()
    x2[0, 0, 0, 0] = x[0, 0].max() + 10
    assert not torch.allclose(cbam.channel(x2)[0], ca[0])


def test_spatial_transformer_identity_at_init():
    stn = att.SpatialTransformer(1)
    x = _x((2, 1, 28, 28))
    torch.testing.assert_close(stn(x), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,paper_params,paper_macs",
                         [("attention56", 31.9e6, 6.3e9), ("attention92", 51.3e6, 10.4e9)])
def test_paper_parameter_counts_and_flops(name, paper_params, paper_macs):
    s = models.summary(name, input_shape=(3, 224, 224), num_classes=1000)  # meta device
    assert abs(s["params"] / paper_params - 1) < 0.10
    # documented exact counts of this layout (31.81M: -0.3%; 52.47M: +2.3%)
    assert s["params"] == {"attention56": 31_810_728, "attention92": 52_466_344}[name]
    assert abs(s["macs"] / paper_macs - 1) < 0.05
    assert s["output_shape"] == (1000,)


@pytest.mark.parametrize("name,depth", [("attention56", 56), ("attention92", 92)])
def test_trunk_depth_is_36m_plus_20(name, depth):
    model = models.create(name, device="meta")
    units = 0
    for m in model.features:
        if isinstance(m, att.AttentionModule):
            units += len(m.pre) + len(m.trunk) + len(m.post)
        else:
            units += 1
    assert 3 * units + 2 == depth  # stem conv + 3 layers per unit + FC


def test_summary_flops_scale_with_area():
    fc = 2 * 64 * 10
    s28 = models.summary("preact_resnet", (1, 28, 28))
    s56 = models.summary("preact_resnet", (1, 56, 56))
    assert s28["params"] == s56["params"] == s28["trainable_params"]
    assert s56["flops"] - fc == 4 * (s28["flops"] - fc)
    assert s28["macs"] == s28["flops"] // 2
    assert s28["output_shape"] == (10,)
    assert models.summary("se_resnet", (3, 16, 16), num_classes=5)["output_shape"] == (5,)


def test_table_lists_every_model():
    text = models.table((1, 28, 28))
    lines = text.splitlines()
    assert len(lines) == 4 + len(ALL)
    for name in ALL:
        assert any(line.startswith(name + " ") for line in lines)
    # it says what it counts: the input every model is built for, and MACs vs FLOPs
    assert lines[0].startswith("every model built for input 1x28x28 and 10 classes")
    assert "MACs = multiply-adds" in lines[1] and "FLOPs = 2 x MACs" in lines[1]
    assert lines[2].split()[:5] == ["model", "params", "MACs", "FLOPs", "output"]
    row = next(line for line in lines if line.startswith("attention56 ")).split()
    s = models.summary("attention56", (1, 28, 28), 10)
    assert row[2:4] == [models._si(s["macs"]), models._si(s["flops"])] and s["flops"] == 2 * s["macs"]


def test_attention56_at_the_paper_input_matches_its_table():
    """Paper Table (Wang et al. 2017): Attention-56 31.9 M params, 6.3 G "FLOPs" (multiply-adds)."""
    s = models.summary("attention56", (3, 224, 224), 1000)
    assert s["params"] == pytest.approx(31.9e6, rel=0.01)
    assert s["macs"] == pytest.approx(6.3e9, rel=0.01)
    line = next(x for x in models.table((3, 224, 224), 1000).splitlines() if x.startswith("attention56 "))
    assert line.split()[1:4] == ["31.81M", "6.27G", "12.54G"]


@pytest.mark.parametrize("name", ALL)
def test_channels_last_matches_contiguous(name):
    model = make(name).eval()
    x = _x((2, 1, 64, 37))
    ref = model(x)
    model_cl = make(name).eval().to(memory_format=torch.channels_last)
    out = model_cl(x.to(memory_format=torch.channels_last))
    # eval-mode BN at init does not normalise, so deep untrained nets reach logits of
    # 1e4; compare relative to the output scale (float32 summation order differs, and by CPU: 1e-5 of the scale held on AMD EPYC, not on Intel Xeon)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-5 + 1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("name", ["preact_resnet", "cbam_resnet", "nonlocal_resnet",
                                  "stn_resnet", "attention_small", "attention56"])
def test_autocast_bfloat16(name):
    model = make(name).eval()
    x = _x((2, 1, 28, 28))
    ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 + 0.05 * ref.abs().max()


@pytest.mark.parametrize("name,kw", [("attention_small", dict(modules=(1, 0, 1), final_units=1)),
                                     ("nonlocal_resnet", dict(blocks=(1, 1))),
                                     ("cbam_resnet", dict(blocks=(1,)))])
def test_compiles_in_one_graph(name, kw):
    if name == "nonlocal_resnet":
        kw = dict(kw, nonlocal_stages=(0, 1))
    model = make(name, **kw).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = _x((2, 1, 28, 28))
    torch.testing.assert_close(compiled(x), model(x))


def test_deterministic_create_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = make("attention_small", seed=5)
    after = torch.get_rng_state()
    assert torch.equal(before, after)
    torch.manual_seed(999)  # global state must not matter
    b = make("attention_small", seed=5)
    c = make("attention_small", seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_kaiming_init_statistics():
    model = models.create("attention92_cifar", width=4, stem_width=16)
    conv = model.features[0].conv2  # 3x3, fan_out = 16 * 9
    std = conv.weight.std().item()
    assert abs(std / math.sqrt(2 / (conv.out_channels * 9)) - 1) < 0.25
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))


@pytest.mark.parametrize("call,match", [
    (lambda: models.create("atention56"), r"model\.name: unknown model 'atention56' \(did you mean 'attention56'\?\)"),
    (lambda: models.create("se_resnet", widht=8), r"model\.widht: unknown option .*did you mean 'width'"),
    (lambda: models.create("se_resnet", mask_levels=(1, 1, 1)), r"model\.mask_levels: unknown option"),
    (lambda: models.create("preact_resnet", width=0), r"model\.width: must be an integer >= 1, got 0"),
    (lambda: models.create("preact_resnet", width=2.5), r"model\.width: must be an integer"),
    (lambda: models.create("preact_resnet", blocks=[]), r"model\.blocks: must be a list of 1 to 6"),
    (lambda: models.create("preact_resnet", stem="vgg"), r"model\.stem: must be one of 'cifar', 'imagenet'"),
    (lambda: models.create("preact_resnet", bottleneck=1), r"model\.bottleneck: must be true or false"),
    (lambda: models.create("preact_resnet", dropout=1.0), r"model\.dropout: must be a number in \[0.0, 1.0\)"),
    (lambda: models.create("cbam_resnet", spatial_kernel=4), r"model\.spatial_kernel: must be an odd integer"),
    (lambda: models.create("nonlocal_resnet", nonlocal_stages=[3]), r"model\.nonlocal_stages: stage 3 does not exist"),
    (lambda: models.create("attention56", attention_mode="both"), r"model\.attention_mode: must be one of 'arl', 'nal'"),
    (lambda: models.create("attention56", modules=(1, 1)), r"model\.modules: must be a list of 3 integers"),
    (lambda: models.create("attention56", r=0), r"model\.r: must be an integer >= 1"),
    (lambda: models.create("attention56", mask_levels=[0, 1, 1]), r"model\.mask_levels"),
    (lambda: models.create("attention_tiny", stem_stride=4), r"model\.stem_stride: must be an integer >= 1 and <= 2"),
    (lambda: models.create("attention56", final_stride=3), r"model\.final_stride: must be an integer >= 1 and <= 2"),
    (lambda: models.create("attention56", input_size=(0, 5)), r"model\.input_size"),
    (lambda: models.create("preact_resnet", seed=-1), r"model\.seed: must be an integer >= 0"),
    (lambda: models.summary("preact_resnet", (28, 28)), r"input_shape: must be \(C, H, W\)"),
    (lambda: models.summary("preact_resnet", (1, 28, 28), in_channels=3), r"model\.in_channels: 3 contradicts"),
    (lambda: models.merge({"name": "preact_resnet", "opts": {}}), r"model\.opts: unknown key"),
    (lambda: models.merge({"name": "foo"}), r"model\.name: unknown model 'foo'"),
    (lambda: models.merge({"options": []}), r"model\.options: must be a mapping"),
    (lambda: models.merge({"options": {"p": -1}}, key="train.model"), r"train\.model\.options\.p: must be an integer >= 0"),
])
def test_errors_are_one_line(call, match):
    with pytest.raises(ShiftlabError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_merge_fills_defaults():
    cfg = models.merge(None)
    assert cfg["name"] == models.DEFAULTS["name"]
    assert cfg["options"] == models.describe(cfg["name"])
    cfg = models.merge({"name": "se_resnet", "options": {"width": 8, "blocks": [1, 2]}})
    assert cfg["options"]["width"] == 8 and cfg["options"]["blocks"] == (1, 2)
    assert cfg["options"]["reduction"] == 16
    model = models.create(cfg["name"], **cfg["options"])
    assert model(_x((2, 1, 28, 28))).shape == (2, 10)
