"""Small random-init backbones for code-path tests (no pretrained T5/GPT weights exist offline)."""

import torch
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          T5Config, T5ForConditionalGeneration)


def tiny_bert(layers: int = 2, hidden: int = 32) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                                intermediate_size=2 * hidden, max_position_embeddings=64))


def tiny_t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_decoder_layers=3, num_heads=4, decoder_start_token_id=0,
                                               pad_token_id=0, eos_token_id=1))


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=1, eos_token_id=1))


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=1,
                                        pad_token_id=0))


# With a real tokenizer's vocabulary (MiniLM's: [CLS] 101, [SEP] 102), for runs through `readapt train`.
def tiny_t5_config(vocab: int) -> T5Config:
    return T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=102)


def tiny_gpt2_config(vocab: int) -> GPT2Config:
    return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=101,
                      eos_token_id=102)
