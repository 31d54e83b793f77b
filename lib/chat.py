"""How prompts look: one chat template and one instruction, shared by every stage.

Training data, teachers, the sampler and evaluation all build prompts here, so a model is
always asked the way it was trained. The template follows Phi-4-mini's turn markers
(``<|user|>…<|end|><|assistant|>…<|end|>``); ``<|end|>`` closes a turn and is the EOS that
generation stops on. The ``{% generation %}`` markers let TRL compute assistant-only loss.
"""
from __future__ import annotations

# The instruction the paper's later evaluation harness appends (the paper, Evaluation).
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
INSTRUCTION_MC = ("Please reason step by step, and put your final choice of one letter "
                  "from A/B/C/D within \\boxed{}.")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
END_OF_TURN = "<|end|>"

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}<|system|>{{ message['content'] }}<|end|>"
    "{%- elif message['role'] == 'user' -%}<|user|>{{ message['content'] }}<|end|>"
    "{%- elif message['role'] == 'assistant' -%}<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def user_content(problem: str, multiple_choice: bool = False) -> str:
    """The user turn: the problem, then the paper's instruction on its own line."""
    return f"{problem.strip()}\n{INSTRUCTION_MC if multiple_choice else INSTRUCTION}"


def prompt_messages(problem: str, multiple_choice: bool = False) -> list[dict]:
    return [{"role": "user", "content": user_content(problem, multiple_choice)}]


def conversation(problem: str, answer_text: str) -> dict:
    """A prompt-completion row in TRL's conversational format."""
    return {"prompt": prompt_messages(problem),
            "completion": [{"role": "assistant", "content": answer_text}]}


def prompt_text(tokenizer, problem: str, multiple_choice: bool = False) -> str:
    """The exact string a model sees before it starts answering."""
    return tokenizer.apply_chat_template(prompt_messages(problem, multiple_choice),
                                         tokenize=False, add_generation_prompt=True)
