"""Learning from a teacher's whole next-token distribution (soft targets), beside the text.

Hinton et al. (2015): the student minimises a mix of the usual cross-entropy on the text and the
KL divergence from the teacher's distribution at each position, both softened by a temperature
T (the KL term scaled by T² so its gradients keep their size). A position of real text then
carries the teacher's view of every possible next token, not only the one that was written.
The teacher must share the student's vocabulary: a llama2.c model converted with
`model.training.teacher` shares it with a student trained on that tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, Trainer

from model.training.corpus import IGNORE_INDEX
from model.training.errors import TrainingError


def load_teacher(path: str | Path, student_tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The teacher, frozen; refused unless its tokenizer encodes exactly as the student's."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"Cannot load the teacher in `{path}`: {exc}") from exc
    if tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise TrainingError(
            f"The teacher in `{path}` has another vocabulary than the student; soft targets need the same "
            "tokens (train the student with --tokenizer pointing at the teacher)."
        )
    return teacher.eval().requires_grad_(False)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · KL(teacher ‖ student) per predicted position, averaged over the positions that have a label."""
    keep = labels[:, 1:] != IGNORE_INDEX
    student = student_logits[:, :-1][keep].float() / temperature
    teacher = teacher_logits[:, :-1][keep].float() / temperature
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
    return kl * temperature**2


class DistillationTrainer(Trainer):
    """`Trainer` whose loss mixes the text's cross-entropy with the teacher's soft targets."""

    def __init__(self, *args, teacher: PreTrainedModel, weight: float, temperature: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device)
        self.weight = weight
        self.temperature = temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        hard = outputs.loss
        if not model.training:
            # Evaluation reports the plain loss on the text, comparable with any other run.
            return (hard, outputs) if return_outputs else hard
        with torch.no_grad():
            teacher_logits = self.teacher(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
            ).logits
        soft = distillation_loss(outputs.logits, teacher_logits, inputs["labels"], self.temperature)
        loss = (1 - self.weight) * hard + self.weight * soft
        return (loss, outputs) if return_outputs else loss
