"""Test models built in code with seeded random weights (nothing downloaded), saved as torch.export or TorchScript."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from speedster_run.shared.torch_io import INPUTS_FILE

FORMATS = ("torch_export", "torchscript")
SEED = 0


def _nn() -> Any:
    import torch.nn as nn

    return nn


def _conv_bn(nn: Any, cin: int, cout: int, kernel: int, stride: int = 1) -> list[Any]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]


def _block_class(bottleneck: bool) -> type:
    """torchvision's BasicBlock (two 3x3 convs) or Bottleneck (1x1, 3x3 with the stride, 1x1 expanding by 4)."""
    nn = _nn()

    class Block(nn.Module):
        expansion = 4 if bottleneck else 1

        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * self.expansion
            if bottleneck:
                self.conv1, self.bn1 = _conv_bn(nn, cin, width, 1)
                self.conv2, self.bn2 = _conv_bn(nn, width, width, 3, stride)
                self.conv3, self.bn3 = _conv_bn(nn, width, cout, 1)
            else:
                self.conv1, self.bn1 = _conv_bn(nn, cin, width, 3, stride)
                self.conv2, self.bn2 = _conv_bn(nn, width, width, 3)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = nn.Sequential(*_conv_bn(nn, cin, cout, 1, stride)) if stride != 1 or cin != cout else None

        def forward(self, x: Any) -> Any:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if bottleneck:
                out = self.bn3(self.conv3(self.relu(out)))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    Block.__name__ = "Bottleneck" if bottleneck else "BasicBlock"
    return Block


def resnet(layers: tuple[int, int, int, int], bottleneck: bool, num_classes: int = 1000) -> Any:
    """torchvision's ResNet: same modules, same names, same parameter count."""
    nn = _nn()
    block = _block_class(bottleneck)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = _conv_bn(nn, 3, 64, 7, 2)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            cin = 64
            for index, (count, width) in enumerate(zip(layers, (64, 128, 256, 512))):
                blocks = []
                for i in range(count):
                    blocks.append(block(cin, width, 2 if i == 0 and index > 0 else 1))
                    cin = width * block.expansion
                setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(cin, num_classes)
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, input: Any) -> Any:  # named "input": the name the exported model's input takes
            x = self.maxpool(self.relu(self.bn1(self.conv1(input))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet()


def tiny_cnn() -> Any:
    """Three convs, batch norm and a Linear head on 3x32x32: milliseconds per run, for tests."""
    nn = _nn()

    class TinyCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *_conv_bn(nn, 3, 8, 3, 2), nn.ReLU(), *_conv_bn(nn, 8, 16, 3, 2), nn.ReLU(),
                *_conv_bn(nn, 16, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)))
            self.fc = nn.Linear(16, 10)

        def forward(self, input: Any) -> Any:
            return self.fc(self.features(input).flatten(1))

    return TinyCNN()


def mlp() -> Any:
    """Three Linear layers on a 256-vector: the dynamic-int8 showcase."""
    nn = _nn()

    class MLP(nn.Sequential):
        def forward(self, input: Any) -> Any:
            return super().forward(input)

    return MLP(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def bert_encoder(layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072, vocab: int = 30522,
                 max_positions: int = 512) -> Any:
    """BERT-base's encoder (post-norm layers, GELU, learned positions) on token ids, written with plain torch layers
    so that nothing beyond torch is needed to build it; returns the last hidden states."""
    import torch

    nn = _nn()

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
            self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))

        def forward(self, x: Any) -> Any:
            batch, length, _ = x.shape
            q, k, v = self.qkv(x).view(batch, length, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            attention = torch.softmax(q @ k.transpose(-1, -2) * (hidden // heads) ** -0.5, dim=-1) @ v
            x = self.norm1(x + self.out(attention.transpose(1, 2).reshape(batch, length, hidden)))
            return self.norm2(x + self.ffn(x))

    class BertEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words, self.positions = nn.Embedding(vocab, hidden), nn.Embedding(max_positions, hidden)
            self.norm = nn.LayerNorm(hidden)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids: Any) -> Any:
            x = self.norm(self.words(input_ids) + self.positions(torch.arange(input_ids.shape[1])))
            for layer in self.layers:
                x = layer(x)
            return x

    return BertEncoder()


# name -> (constructor, input shape without the batch dim, input name, input dtype)
MODELS: dict[str, tuple[Callable[[], Any], tuple[int, ...], str, str]] = {
    "resnet18": (lambda: resnet((2, 2, 2, 2), bottleneck=False), (3, 224, 224), "input", "float32"),
    "resnet50": (lambda: resnet((3, 4, 6, 3), bottleneck=True), (3, 224, 224), "input", "float32"),
    "tiny_cnn": (tiny_cnn, (3, 32, 32), "input", "float32"),
    "mlp": (mlp, (256,), "input", "float32"),
    "bert-base": (bert_encoder, (128,), "input_ids", "int64"),  # sequence length 128
}


def _calibrate_batch_norm(model: Any, shape: tuple[int, ...]) -> None:
    """Gives BatchNorm layers the running statistics of random data, so that eval outputs are not degenerate."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration passes
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, *shape))
    for m in norms:
        m.momentum = 0.1


def build(name: str, batch: int = 1) -> tuple[Any, tuple[Any, ...]]:
    """The model in eval mode (seeded weights) and example inputs of the given batch size."""
    import torch

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    constructor, shape, _, dtype = MODELS[name]
    torch.manual_seed(SEED)
    model = constructor()
    if dtype == "int64":  # token ids
        model.eval()
        return model, (torch.randint(0, 1000, (batch, *shape)),)
    _calibrate_batch_norm(model, shape)  # before drawing the example: the weights must not depend on the batch size
    model.eval()
    return model, (torch.randn(batch, *shape),)


def save(name: str, path: Path, fmt: str = "torch_export", batch: int = 1, dynamic_batch: bool = False) -> Path:
    """Writes the model as a torch.export .pt2 or a TorchScript file, with its input specs stored inside."""
    import torch

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    model, example = build(name, max(batch, 2) if dynamic_batch else batch)  # export specialises a size-1 dim
    shape = [None if dynamic_batch else batch, *example[0].shape[1:]]
    dims = ["batch" if dynamic_batch else ""] + [""] * (len(shape) - 1)
    _, _, input_name, dtype = MODELS[name]
    extra = {INPUTS_FILE: json.dumps([{"name": input_name, "dtype": dtype, "shape": shape, "dim_names": dims}])}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if fmt == "torch_export":
            dynamic = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            program = torch.export.export(model, example, dynamic_shapes=dynamic)
            with open(path, "wb") as file:  # a file object: torch warns about names not ending in .pt2
                torch.export.save(program, file, extra_files=extra)
        else:
            import warnings

            with warnings.catch_warnings():  # torch.jit.trace is deprecated; still the way to write TorchScript
                warnings.simplefilter("ignore")
                torch.jit.save(torch.jit.trace(model, example), str(path), _extra_files=extra)
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


# The format an output file's suffix asks for; any other suffix takes torch.export unless --format says.
SUFFIX_FORMATS = {".pt2": "torch_export", ".torchscript": "torchscript", ".ts": "torchscript", ".pt": "torchscript"}


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="speedster-run example-model", description=__doc__)
    parser.add_argument("name", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("output", type=Path,
                        help="where to write it; the suffix picks the format: .pt2 a torch.export archive, "
                             ".torchscript, .ts or .pt a TorchScript file (anything else: torch.export)")
    parser.add_argument("--format", default=None, choices=FORMATS, help="the format, whatever the suffix says")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch dim named 'batch'")
    args = parser.parse_args(argv)
    fmt = args.format or SUFFIX_FORMATS.get(args.output.suffix, "torch_export")
    try:
        print(save(args.name, args.output, fmt, args.batch, args.dynamic_batch))
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
