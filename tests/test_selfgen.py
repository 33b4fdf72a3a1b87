import torch

from structprune.data.selfgen import generate_calibration


def test_self_generated_samples_are_deterministic_under_a_seed(model):
    a = generate_calibration(model, 1, n_samples=5, seq_len=12, seed=7, batch_size=2, progress=False)
    b = generate_calibration(model, 1, n_samples=5, seq_len=12, seed=7, batch_size=2, progress=False)
    c = generate_calibration(model, 1, n_samples=5, seq_len=12, seed=8, batch_size=2, progress=False)
    assert a.shape == (5, 12) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.all(a[:, 0] == 1)  # every sample starts from the start token
    assert not torch.all(a[:, 1:] == a[0, 1:])  # samples differ from each other


def test_drop_start_keeps_the_start_token_out_and_continues_the_same_text(model):
    kept = generate_calibration(model, 1, n_samples=3, seq_len=8, seed=3, batch_size=3, progress=False)
    dropped = generate_calibration(model, 1, n_samples=3, seq_len=8, seed=3, batch_size=3, progress=False, drop_start=True)
    assert dropped.shape == (3, 8)
    assert torch.equal(dropped[:, :7], kept[:, 1:])  # same seeded continuation, shifted by the start token
    assert not torch.all(dropped[:, 0] == 1)
