"""The bot on the remote model service (Ray Serve) when that service is down: it still starts,
answers with the offline message, privately, and recovers by itself once the service is back."""

from __future__ import annotations

from core.config import Config
from core.remote import OFFLINE
from tests.e2e.replies import PROMPT, finished, private_reply, story_started


async def test_the_bot_starts_and_answers_offline_while_the_service_is_down_then_recovers(
    driver, rig, ray_serve, reader, other_reader
):
    ray_serve.undeploy()
    try:
        rig.restart_bot()  # it starts while the model service is down
        interaction = await story_started(driver, reader, PROMPT, length=4)
        assert (await private_reply(driver, interaction["id"]))["content"] == OFFLINE
        assert (await driver.message(interaction["original_message_id"]))["deleted"]
        why = await driver.command(reader, "why", {"prompt": PROMPT})
        assert (await private_reply(driver, why["id"]))["content"] == OFFLINE
    finally:
        ray_serve.deploy(Config.model_validate(rig.config))
    # No restart: once the service is back (deploy returns when it is), the next story is written.
    interaction = await story_started(driver, other_reader, PROMPT, length=4)
    await finished(driver, interaction["original_message_id"])
