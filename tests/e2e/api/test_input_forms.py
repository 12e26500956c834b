"""Speedster's input_data forms, dynamic_info, compiler names and output structures: parsing only, no run."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from orchestrator.api import compilers, dynamic, structure
from orchestrator.api.input_data import InputDataError, check_arity, normalize


def test_tuples_with_and_without_labels_and_several_inputs():
    x, y = torch.randn(4, 3), torch.randn(4, 5)
    labelled = normalize([((x, y), torch.tensor([0, 1, 0, 1]))] * 3, ["a", "b"])
    assert labelled.names == ["a", "b"] and labelled.framework == "torch" and not labelled.as_keywords
    assert len(labelled.arrays) == 3 and labelled.arrays[0]["b"].shape == (4, 5)
    assert labelled.labels[0].tolist() == [0, 1, 0, 1]
    bare = normalize([((x,),)] * 2, ["input"])
    assert bare.labels == [None, None] and bare.names == ["input"]


def test_dataloader_forms():
    from torch.utils.data import DataLoader, TensorDataset

    images, targets = torch.randn(8, 3, 4, 4), torch.arange(8)
    pairs = normalize(DataLoader(TensorDataset(images, targets), batch_size=4), ["x"])  # (inputs..., label)
    assert [a["x"].shape for a in pairs.arrays] == [(4, 3, 4, 4)] * 2 and pairs.labels[1].tolist() == [4, 5, 6, 7]
    plain = normalize(DataLoader(images, batch_size=2), ["x"])  # bare tensors
    assert len(plain.arrays) == 4 and plain.labels == [None] * 4
    nested = normalize(DataLoader([((images[i], images[i]), targets[i]) for i in range(4)], batch_size=2),
                       ["a", "b"])  # ((inputs...), label)
    assert nested.names == ["a", "b"] and nested.arrays[0]["b"].shape == (2, 3, 4, 4)


def test_dicts_strings_and_numpy():
    encoded = [{"input_ids": torch.ones(1, 5, dtype=torch.long), "attention_mask": torch.ones(1, 5, dtype=torch.long)}]
    hf = normalize(encoded * 2)
    assert hf.as_keywords and hf.names == ["input_ids", "attention_mask"] and hf.arrays[0]["input_ids"].dtype == np.int64

    def tokenizer(text, **kwargs):
        assert kwargs["return_tensors"] == "pt" and kwargs["padding"] == "max_length"
        return {"input_ids": torch.tensor([[len(w) for w in text.split()]])}

    strings = normalize(["a bb", "ccc d"], tokenizer=tokenizer, tokenizer_args={"padding": "max_length"})
    assert strings.arrays[1]["input_ids"].tolist() == [[3, 1]]
    onnx = normalize([((np.zeros((1, 4), np.float32),), np.array([1]))])
    assert onnx.framework == "numpy" and onnx.names == ["input_0"]


@pytest.mark.parametrize("data, message", [
    ([], "input_data is empty"),
    (torch.randn(1, 3), "expected a list of samples"),
    ("just a string", "expected a list of samples"),
    (["text"], "pass tokenizer="),
    ([((torch.randn(1, 3),),), 5], r"input_data\[1\] is int; expected \(\(input, \.\.\.\), label\)"),
    ([(([1.0, 2.0],),)], r"input 'x' is list; expected a torch tensor"),
    ([((torch.randn(1, 3),),), ((torch.randn(1, 3), torch.randn(1, 3)),)], r"has 2 inputs; expected 1 \(x\)"),
    ([((torch.randn(1, 3, 8, 8),),), ((torch.randn(3, 8, 8),),)],
     r"input 'x' is float32 of shape \(3, 8, 8\); expected float32 with 4 dims, like input_data\[0\]'s \(1, 3, 8, 8\)"),
    ([((torch.randn(1, 3),),), ((torch.ones(1, 3, dtype=torch.long),),)], r"is int64 .* expected float32"),
    ([((torch.randn(1, 3),), 0, 1)], "has 3 elements; expected"),
    ([{"input_ids": torch.ones(1, 2)}, {"ids": torch.ones(1, 2)}], "has keys ids; expected input_ids"),
    ([{"input_ids": torch.ones(1, 2)}, ((torch.ones(1, 2),),)], "mixes dict and tuple samples"),
    ([((torch.randn(1, 3),),), ((torch.randn(1, 3), "x"),)], "has 2 inputs"),
])
def test_malformed_input_data(data, message):
    with pytest.raises(InputDataError, match=message):
        normalize(data, ["x"])


def test_arity_against_the_models_forward():
    samples = normalize([((torch.randn(1, 3),),)], ["x"])
    with pytest.raises(InputDataError, match=r"have 1 input\(s\) \(x=\(1, 3\)\); the model's forward takes x, y"):
        check_arity(samples, ["x", "y"], ["x", "y"])
    keywords = normalize([{"input_ids": torch.ones(1, 2), "pixels": torch.ones(1, 2)}])
    with pytest.raises(InputDataError, match="the model takes no pixels"):
        check_arity(keywords, ["input_ids"], ["input_ids", "attention_mask"])
    check_arity(keywords, ["input_ids"], None)  # **kwargs: anything goes


def test_dynamic_info_given_inferred_and_checked():
    samples = normalize([((torch.randn(2, 7), torch.randn(2, 7)),), ((torch.randn(4, 3), torch.randn(4, 3)),)],
                        ["a", "b"])
    given = dynamic.parse({"inputs": [{0: {"name": "batch", "min_val": 1, "opt_val": 2, "max_val": 8},
                                       1: {"name": "seq", "min_val": 1, "opt_val": 7, "max_val": 16}},
                                      {0: "batch", 1: "seq"}], "outputs": [{0: "batch"}]}, samples)
    assert given["a"][0] == dynamic.Axis("batch", 1, 2, 8) and given["b"][1] == dynamic.Axis("seq", 3, 7, 7)
    inferred = dynamic.infer(samples)
    assert inferred["a"][0].name == inferred["b"][0].name == "batch" and inferred["a"][1].name == "dim_1"
    assert (inferred["a"][1].min, inferred["a"][1].max) == (3, 7)
    small = dynamic.resized(samples.arrays[0], given, "max")
    assert small["a"].shape == (8, 16) and np.array_equal(small["a"][2:4, :7], samples.arrays[0]["a"])
    with pytest.raises(InputDataError, match="declare axis 0 in dynamic_info"):
        dynamic.check_consistent({}, samples)
    with pytest.raises(InputDataError, match="axis 5 does not exist"):
        dynamic.parse({"inputs": [{5: "batch"}]}, samples)
    with pytest.raises(InputDataError, match="min_val <= opt_val <= max_val"):
        dynamic.parse({"inputs": [{0: {"name": "b", "min_val": 4, "opt_val": 2, "max_val": 8}}]}, samples)
    with pytest.raises(InputDataError, match="ranges 1..3, but input_data has size 4"):
        dynamic.parse({"inputs": [{0: {"name": "b", "min_val": 1, "opt_val": 2, "max_val": 3}}]}, samples)
    assert dynamic.from_json(dynamic.to_json(given)) == given


def test_compiler_names():
    assert ("torch", "inductor") in compilers.excluded(["torch_dynamo"])
    assert compilers.excluded(["deepsparse"], ["sparseml"]) == ()
    with pytest.raises(ValueError, match="unknown name 'tensorrt'; valid names: onnxruntime, openvino, tvm"):
        compilers.excluded(["tensorrt"])
    with pytest.raises(ValueError, match="ignore_compressors: unknown name 'quantization'"):
        compilers.excluded([], ["quantization"])


def test_output_structure_round_trip():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    value = BaseModelOutputWithPooling(last_hidden_state=torch.ones(1, 2), pooler_output=torch.zeros(1))
    leaves, shape = structure.flatten((value, [torch.ones(3)], {"k": torch.ones(2)}))
    assert len(leaves) == 4
    rebuilt = structure.unflatten(shape, leaves)
    assert type(rebuilt[0]) is BaseModelOutputWithPooling and list(rebuilt[0].keys()) == ["last_hidden_state",
                                                                                          "pooler_output"]
    assert isinstance(rebuilt[1], list) and torch.equal(rebuilt[2]["k"], torch.ones(2))
    with pytest.raises(ValueError, match="not from an allowed library"):
        structure.unflatten({"keys": [], "items": [], "class": "os:system"}, [])


def test_threads_and_devices_as_speedster_spells_them(monkeypatch):
    from orchestrator.api.optimize import _device, _threads

    monkeypatch.delenv("SPEEDSTER_RUN_THREADS_PER_MODEL", raising=False)
    monkeypatch.setenv("NEBULLVM_THREADS_PER_MODEL", "1")
    assert _threads() == 1
    monkeypatch.setenv("NEBULLVM_THREADS_PER_MODEL", str(len(os.sched_getaffinity(0)) + 1))
    with pytest.raises(ValueError, match="cores are usable here"):
        _threads()
    monkeypatch.setenv("SPEEDSTER_RUN_THREADS_PER_MODEL", "1")
    assert _threads() == 1
    monkeypatch.setenv("SPEEDSTER_RUN_THREADS_PER_MODEL", "two")
    with pytest.raises(ValueError, match="expected a whole number"):
        _threads()
    assert _device("gpu:1") == ("gpu:1", "cuda:1") and _device("cuda") == ("cuda:0", "cuda:0")
    assert _device(None) == (("cuda:0", "cuda:0") if torch.cuda.is_available() else ("cpu", "cpu"))
    assert _device("neuron:1") == ("neuron:1", "cpu") and _device("tpu") == ("tpu:0", "cpu")


def test_onnx_input_data_of_another_dtype_is_refused_naming_it(tmp_path):
    from speedster import optimize_model
    from tests.conftest import mlp_onnx

    path = mlp_onnx(tmp_path / "mlp.onnx")
    with pytest.raises(InputDataError, match=r"input 'x' is float64, the model takes float32"):
        optimize_model(str(path), [((np.zeros((1, 256)),),)], sandbox="local", quiet=True)
