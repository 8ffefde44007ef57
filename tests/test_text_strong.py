"""Where the text is informative (real CIFAR-10 dog and cat photos, lite zero-shot about 80%), the methods
that start from zero-shot must not fall below it: the Fashion-MNIST demo, where text is weak, hides this."""
import pytest

from tests.conftest import SHARED

CIFAR = SHARED / "fixtures" / "cifar-dogs-cats"
pytestmark = pytest.mark.skipif(not CIFAR.is_dir(), reason=f"the text-strong fixture {CIFAR} is absent "
                                "(CI has ../shared beside the clone; a user's clone does not)")

TOLERANCE = 2.0  # points of test accuracy


@pytest.fixture(scope="module")
def cifar_features(lite, session_cache):
    from crossgate.cache import FeatureCache
    from crossgate.datasets import load_dataset

    dataset = load_dataset(f"imagefolder:{CIFAR}")  # the same split `crossgate bench` uses
    return FeatureCache(session_cache, progress=False).features(lite, dataset)


@pytest.fixture(scope="module")
def zero_shot(cifar_features):
    from crossgate.pipeline import fit_one

    return fit_one(cifar_features, "zeroshot", shots=4, seed=1)[1]["acc_test"]


# CLAP's drift is chaotic (SGD at lr 0.1): on torch 2.14.1 / numpy 2.4.6 this draw gives 81.5 against zero-shot's
# 79.5 on the main of before as on this one, on earlier builds it fell below; so not strict
@pytest.mark.parametrize("method", ["gda", "proker", "lpp", "tip", pytest.param("clap", marks=pytest.mark.xfail(
    strict=False, reason="measured: CLAP as published (SGD lr 0.1, 300 epochs, no validation set by design) drifts "
                        "from zero-shot on lite, whose raw text features have norm about 0.83; its penalty "
                        "||w - t||^2 is not scale-free (README, Methods)"))])
def test_not_below_zero_shot_at_four_shots(cifar_features, zero_shot, method):
    from crossgate.pipeline import fit_one

    row = fit_one(cifar_features, method, shots=4, seed=1)[1]
    assert row["acc_test"] >= zero_shot - TOLERANCE, (method, row["acc_test"], zero_shot, row["hparams"])
