"""The TinyStories corpus: capitals and story boundaries given back, the valid file kept out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.training.corpus import split_documents
from model.training.errors import TrainingError
from model.training.heldout import word_ngrams
from model.training.story_split import _readings, candidate_chunks, join_stories, story_margins
from model.training.teacher import convert
from model.training.tinystories import overlap_end, prepare_tinystories, story_starts
from model.training.truecase import Truecaser, fix_mojibake, word_accuracy
from tests.tiny_llama2c import build_tiny_llama2c

CASED_STORIES = [
    "Once upon a time, there was a girl named Lily. She had a red ball.\n"
    'Lily said, "Mom, I want to play!" Her mom smiled and said, "Yes, Lily."',
    "One day, Tom went to the park with his dad. Tom saw a dog named Spot.\n"
    'Spot ran to Tom. "Hi, Spot!" said Tom. Dad laughed. I think Tom was happy.',
    "Lily and Tom played in the sun. Lily threw the ball and Tom ran after it.\n"
    "Then Mom called them home. They ate soup and went to bed.",
    "There was a big tree in the park. A bird named Bob lived in the tree.\n"
    "Bob sang every day. Lily liked to hear Bob sing, and so did Tom.",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama2c")
    checkpoint, tokenizer = build_tiny_llama2c(folder)
    return convert(checkpoint, tokenizer, folder / "teacher")


def test_mojibake_is_undone() -> None:
    text = "“Hi,” she said — it’s Tom’s ball… ¡Olé!"
    garbled = text.encode("utf-8").decode("cp1252", errors="ignore").lower()
    assert garbled != text.lower()
    assert fix_mojibake(garbled) == text.lower()


def test_truecaser_gives_back_sentence_starts_names_i_and_places() -> None:
    caser = Truecaser(min_count=1).learn(CASED_STORIES)
    lowered = 'then lily said, "mom, i saw spot!" her mom smiled. tom said i was right.'
    assert caser.apply(lowered) == 'Then Lily said, "Mom, I saw Spot!" Her mom smiled. Tom said I was right.'


def test_truecaser_learns_how_a_word_goes_on_after_a_quotation() -> None:
    caser = Truecaser(min_count=1).learn(['"Hi!" said Tom. "Yes!" she said.', '"Go!" said Lily.'])
    assert caser.apply('"stop!" said tom.') == '"Stop!" said Tom.'


def test_truecaser_capitalises_an_unknown_word_where_new_words_were_names() -> None:
    """Words seen once after "named" were names; an unseen one there is taken as a name, in the whole story."""
    caser = Truecaser(min_count=1).learn(
        ["A cat named Tiger ran.", "A dog named Rex sat.", "A bird named Kiwi sang.", "The big dog sat."]
    )
    assert caser.apply("a fox named zed ran. then zed sat.") == "A fox named Zed ran. Then Zed sat."
    assert caser.apply("a fox saw zed.") == "A fox saw zed."


def test_word_accuracy_counts_words_written_exactly() -> None:
    assert word_accuracy("The Cat sat.", "The cat sat.") == (2, 3)
    with pytest.raises(ValueError):
        word_accuracy("a b", "a b c")


def lowered_file(stories: list[str]) -> str:
    """The lower-cased file's layout: blank lines between paragraphs, a line break between stories."""
    return "\n".join(story.lower().replace("\n", "\n\n") for story in stories) + "\n"


def test_candidate_breaks_are_single_line_breaks_between_text() -> None:
    text = lowered_file(CASED_STORIES[:2]) + "a story with\nits own single breaks.  \n \nand odd spaces.\n"
    chunks = candidate_chunks(text)
    assert chunks[0] == CASED_STORIES[0].lower()
    assert chunks[1] == CASED_STORIES[1].lower()
    assert chunks[2:] == ["a story with", "its own single breaks.\nand odd spaces."]
    assert join_stories(chunks, [True, True, False]) == [
        *chunks[:2],
        "a story with\nits own single breaks.\nand odd spaces.",
    ]


def test_story_margins_are_the_teachers_log_odds_and_do_not_depend_on_the_batch(teacher: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    chunks = ["once there was a day.", "the day was there.", "a day, once!", "there was a day."]
    batched = story_margins(model, tokenizer, chunks, 1, batch_size=8)
    one_by_one = story_margins(model, tokenizer, chunks, 1, batch_size=2)
    assert batched == pytest.approx(one_by_one, abs=1e-4)

    new, same = _readings(tokenizer, chunks[0], chunks[1], 1, 64)
    assert new.ids[new.scored_from] == 1 and tokenizer.decode(same.ids[same.scored_from : same.scored_from + 1]) == "\n"

    def log_p(ids: list[int], start: int) -> float:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        return float(logp[start - 1 :].sum())

    assert batched[0] == pytest.approx(log_p(new.ids, new.scored_from) - log_p(same.ids, same.scored_from), abs=1e-4)


FRED = (
    "A frog named Fred sat on a log by the pond. Fred liked to jump into the cool water every day. "
    "One day the water was cold, so Fred sat in the sun and sang a song to the fish."
)
SUE = (
    "The sun was hot and the grass was green. Sue and her dog Max went for a long walk by the river. "
    "They saw a boat and a duck, and then they went home to eat cake with Mom."
)


def write_inputs(folder: Path) -> dict[str, Path]:
    """Sue's story shares 13 words with the valid file; Fred's is only in the lower-cased file."""
    valid_story = "the grass was green. sue and her dog max went for a long walk by the river and sang"
    paths = {name: folder / f"{name}.txt" for name in ("cased", "lower", "valid")}
    cased = [*CASED_STORIES, SUE]
    paths["cased"].write_text("\n<|endoftext|>\n".join([*cased, "A story cut off in the mid"]) + "\n")
    paths["lower"].write_text(lowered_file([*cased, FRED]).replace('"', "â€œ", 1))
    paths["valid"].write_text(f"Some words.\n\n{valid_story.capitalize()}.\n")
    return paths


def test_prepare_keeps_every_13_word_sequence_of_the_valid_file_out(teacher: Path, tmp_path: Path) -> None:
    paths = write_inputs(tmp_path)
    out = tmp_path / "corpus"
    report = prepare_tinystories(paths["cased"], paths["lower"], paths["valid"], teacher, [], out, eval_every=1000)
    train = split_documents((out / "train.txt").read_text())
    held = word_ngrams(paths["valid"].read_text())
    assert not any(word_ngrams(story) & held for story in train)
    # Sue's story shares a sequence with the valid file: it is left out, and the card says so.
    assert not any("Sue" in story for story in train)
    assert report.dropped["cased: shares a 13-word sequence with the valid file"] == 1
    # The cased file's cut-off last story is dropped; its complete ones are all there.
    assert all(story in train for story in CASED_STORIES)
    assert not any("cut off" in story for story in train)
    # Fred's story came from the lower-cased part only, whole, with its sentence starts capitalised.
    (fred,) = [story for story in train if story.lower() == FRED.lower()]
    assert fred.startswith("A frog") and ". One day" in fred
    card = (out / "DATA_CARD.md").read_text()
    assert "Capitals given back" in card and "13-word" in card


def test_the_overlap_is_found_or_the_files_are_refused(tmp_path: Path) -> None:
    text = fix_mojibake(lowered_file(CASED_STORIES))
    assert text[: overlap_end(text, CASED_STORIES)].rstrip().endswith("and so did tom.")
    with pytest.raises(TrainingError, match="wrong files"):
        overlap_end("something else entirely", CASED_STORIES)


def test_story_starts_are_word_offsets() -> None:
    assert story_starts(["a b", "c", "d e f"]) == {0, 2, 3}


def write_corpus(folder: Path, stories: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in ("train.txt", "eval.txt"):
        (folder / name).write_text("".join(f"{s} ({name})\n<|endoftext|>\n" for s in stories))
    return folder


def test_mixture_takes_a_share_of_each_part_the_same_way_every_time(tmp_path: Path) -> None:
    from model.training.mixture import Part, mix

    tales = write_corpus(tmp_path / "tales", [f"Tale number {i}." for i in range(40)])
    tiny = write_corpus(tmp_path / "tiny", [f"Tiny story {i}." for i in range(400)])
    counts = mix([Part.parse(str(tales)), Part.parse(f"{tiny}:0.25")], tmp_path / "mix")
    train = split_documents((tmp_path / "mix" / "train.txt").read_text())
    assert sum("Tale" in d for d in train) == 40
    assert 70 <= sum("Tiny" in d for d in train) <= 130 and counts[str(tiny)]["train.txt"] == len(train) - 40
    assert {d.split(" (")[1] for d in train} == {"train.txt)"}
    again = tmp_path / "again"
    mix([Part.parse(f"{tiny}:0.25"), Part.parse(str(tales))], again)
    assert (again / "train.txt").read_bytes() == (tmp_path / "mix" / "train.txt").read_bytes()
    for bad in (f"{tiny}:0", f"{tiny}:1.5", f"{tiny}:half"):
        with pytest.raises(TrainingError):
            Part.parse(bad)


def test_the_two_stages_run_from_a_pretrained_gpt2_too(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`--base gpt2` in docs/model.md: pretrain on stories, then fine-tune on the mixture, from any GPT-2."""
    from model.loading import load_model
    from model.training.mixture import Part, mix
    from model.training.train import main as train_main

    stories = [f"Once upon a time the fox number {i} met a crow. The crow sang." for i in range(30)]
    tiny = write_corpus(tmp_path / "tiny", stories)
    tales = write_corpus(tmp_path / "tales", [f"The king had {i} sons, and the youngest was wise." for i in range(30)])
    mix([Part.parse(str(tales)), Part.parse(f"{tiny}:0.5")], tmp_path / "mix")
    common = ["--max-steps", "3", "--batch-size", "2", "--block-size", "32", "--precision", "fp32", "--patience", "0"]
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    assert (
        train_main(
            [
                "--base",
                str(tiny_model_dir),
                "--train",
                str(tiny / "train.txt"),
                "--eval",
                str(tiny / "eval.txt"),
                "--out",
                str(stage1),
                *common,
            ]
        )
        == 0
    )
    assert (
        train_main(
            [
                "--base",
                str(stage1),
                "--train",
                str(tmp_path / "mix" / "train.txt"),
                "--eval",
                str(tmp_path / "mix" / "eval.txt"),
                "--out",
                str(stage2),
                *common,
            ]
        )
        == 0
    )
    loaded = load_model(stage2, device="cpu", dtype="float32")
    assert loaded.model.config.model_type == "gpt2"
    assert f"fine-tuned from `{stage1}`" in (stage2 / "README.md").read_text()
