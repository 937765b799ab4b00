import torch
import torch.nn.functional as F

from twocol.evaluate import evaluate, predict_proba
from twocol.metrics import topk_errors


class Fixed(torch.nn.Module):
    """Returns preset logits for each view, whatever the image."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: x.shape[0]]


def test_ten_views_average_softmaxes_not_logits():
    # Two views of one image: averaging logits would pick class 0, averaging softmaxes class 1.
    logits = torch.tensor([[100.0, 0.0, 99.0], [0.0, 10.0, 0.0]])
    images = torch.zeros(1, 2, 3, 4, 4)
    p = predict_proba([Fixed(logits)], images)
    torch.testing.assert_close(p, F.softmax(logits, 1).mean(0, keepdim=True))
    assert p.argmax().item() == 1 and logits.mean(0).argmax().item() == 0


def test_ensemble_averages_the_nets_softmaxes():
    a, b = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    p = predict_proba([Fixed(a), Fixed(b)], torch.zeros(1, 3, 4, 4))
    torch.testing.assert_close(p, (F.softmax(a, 1) + F.softmax(b, 1)) / 2)


def test_topk_errors_and_evaluate_count_mistakes():
    scores = torch.tensor([[0.9, 0.1, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    w1, w5 = topk_errors(scores, torch.tensor([0, 0]))
    assert (int(w1), int(w5)) == (1, 1)  # the second image's label is 6th of 6
    w1, w5 = topk_errors(scores, torch.tensor([1, 2]))
    assert (int(w1), int(w5)) == (2, 0)
    net = Fixed(torch.tensor([[0.0, 5.0, 0.0]] * 4))
    r = evaluate([net], [(torch.zeros(4, 3, 2, 2), torch.tensor([1, 1, 0, 2]))])
    assert r == {"top1_error": 0.5, "top5_error": 0.0, "images": 4}
