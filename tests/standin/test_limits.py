"""Unit tests of the pure limit checks, at each limit and one past it."""

from __future__ import annotations

import discord

from playground.standin import limits


def _row(buttons: int) -> dict:
    return {
        "type": 1,
        "components": [{"type": 2, "style": 1, "custom_id": f"b{i}", "label": "x"} for i in range(buttons)],
    }


def test_content_of_2000_characters_passes_and_2001_is_a_breach():
    assert limits.check_message({"content": "x" * 2000}) == []
    assert limits.check_message({"content": "x" * 2001}) == ["content: 2001 characters, limit 2000"]


def test_embed_title_over_256_characters_is_a_breach():
    assert limits.check_embeds([{"title": "t" * 256}]) == []
    assert limits.check_embeds([{"title": "t" * 257}]) == ["embeds[0].title: 257 characters, limit 256"]


def test_embed_description_over_4096_characters_is_a_breach():
    assert limits.check_embeds([{"description": "d" * 4096}]) == []
    assert limits.check_embeds([{"description": "d" * 4097}]) == ["embeds[0].description: 4097 characters, limit 4096"]


def test_more_than_25_fields_is_a_breach():
    fields = [{"name": "n", "value": "v"}]
    assert limits.check_embeds([{"fields": fields * 25}]) == []
    assert limits.check_embeds([{"fields": fields * 26}]) == ["embeds[0].fields: 26 fields, limit 25"]


def test_field_name_and_value_limits_are_checked():
    breaches = limits.check_embeds([{"fields": [{"name": "n" * 257, "value": "v" * 1025}]}])
    assert breaches == [
        "embeds[0].fields[0].name: 257 characters, limit 256",
        "embeds[0].fields[0].value: 1025 characters, limit 1024",
    ]


def test_footer_and_author_limits_are_checked():
    breaches = limits.check_embeds([{"footer": {"text": "f" * 2049}, "author": {"name": "a" * 257}}])
    assert breaches == [
        "embeds[0].footer.text: 2049 characters, limit 2048",
        "embeds[0].author.name: 257 characters, limit 256",
    ]


def test_6000_characters_across_all_embeds_is_the_total_limit():
    at_limit = [{"description": "d" * 3000}, {"description": "d" * 2990, "title": "t" * 10}]
    assert limits.check_embeds(at_limit) == []
    over = [{"description": "d" * 3000}, {"description": "d" * 3000, "footer": {"text": "f"}}]
    assert limits.check_embeds(over) == ["embeds: 6001 characters in all embeds together, limit 6000"]


def test_more_than_10_embeds_is_a_breach():
    assert limits.check_embeds([{"title": "t"}] * 10) == []
    assert limits.check_embeds([{"title": "t"}] * 11) == ["embeds: 11 embeds, limit 10"]


def test_more_than_5_action_rows_is_a_breach():
    assert limits.check_components([_row(1)] * 5) == []
    assert limits.check_components([_row(1)] * 6) == ["components: 6 action rows, limit 5"]


def test_more_than_5_buttons_in_a_row_is_a_breach():
    assert limits.check_components([_row(5)]) == []
    assert limits.check_components([_row(6)]) == ["components[0].components: 6 buttons in one row, limit 5"]


def test_custom_id_over_100_characters_is_a_breach():
    row = {"type": 1, "components": [{"type": 2, "style": 1, "custom_id": "c" * 101}]}
    assert limits.check_components([row]) == ["components[0].components[0].custom_id: 101 characters, limit 100"]


def test_link_buttons_need_no_custom_id_but_other_buttons_do():
    link = {"type": 2, "style": 5, "url": "https://example.com", "label": "go"}
    plain = {"type": 2, "style": 1, "label": "go"}
    assert limits.check_components([{"type": 1, "components": [link]}]) == []
    assert limits.check_components([{"type": 1, "components": [plain]}]) == [
        "components[0].components[0].custom_id: missing on a non-link button"
    ]


def test_a_button_outside_an_action_row_is_a_breach():
    assert limits.check_components([{"type": 2, "style": 1, "custom_id": "x"}]) == [
        "components[0]: type 2 at top level, must be an action row"
    ]


def test_components_v2_messages_count_all_components_up_to_40():
    rows = [_row(4)] * 8  # 8 rows + 32 buttons = 40
    assert limits.check_message({"flags": limits.IS_COMPONENTS_V2, "components": rows}) == []
    over = limits.check_message({"flags": limits.IS_COMPONENTS_V2, "components": rows + [_row(0)]})
    assert over == ["components: 41 components, limit 40"]


def test_a_discordpy_view_passes():
    view = discord.ui.View()
    for index in range(5):
        view.add_item(discord.ui.Button(label="go", custom_id=f"button-{index}"))
    assert limits.check_components(view.to_components()) == []


def test_files_over_the_size_limit_are_breaches():
    assert limits.check_files([("a.png", 10 * 1024 * 1024)]) == []
    assert limits.check_files([("a.png", 10 * 1024 * 1024 + 1)]) == [
        "files[0]: 'a.png' is 10485761 bytes, limit 10485760"
    ]
    assert limits.check_files([("a.png", 101)], size_limit=100) == ["files[0]: 'a.png' is 101 bytes, limit 100"]


def test_more_than_10_files_is_a_breach():
    assert limits.check_files([("a", 1)] * 11) == ["files: 11 files, limit 10"]


def test_allowed_mentions_none_passes():
    assert limits.check_allowed_mentions({"allowed_mentions": discord.AllowedMentions.none().to_dict()}) == []


def test_missing_allowed_mentions_is_a_breach():
    assert limits.check_allowed_mentions({"content": "hi"}) == [
        "allowed_mentions: missing, so Discord would ping whatever the content mentions"
    ]


def test_each_enabled_mention_is_a_breach():
    payload = {"allowed_mentions": {"parse": ["everyone"], "users": ["1"], "roles": ["2"], "replied_user": True}}
    assert limits.check_allowed_mentions(payload) == [
        "allowed_mentions.parse: ['everyone'], must be []",
        "allowed_mentions.users: ['1'], must be empty",
        "allowed_mentions.roles: ['2'], must be empty",
        "allowed_mentions.replied_user: true, must be false",
    ]


def test_autocomplete_allows_25_choices_of_at_most_100_characters():
    choice = {"name": "n", "value": "v"}
    assert limits.check_autocomplete({"choices": [choice] * 25}) == []
    assert limits.check_autocomplete({"choices": [choice] * 26}) == ["choices: 26 choices, limit 25"]
    assert limits.check_autocomplete({"choices": [{"name": "n" * 101, "value": "v" * 101}]}) == [
        "choices[0].name: 101 characters, must be 1 to 100",
        "choices[0].value: 101 characters, limit 100",
    ]


def test_modal_title_over_45_characters_is_a_breach():
    text_input = {"type": 4, "custom_id": "story", "label": "Story", "style": 2}
    modal = {"custom_id": "m", "components": [{"type": 1, "components": [text_input]}]}
    assert limits.check_modal(modal | {"title": "t" * 45}) == []
    assert limits.check_modal(modal | {"title": "t" * 46}) == ["title: 46 characters, must be 1 to 45"]


def test_command_definitions_are_checked():
    good = {
        "name": "story",
        "description": "Tell a story",
        "options": [{"name": "prompt", "description": "p", "type": 3}],
    }
    assert limits.check_commands([good]) == []
    bad = {
        "name": "Story",
        "description": "d" * 101,
        "options": [
            {"name": "a", "description": "a", "type": 3},
            {"name": "b", "description": "b", "type": 3, "required": True},
        ],
    }
    assert limits.check_commands([bad]) == [
        "commands[0].name: 'Story' must be 1 to 32 lowercase letters, digits, - or _",
        "commands[0].description: 101 characters, must be 1 to 100",
        "commands[0].options[1].required: required options must come before optional ones",
    ]
