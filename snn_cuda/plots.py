"""Pictures of what the neurons did (the seed's figures) and of training, as PNG files."""

from __future__ import annotations

import os
from typing import Dict, List

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    _pyplot().close(fig)
    return path


def plot_input(image: torch.Tensor, label: int, path: str) -> str:
    plt = _pyplot()
    fig = plt.figure(figsize=(5, 5))
    plt.imshow(image.squeeze().cpu().numpy())
    plt.title(f"Input image x of label y={label}")
    plt.colorbar()
    return _save(fig, path)


def plot_layer(values: torch.Tensor, title: str, path: str) -> str:
    """values: [T, n] for one example; drawn as the seed does: neurons down, time across."""
    plt = _pyplot()
    v = values.detach().cpu().numpy().T
    width = max(16, v.shape[1] / 8)
    height = max(4, v.shape[0] / 8)
    fig = plt.figure(figsize=(min(width, 40), min(height, 30)))
    plt.imshow(v, interpolation="nearest", cmap=plt.cm.rainbow, aspect="auto")
    plt.title(title)
    plt.colorbar()
    plt.xlabel("Time")
    plt.ylabel("Neurons of layer")
    return _save(fig, path)


def plot_neuron(trace: torch.Tensor, title: str, path: str) -> str:
    plt = _pyplot()
    t = trace.detach().cpu().numpy()
    fig = plt.figure(figsize=(max(16, len(t) / 8) if len(t) < 320 else 40, 4))
    plt.plot(t)
    plt.title(title)
    plt.xlabel("Time")
    plt.ylabel("Neuron's activation")
    return _save(fig, path)


@torch.no_grad()
def plot_example(model, image: torch.Tensor, label: int, out_dir: str,
                 generator: torch.Generator = None) -> List[str]:
    """The seed's pictures for one example: the input, each layer's inner states and outputs over
    time, the most excited hidden neuron, and the label's output neuron."""
    model.eval()
    x = image.unsqueeze(0).to(model.layer1.fc.weight.device)
    _, (s1, o1, s2, o2) = model.forward_through_time(x, generator=generator)
    layers = [(s1[:, 0], o1[:, 0]), (s2[:, 0], o2[:, 0])]
    paths = [plot_input(image, label, os.path.join(out_dir, "input.png"))]
    for i, (states, outputs) in enumerate(layers):
        paths.append(plot_layer(states, f"Inner state values of neurons for layer {i}",
                                os.path.join(out_dir, f"layer{i}_states.png")))
        paths.append(plot_layer(outputs, f"Output spikes (activation) values of neurons for layer {i}",
                                os.path.join(out_dir, f"layer{i}_outputs.png")))
    excited = int((o1[:, 0] > 0).sum(0).argmax())
    paths.append(plot_neuron(s1[:, 0, excited], f"Inner state values of neuron {excited} of layer 0 "
                             "(the hidden neuron that fired most)",
                             os.path.join(out_dir, "hidden_neuron_states.png")))
    paths.append(plot_neuron(o1[:, 0, excited], f"Output spikes (activation) values of neuron {excited} of layer 0",
                             os.path.join(out_dir, "hidden_neuron_outputs.png")))
    paths.append(plot_neuron(s2[:, 0, label], f"Inner state values of output neuron {label} (the label) of layer 1",
                             os.path.join(out_dir, "label_neuron_states.png")))
    paths.append(plot_neuron(o2[:, 0, label], f"Output spikes (activation) values of output neuron {label} of layer 1",
                             os.path.join(out_dir, "label_neuron_outputs.png")))
    return paths


def plot_training_curves(histories: Dict[str, List[dict]], path: str) -> str:
    """Per-epoch train/test loss and test accuracy of each model."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{name} train")
        ax1.plot(epochs, [h["test_loss"] for h in history], marker="s", linestyle="--", label=f"{name} test")
        ax2.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o", label=name)
    ax1.set(xlabel="epoch", ylabel="NLL loss", title="Loss")
    ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    return _save(fig, path)
