"""optimize_model on HuggingFace transformers (random-init, built from configs) with dict and string inputs."""

from __future__ import annotations

import pytest
import torch
import transformers  # the dev extra installs it: a missing one is a failure, not a skip

from orchestrator.api.compilers import only
from speedster import load_model, optimize_model

pytestmark = pytest.mark.slow
RUN = {"sandbox": "local", "measure_s": 0.2, "quiet": True}
ONLY_ORT = only("onnxruntime")
ONLY_OPENVINO = only("openvino")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "model", "runs", "fast", "on", "every", "device",
         "speed", "##ster", "optim", "##ize", "token", "##s", "hello", "world"]


@pytest.fixture(scope="module")
def tokenizer():
    """A real WordPiece tokenizer over a tiny vocabulary (nothing downloaded)."""
    return transformers.BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)})


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


def assert_same(optimized, original, tolerance=1e-3):
    assert type(optimized) is type(original) and list(optimized.keys()) == list(original.keys())
    for key in original.keys():
        assert float((optimized[key] - original[key]).abs().max()) < tolerance, key


def test_bert_with_dict_inputs(bert, tokenizer, tmp_path):
    sentences = ["the model runs fast", "hello world on every device"]
    data = [tokenizer(s, return_tensors="pt", padding="max_length", max_length=12) for s in sentences]
    optimized = optimize_model(bert, data, ignore_compilers=ONLY_ORT, **RUN)
    assert optimized.backend == "onnxruntime"
    encoded = tokenizer("speedster optimize tokens", return_tensors="pt", padding="max_length", max_length=12)
    with torch.inference_mode():
        expected = bert(**encoded)
    assert_same(optimized(**encoded), expected)
    loaded = load_model(optimized.save(tmp_path / "bert"))
    assert_same(loaded(**encoded), expected)


def test_strings_with_a_tokenizer_and_inferred_dynamic_axes(bert, tokenizer):
    sentences = ["hello world", "the model runs fast on every device", "speedster"]
    optimized = optimize_model(bert, sentences, tokenizer=tokenizer, tokenizer_args={"truncation": True},
                               ignore_compilers=ONLY_OPENVINO, **RUN)
    assert optimized.backend == "openvino"
    sequence = optimized.meta["dynamic_axes"]["input_ids"]["1"]  # the lengths vary: [CLS] speed ##ster [SEP] ...
    assert (sequence["min"], sequence["max"]) == (4, 9)
    for text in ("the model", "optimize every token on the device"):
        encoded = tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            assert_same(optimized(**encoded), bert(**encoded))


def test_dynamic_batch_and_sequence_axes(bert, tokenizer):
    axis = {0: {"name": "batch", "min_val": 1, "opt_val": 2, "max_val": 4},
            1: {"name": "sequence", "min_val": 2, "opt_val": 8, "max_val": 32}}
    data = [tokenizer(["the model runs", "hello world on every device"], return_tensors="pt", padding=True)]
    optimized = optimize_model(bert, data, dynamic_info={"inputs": [axis] * 3, "outputs": [{0: "batch"}]},
                               ignore_compilers=ONLY_ORT, **RUN)
    assert len(optimized.summary["latency_by_shape"]) == 3
    for batch, length in ((1, 2), (3, 17), (4, 32)):
        ids = torch.randint(5, len(VOCAB), (batch, length))
        inputs = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}
        with torch.inference_mode():
            assert_same(optimized(**inputs), bert(**inputs))
    with pytest.raises(ValueError, match=r"has shape \(1, 40\); this optimized model takes 1..4x2..32"):
        optimized(input_ids=torch.ones(1, 40, dtype=torch.long), token_type_ids=torch.zeros(1, 40, dtype=torch.long),
                  attention_mask=torch.ones(1, 40, dtype=torch.long))


def test_t5_encoder_decoder_with_dict_inputs():
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                   decoder_start_token_id=0)
    t5 = transformers.T5ForConditionalGeneration(config).eval()
    attention = t5.config._attn_implementation
    data = [{"input_ids": torch.randint(1, 64, (1, 10)), "attention_mask": torch.ones(1, 10, dtype=torch.long),
             "decoder_input_ids": torch.randint(1, 64, (1, 4))} for _ in range(2)]
    optimized = optimize_model(t5, data, ignore_compilers=ONLY_ORT, **RUN)
    assert optimized.backend == "onnxruntime" and t5.config._attn_implementation == attention  # left as it was
    with torch.inference_mode():
        expected = t5(**data[0], use_cache=False)
    out = optimized(**data[0])
    assert list(out.keys()) == ["logits", "encoder_last_hidden_state"]
    assert_same(out, expected)


def test_decoder_only_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0,
                                     eos_token_id=0)
    gpt2 = transformers.GPT2LMHeadModel(config).eval()
    data = [{"input_ids": torch.randint(1, 64, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}]
    optimized = optimize_model(gpt2, data, ignore_compilers=ONLY_OPENVINO, **RUN)
    with torch.inference_mode():
        assert_same(optimized(**data[0]), gpt2(**data[0], use_cache=False))
