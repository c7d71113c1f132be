import pytest
import torch

from splitasr.model.ds2 import DS2Config, DS2Model

SMALL = DS2Config(conv_channels=4, res_blocks=2, proj_dim=16, gru_hidden=8, gru_layers=2)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    m = DS2Model(SMALL)
    m.set_feature_stats(torch.full((80,), -8.0), torch.full((80,), 3.0))
    return m.eval()


def test_split_points_name_every_boundary(small_model):
    assert small_model.split_points == [
        "audio",
        "features",
        "conv",
        "res1",
        "res2",
        "proj",
        "gru1",
        "gru2",
        "classifier",
    ]


@pytest.mark.parametrize("point", DS2Model(SMALL).split_points)
def test_head_then_tail_is_bit_exact_at_every_point(small_model, point):
    x = torch.randn(3, 12000) * 0.1
    lens = torch.tensor([12000, 9000, 4001])
    with torch.no_grad():
        full, full_lens = small_model(x, lens)
        h, h_lens = small_model.head(x, lens, point)
        out, out_lens = small_model.tail(h, h_lens, point)
    assert torch.equal(out, full) and torch.equal(out_lens, full_lens)


def test_shipped_model_is_bit_exact_at_every_point(model):
    x = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        full, _ = model(x)
        for point in model.split_points:
            assert torch.equal(model.tail(*model.head(x, None, point), point)[0], full), point


def test_head_output_is_n_t_c_with_declared_width(small_model):
    x = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        for info in small_model.point_info()[1:]:
            h, h_lens = small_model.head(x, None, info.name)
            assert h.dim() == 3 and h.shape[2] == info.dim, info
            assert int(h_lens.max()) == h.shape[1]


def test_padding_does_not_change_a_shorter_item(small_model):
    x = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        alone, alone_lens = small_model(x[1:, :8000])
        batch, batch_lens = small_model(
            x.clone().index_put_((torch.tensor([1]),), torch.cat([x[1, :8000], torch.zeros(8000)])),
            torch.tensor([16000, 8000]),
        )
    n = int(alone_lens[0])
    assert int(batch_lens[1]) == n
    assert torch.allclose(batch[1, :n], alone[0], atol=1e-4)


def test_unknown_split_point_is_refused(small_model):
    with pytest.raises(ValueError, match="unknown split point"):
        small_model.head(torch.zeros(1, 1600), None, "nowhere")


def test_point_info_raw_rates(small_model):
    info = {p.name: p for p in small_model.point_info()}
    assert info["audio"].raw_kbps == 256.0  # 16 kHz x 16 bit
    assert info["features"].raw_kbps == pytest.approx(80 * 100 * 32 / 1000)
    assert info["classifier"].params_head == sum(p.numel() for p in small_model.parameters())
